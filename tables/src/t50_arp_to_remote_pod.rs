//! Table 50: ARP for a pod on another node travels to that node (pods resolve remote
//! pods directly; ARP is not isolated), with the source VNID as VNI.

use crate::{t90_to_remote_pod::to_node_of, Env, Output, Packet};

crate::rules! {
    table 50;
    remote_node ARP = 1, priority 100, "arp,arp_tpa={SUBNET}" => "move:NXM_NX_REG0[]->NXM_NX_TUN_ID[0..31],set_field:{NODE_IP}->tun_dst,output:vxlan0";
    node NO_NODE = 20, priority 0, "" => "drop";
}

#[inline(always)]
pub fn table50<E: Env>(p: &mut Packet<E>, tpa: u32) -> Output {
    to_node_of(p, tpa, ARP, NO_NODE)
}
