//! Multicast (OpenShift's tables 110, 111 and 120) in the dataplane. The agent keeps,
//! per VNID whose projects all enabled multicast and that has pods on this node, the
//! host veths of those pods (`MCAST_GROUPS`, `MCAST_PORTS`), and the underlay addresses
//! of the other nodes (`MCAST_NODES`). A pod's multicast is cloned to each (head-end
//! replication, as OpenShift's table 111); the loops that do it are bounded by the
//! limits here, and the agent never writes more (it warns of what it leaves out).

/// Local pods of one VNID that receive its multicast on a node; more are left out.
pub const MAX_MCAST_LOCAL_PODS: u32 = 64;
/// Other nodes a pod's multicast is replicated to; more are left out.
pub const MAX_MCAST_NODES: u32 = 128;

crate::wire! {
    /// Key of `MCAST_PORTS`: the `index`th local pod of VNID `vnid`.
    pub struct McastPort {
        pub vnid: u32,
        pub index: u32,
    }
}
