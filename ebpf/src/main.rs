//! oxsdn's dataplane: OpenShift SDN's `ovs-multitenant` flow tables as eBPF.
//!
//! One program per attach point, like Cilium's `bpf/bpf_*.c`:
//! - `from_pod`: TC ingress of every pod's host-side veth (OpenShift's pod ports);
//! - `from_tun0`: TC egress of tun0 (what the node's host stack sends into the network);
//! - `from_tunnel`: TC ingress of vxlan0 (what other nodes send over the overlay);
//! - `from_underlay`: TC ingress of the node's underlay device, where most overlay
//!   frames are decapsulated before the host stack sees them (then as `from_tunnel`).
//!
//! Each runs table 0 for their ingress and then the shared pipeline in `pipeline`, whose
//! functions are named after the Profile A table they implement.
#![no_std]
#![no_main]

mod from_pod;
mod from_tun0;
mod from_tunnel;
mod from_underlay;
mod maps;
mod output;
mod packet;
mod pipeline;
mod services;
mod stats;
mod trace;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[no_mangle]
#[link_section = "license"]
pub static LICENSE: [u8; 4] = *b"GPL\0";
