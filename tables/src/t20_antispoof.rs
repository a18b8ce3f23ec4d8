//! Table 20: a pod may only send ARP and IPv4 as itself (its address, and for ARP the
//! low four bytes of its MAC), on its own port; loads its VNID into reg0 (0 in subnet
//! mode, where every pod is global) and, in networkpolicy mode, notes its identity.

use oxsdn_common::mode;

use crate::{frame::L3, t21_post_source, Env, Output, Packet};

crate::rules! {
    table 20;
    pod ARP = 0, priority 100, "arp,in_port={PORT},arp_spa={IP},arp_sha={MAC}" => "load:{VNID}->NXM_NX_REG0[],goto_table:21";
    pod IP = 1, priority 100, "ip,in_port={PORT},nw_src={IP}" => "load:{VNID}->NXM_NX_REG0[],goto_table:21";
    node SPOOFED = 7, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table20<E: Env>(p: &mut Packet<E>, in_port: u32) -> Output {
    // The sender's slot comes from the address it claims; the entry there says whether
    // that pod sits behind this port.
    let (a, ip) = (&p.frame.arp, &p.frame.ipv4);
    let (claimed, rule) = match p.frame.l3 {
        L3::Arp if a.sha_low == a.spa => (a.spa, ARP),
        L3::Ipv4 => (ip.src, IP),
        _ => return p.drop_by(SPOOFED),
    };
    let Some(pod) = p.local_pod(claimed).filter(|pod| pod.ifindex == in_port) else {
        return p.drop_by(SPOOFED);
    };
    let Some(vnid) = p.vnid(pod.project_slot, pod.project_id) else {
        return p.drop_by(SPOOFED);
    };
    let slot = p.slot(claimed);
    p.env.count_pod(slot, claimed, rule, p.frame.len);
    // Subnet mode: every pod is global (OpenShift's ovs-subnet loads VNID 0).
    p.reg0 = if p.cfg.mode == mode::SUBNET { 0 } else { vnid };
    p.owner = pod.project_slot;
    if p.cfg.mode == mode::NETWORKPOLICY {
        p.src_identity = p.env.pod_identity(slot);
    }
    let maybe_reply = p.env.endpoint_pod(slot) == claimed;
    t21_post_source::table21(p, maybe_reply)
}
