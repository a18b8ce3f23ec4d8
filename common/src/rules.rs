//! The node-wide rules of the pipeline (OpenShift SDN Profile A tables), one id each.
//! The eBPF programs count every rule a packet matches in `RULE_STATS[id]`; `dump-flows`
//! prints `RULES` with those counters. Per-pod rules are counted separately (`pod_rule`).
//!
//! Placeholders in `matches` / `actions`, filled in by userspace: `{GW}` gateway, `{L}`
//! node subnet, `{C}` cluster network, `{S}` service network, `{NODEIP}` the node's
//! address, `{VXP}` the VXLAN port.
//!
//! Ids are never reused or renumbered without bumping `LAYOUT_VERSION`.

/// A rule as `dump-flows` shows it.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub id: u32,
    pub table: u8,
    pub priority: u16,
    pub matches: &'static str,
    pub actions: &'static str,
}

macro_rules! rules {
    ($( $name:ident = $id:literal : table $table:literal, priority $prio:literal, $m:literal => $a:literal; )*) => {
        $( pub const $name: u32 = $id; )*
        /// Every node-wide rule, in `dump-flows` order (table, then descending priority).
        pub const RULES: &[Rule] = &[
            $( Rule { id: $id, table: $table, priority: $prio, matches: $m, actions: $a }, )*
        ];
    };
}

rules! {
    T0_TUN0_IP_MCAST = 0: table 0, priority 250, "ip,in_port=tun0,nw_dst=224.0.0.0/4" => "drop";
    T0_TUN0_ARP = 1: table 0, priority 200, "arp,in_port=tun0,arp_spa={GW},arp_tpa={C}" => "goto_table:30";
    T0_TUN0_IP = 2: table 0, priority 200, "ip,in_port=tun0" => "goto_table:30";
    T0_TUN0_OTHER = 3: table 0, priority 150, "in_port=tun0" => "drop";
    T0_POD_ARP = 4: table 0, priority 100, "arp" => "goto_table:20";
    T0_POD_IP = 5: table 0, priority 100, "ip" => "goto_table:20";
    T0_OTHER = 6: table 0, priority 0, "" => "drop";
    T20_SPOOFED = 7: table 20, priority 0, "" => "drop";
    T21_CONTINUE = 8: table 21, priority 0, "" => "goto_table:30";
    T30_ARP_GW = 9: table 30, priority 300, "arp,arp_tpa={GW}" => "output:tun0";
    T30_IP_GW = 10: table 30, priority 300, "ip,nw_dst={GW}" => "output:tun0";
    T30_ARP_LOCAL = 11: table 30, priority 200, "arp,arp_tpa={L}" => "goto_table:40";
    T30_IP_LOCAL = 12: table 30, priority 200, "ip,nw_dst={L}" => "goto_table:70";
    T30_ARP_CLUSTER = 13: table 30, priority 100, "arp,arp_tpa={C}" => "goto_table:50";
    T30_IP_SERVICE = 14: table 30, priority 100, "ip,nw_dst={S}" => "goto_table:60";
    T30_IP_CLUSTER = 15: table 30, priority 100, "ip,nw_dst={C}" => "goto_table:90";
    T30_IP_MCAST = 16: table 30, priority 25, "ip,nw_dst=224.0.0.0/4" => "goto_table:110";
    T30_IP_EXTERNAL = 17: table 30, priority 0, "ip" => "goto_table:100";
    T30_ARP_OTHER = 18: table 30, priority 0, "arp" => "drop";
    T40_NO_POD = 19: table 40, priority 0, "" => "drop";
    T50_NO_NODE = 20: table 50, priority 0, "" => "drop";
    T60_NO_SERVICE = 21: table 60, priority 0, "" => "drop";
    T70_NO_POD = 22: table 70, priority 0, "" => "drop";
    T80_FROM_GW = 23: table 80, priority 300, "ip,nw_src={GW}" => "output:NXM_NX_REG2[]";
    T80_SRC_GLOBAL = 24: table 80, priority 200, "reg0=0" => "output:NXM_NX_REG2[]";
    T80_DST_GLOBAL = 25: table 80, priority 200, "reg1=0" => "output:NXM_NX_REG2[]";
    T80_SAME_VNID = 26: table 80, priority 100, "reg0=reg1" => "output:NXM_NX_REG2[]";
    T80_ISOLATED = 27: table 80, priority 0, "" => "drop";
    T90_NO_NODE = 28: table 90, priority 0, "" => "drop";
    T100_EXTERNAL = 29: table 100, priority 0, "" => "goto_table:101";
    T110_MCAST = 30: table 110, priority 0, "" => "drop";
    T0_TUNNEL_ARP = 31: table 0, priority 200, "arp,in_port=vxlan0,arp_spa={C},arp_tpa={L}" => "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
    T0_TUNNEL_IP_SRC = 32: table 0, priority 200, "ip,in_port=vxlan0,nw_src={C}" => "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
    T0_TUNNEL_IP_DST = 33: table 0, priority 200, "ip,in_port=vxlan0,nw_dst={C}" => "move:NXM_NX_TUN_ID[0..31]->NXM_NX_REG0[],goto_table:10";
    T0_TUNNEL_OTHER = 34: table 0, priority 150, "in_port=vxlan0" => "drop";
    T10_UNKNOWN_NODE = 35: table 10, priority 0, "" => "drop";
    T100_VXLAN = 36: table 100, priority 300, "udp,tp_dst={VXP}" => "drop";
    T100_DNS_TCP = 37: table 100, priority 200, "tcp,nw_dst={NODEIP},tp_dst=53" => "output:tun0";
    T100_DNS_UDP = 38: table 100, priority 200, "udp,nw_dst={NODEIP},tp_dst=53" => "output:tun0";
    T101_ALLOW = 39: table 101, priority 0, "" => "output:tun0";
    T60_SRC_GLOBAL = 40: table 60, priority 200, "reg0=0" => "goto_table:61";
    T30_SERVICE_REPLY = 41: table 30, priority 400, "ip,ct_state=+rpl" => "ct(nat),goto_table:70";
    T61_ESTABLISHED = 42: table 61, priority 200, "ct_state=+est" => "ct(nat),output:backend";
    T61_NEW = 43: table 61, priority 100, "ct_state=+new" => "ct(commit,nat(dst=random_endpoint)),output:backend";
    T61_UNKNOWN_FRAGMENT = 44: table 61, priority 50, "ip,nw_frag=later" => "drop";
    T61_NO_ENDPOINT = 45: table 61, priority 0, "" => "drop";
    T61_DRAINING = 46: table 61, priority 150, "tcp,ct_state=+est,endpoint=draining" => "ct(nat),output:backend";
}

/// Size of `RULE_STATS`: room for the rules later tables add without resizing the map.
pub const MAX_RULES: u32 = 128;
