//! oxsdn's dataplane: OpenShift SDN's flow tables (`oxsdn-tables`) as eBPF programs.
//!
//! One entry file per attach point, like Cilium's `bpf/bpf_*.c`:
//! - `from_pod`: TC ingress of every pod's host-side veth (OpenShift's pod ports);
//! - `from_tun0`: TC egress of tun0 (what the node's host stack sends into the network);
//! - `from_tunnel`: TC ingress of vxlan0 (what other nodes send over the overlay);
//! - `from_underlay`: TC ingress of the node's underlay device, where most overlay
//!   frames are decapsulated before the host stack sees them (then as `from_tunnel`);
//! - `xdp_underlay`: XDP of the same device, the prefilter that drops what the pipeline
//!   would drop anyway before the kernel builds an skb.
//!
//! Each parses the frame, runs the tables from table 0 of its port, and turns the
//! tables' output into a redirect (`shared/`, as Cilium's `bpf/lib/`).
#![no_std]
#![no_main]
// BPF has atomic adds on map memory, but core has no atomic types for it.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod from_pod;
mod from_tun0;
mod from_tunnel;
mod from_underlay;
mod shared;
mod xdp_underlay;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 4] = *b"GPL\0";
