//! Table 80: the network plugin's policy, where a packet for a local pod is delivered
//! (to `reg2`) or dropped. `NodeConfig.mode` says which plugin decides; this is the
//! one place a mode plugs in (OpenShift's `osdnPolicy`):
//! - `ovs-multitenant`: deliver iff the source is the gateway, either VNID is 0
//!   (global), or both VNIDs are equal.
//!
//! A service's translated traffic asks again with the client's identity after table
//! 61 picked the endpoint (`after_translation`), and `translated_vni` is the VNI it
//! carries to an endpoint on another node.

use oxsdn_common::{mode, trace::REG1_SET};

use crate::{frame::Ipv4, Env, Packet};

crate::rules! {
    table 80;
    node FROM_GW = 23, priority 300, "ip,nw_src={GW}" => "output:NXM_NX_REG2[]";
    node SRC_GLOBAL = 24, priority 200, "reg0=0" => "output:NXM_NX_REG2[]";
    node DST_GLOBAL = 25, priority 200, "reg1=0" => "output:NXM_NX_REG2[]";
    node SAME_VNID = 26, priority 100, "reg0=reg1" => "output:NXM_NX_REG2[]";
    node ISOLATED = 27, priority 0, "" => "drop";
}

/// Whether a packet from reg0 may reach a destination with VNID `reg1`.
#[inline(always)]
pub fn table80<E: Env>(p: &mut Packet<E>, ip: &Ipv4, reg1: u32) -> bool {
    p.env.register(REG1_SET, reg1);
    p.reg1 = reg1;
    match p.cfg.mode {
        mode::MULTITENANT => multitenant(p, ip, reg1),
        // An unknown mode isolates like the strictest known one.
        _ => multitenant(p, ip, reg1),
    }
}

#[inline(always)]
fn multitenant<E: Env>(p: &mut Packet<E>, ip: &Ipv4, reg1: u32) -> bool {
    let rule = if ip.src == p.cfg.gateway {
        FROM_GW
    } else if p.reg0 == 0 {
        SRC_GLOBAL
    } else if reg1 == 0 {
        DST_GLOBAL
    } else if p.reg0 == reg1 {
        SAME_VNID
    } else {
        p.count(ISOLATED);
        return false;
    };
    p.count(rule);
    true
}

/// Whether a service's translated packet may go on to its endpoint, the client being
/// reg0. Multitenant mode judged it in table 60 against the service's project, and the
/// translated packet travels as OpenShift's masqueraded traffic did: as global.
#[inline(always)]
pub fn after_translation<E: Env>(_p: &mut Packet<E>) -> bool {
    true
}

/// The VNI a translated packet carries to an endpoint on another node.
#[inline(always)]
pub fn translated_vni<E: Env>(_p: &Packet<E>) -> u32 {
    0
}
