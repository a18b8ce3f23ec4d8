//! Table 40: ARP to a local pod. ARP is never VNID-isolated.

use crate::{Env, Output, Packet};

crate::rules! {
    table 40;
    pod ARP = 2, priority 100, "arp,arp_tpa={IP}" => "output:{PORT}";
    node NO_POD = 19, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table40<E: Env>(p: &mut Packet<E>, tpa: u32) -> Output {
    match p.local_pod(tpa) {
        Some(pod) => {
            p.env.count_pod(p.slot(tpa), tpa, ARP, p.frame.len);
            Output::Pod { ifindex: pod.ifindex, ip: tpa }
        }
        None => p.drop_by(NO_POD),
    }
}
