//! Table 70: IPv4 to a local pod: reg1 = its VNID, reg2 = its port, then table 80.

use crate::{frame::Ipv4, t80_isolation, Env, Output, Packet};

crate::rules! {
    table 70;
    pod IP = 3, priority 100, "ip,nw_dst={IP}" => "load:{VNID}->NXM_NX_REG1[],load:{IFINDEX}->NXM_NX_REG2[],goto_table:80";
    node NO_POD = 22, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table70<E: Env>(p: &mut Packet<E>, ip: &Ipv4) -> Output {
    let Some(pod) = p.local_pod(ip.dst) else {
        return p.drop_by(NO_POD);
    };
    let Some(reg1) = p.vnid(pod.project_slot, pod.project_id) else {
        return p.drop_by(NO_POD);
    };
    p.env.count_pod(p.slot(ip.dst), ip.dst, IP, p.frame.len);
    if t80_isolation::table80(p, ip, reg1) {
        Output::Pod { ifindex: pod.ifindex, ip: ip.dst }
    } else {
        Output::Drop
    }
}
