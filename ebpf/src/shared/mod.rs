//! What the entry programs share (Cilium's `bpf/lib/`): the maps, the tables'
//! environment on them, frame parsing, output to the kernel, VXLAN encapsulation, the
//! monitor's events, and trace mode.

pub mod bandwidth;
pub mod csum;
pub mod encap;
pub mod env;
pub mod maps;
pub mod monitor;
pub mod multicast;
pub mod output;
pub mod parse;
pub mod scratch;
pub mod trace_mode;
