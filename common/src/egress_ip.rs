//! Egress IPs in the dataplane (table 100): per VNID of a project with egress IPs, the
//! addresses it may leave with that live nodes hold, as their holders' underlay
//! addresses. A packet of the project to the outside takes one of them by the hash of
//! its flow: held by this node, the packet gets that address's mark and goes to the
//! host, whose SNAT rule for the mark gives it the address; held by another node, it
//! goes there over VXLAN (VNI = VNID). No candidate: dropped.

/// Egress IPs of a project the dataplane balances over.
pub const MAX_EGRESS_IPS: u32 = 8;
/// Projects with egress IPs a node knows at once.
pub const MAX_EGRESS_IP_PROJECTS: u32 = 16384;
/// The skb mark of the egress IP a node holds in its slot `i` is `EGRESS_MARK_BASE + i`
/// (the host's SNAT rules match it). High bits no other user of marks on a node
/// (kube-proxy's 0x4000/0x8000, OpenShift's VNID marks) sets.
pub const EGRESS_MARK_BASE: u32 = 0x0e9a_0000;
/// Slots of egress IPs a node can hold at once (the marks' range).
pub const MAX_HELD_EGRESS_IPS: u32 = 4096;

crate::wire! {
    /// Value of `EGRESS_IPS`, keyed by VNID.
    pub struct EgressIpEntry {
        /// How many of `holders` and `marks` are in use (0: no live node holds any of the
        /// project's egress IPs: its external traffic is dropped).
        pub count: u32,
        /// Candidate i's holder: a node's underlay address (map form).
        pub holders: [u32; MAX_EGRESS_IPS as usize],
        /// Candidate i's mark if this node holds it, else 0.
        pub marks: [u32; MAX_EGRESS_IPS as usize],
        /// tun0's MAC (first 6 bytes): a frame from another node, still addressed to
        /// that node's gateway, must be addressed to this tun0 for the host to route it
        /// (OpenShift's flow sets `eth_dst` so too).
        pub tun0_mac: [u8; 8],
    }
}

/// The candidate a flow takes: a hash of its addresses and ports, of `count` candidates
/// (0 if there are none).
#[inline(always)]
pub fn pick(src: u32, dst: u32, ports: u32, proto: u8, count: u32) -> u32 {
    // A multiply-xorshift mix (as in splitmix): cheap, and every input bit reaches the
    // bits kept.
    let mut h = (src as u64) << 32 | dst as u64;
    h ^= (ports as u64) << 8 | proto as u64;
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // Lemire's multiply-shift instead of a modulo: below `count` by construction, which
    // the verifier can follow (it cannot bound a modulo's result).
    ((h as u32 as u64 * count as u64) >> 32) as u32
}
