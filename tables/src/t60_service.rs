//! Table 60: service isolation (Profile A). Global sources reach every service; others
//! only the declared ports (fragments after the first: the ClusterIP alone) of services
//! whose project they may talk to: reg1 = the service project's VNID, then table 80.

use oxsdn_common::mode;

use crate::{frame::Ipv4, t61_load_balance, t80_isolation, Env, Output, Packet};

crate::rules! {
    table 60;
    node SRC_GLOBAL = 40, priority 200, "reg0=0" => "goto_table:61";
    /// subnet and networkpolicy modes: services are not isolated by project (a service's
    /// endpoint judges its translated traffic by its policies).
    node NO_ISOLATION = 62, priority 250, "mode=subnet|networkpolicy" => "goto_table:61";
    service PORT = 0, priority 100, "{PROTO},nw_dst={IP},tp_dst={PORT}" => "load:{VNID}->NXM_NX_REG1[],load:0x2->NXM_NX_REG2[],goto_table:80";
    service LATER_FRAGMENTS = 1, priority 100, "ip,nw_dst={IP},nw_frag=later" => "load:{VNID}->NXM_NX_REG1[],load:0x2->NXM_NX_REG2[],goto_table:80";
    node NO_SERVICE = 21, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table60<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Output {
    if p.cfg.mode != mode::MULTITENANT {
        p.count(NO_ISOLATION);
        return t61_load_balance::table61(p, ip, None);
    }
    if p.reg0 == 0 {
        p.count(SRC_GLOBAL);
        return t61_load_balance::table61(p, ip, None);
    }
    // The declared port found here is table 61's too (a later fragment's port is not
    // in its header: table 61 finds it by the recorded ports).
    let mut port = None;
    let found = if ip.later_fragment {
        p.env.service_ip(ip.dst).map(|s| (s.project_slot, s.project_id, s.slot, LATER_FRAGMENTS))
    } else {
        let key = oxsdn_common::ServiceKey { ip: ip.dst, port: ip.dport, proto: ip.proto, _pad: 0 };
        port = p.env.service_port(&key);
        port.map(|s| (s.project_slot, s.project_id, s.slot, PORT))
    };
    let Some((project_slot, project_id, slot, rule)) = found else {
        return p.drop_by(NO_SERVICE);
    };
    let Some(reg1) = p.vnid(project_slot, project_id) else {
        return p.drop_by(NO_SERVICE);
    };
    p.env.count_service(slot, rule, p.frame.len);
    if !t80_isolation::service_isolation(p, ip, reg1) {
        return Output::Drop;
    }
    t61_load_balance::table61(p, ip, port)
}
