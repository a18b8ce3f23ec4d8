//! `NodeConfig.xdp_decap`: which VXLAN from known nodes to local pods the underlay
//! device's XDP program decapsulates and redirects to the pod's veth itself, instead of
//! passing it to `from_underlay` at TC (docs/design.md, "XDP decapsulation").

/// UDP and ICMP echo (small packets: no GSO aggregate to lose).
pub const NON_TCP: u16 = 1;
/// TCP too (XDP sees each segment: the GSO aggregates TC carries are lost).
pub const TCP: u16 = 2;
