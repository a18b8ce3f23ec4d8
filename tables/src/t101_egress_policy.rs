//! Table 101: the egress firewall (OpenShift's EgressNetworkPolicy). Traffic leaving the
//! cluster from a project whose policy has rules meets them in order, first match wins
//! (`oxsdn_common::egress`: one LPM lookup by VNID and destination); what no rule
//! matches goes to the host, which routes it out with the node's address.

use oxsdn_common::egress::{EGRESS_ALLOW, EGRESS_INVALID};

use crate::{frame::Ipv4, Env, Output, Packet};

crate::rules! {
    table 101;
    /// The project's VNID is shared by joined projects and one of them has a policy.
    egress INVALID = 90, priority 1, "ip,reg0={VNID}" => "drop";
    /// Rule i of n of the project's policy (priority n - i), an Allow.
    egress ALLOW_CIDR = 91, priority 0, "ip,reg0={VNID},nw_dst={CIDR}" => "output:tun0";
    /// Rule i of n of the project's policy (priority n - i), a Deny.
    egress DENY_CIDR = 92, priority 0, "ip,reg0={VNID},nw_dst={CIDR}" => "drop";
    node ALLOW = 39, priority 0, "" => "output:tun0";
}

#[inline(always)]
pub fn table101<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Output {
    if p.reg0 != 0 {
        if let Some(verdict) = p.env.egress_verdict(p.reg0, ip.dst) {
            let rule = match verdict.action {
                EGRESS_ALLOW => ALLOW_CIDR,
                EGRESS_INVALID => INVALID,
                _ => DENY_CIDR,
            };
            if rule == ALLOW_CIDR {
                p.env.count_egress(verdict.slot, rule, p.frame.len);
                return Output::Tun0;
            }
            p.count_egress_drop(verdict.slot, rule);
            return Output::Drop;
        }
    }
    p.count(ALLOW);
    Output::Tun0
}
