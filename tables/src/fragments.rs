//! The L4 ports of fragmented IPv4 datagrams: later fragments carry none, so the ports
//! of the first fragment are recorded for them (as conntrack's defragmentation lets
//! OVS match them). Tables 30 (service replies) and 61 (load balancing) need them.

use oxsdn_common::{FragmentKey, FragmentPorts};

use crate::{frame::Ipv4, Env, Packet};

/// The ports of `ip`, also for fragments. `None`: a later fragment whose first fragment
/// was not seen.
#[inline(always)]
pub fn ports<E: Env>(p: &Packet<E>, ip: &Ipv4) -> Option<(u16, u16)> {
    let key = FragmentKey { src: ip.src, dst: ip.dst, id: ip.id, proto: ip.proto, _pad: 0 };
    if ip.later_fragment {
        return p.env.fragment_ports(&key).map(|f| (f.sport, f.dport));
    }
    if ip.more_fragments {
        p.env.record_fragment(&key, &FragmentPorts { sport: ip.sport, dport: ip.dport });
    }
    Some((ip.sport, ip.dport))
}
