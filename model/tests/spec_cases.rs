//! The worked traffic cases of the spec (§5, Profile A) and the hostile ones of
//! docs/threat-model.md, on the model alone.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use oxsdn_model::packet::pod_mac;
use oxsdn_model::state::*;
use oxsdn_model::{pipeline, Delivery, Ingress, Out, Verdict};

const POD_A: u32 = 101; // project 1, VNID 10
const POD_B: u32 = 102; // project 1, VNID 10
const POD_C: u32 = 103; // project 2, VNID 11
const POD_DEFAULT: u32 = 104; // project 3, VNID 0
const NODE2: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Node 1 owns 10.128.0.0/23; node 2 (192.168.1.2) owns 10.128.2.0/23.
fn state() -> State {
    State {
        mode: Mode::Multitenant,
        policy: Default::default(),
        node: Node {
            cluster: Net::new(ip("10.128.0.0"), 14),
            local: Net::new(ip("10.128.0.0"), 23),
            service: Net::new(ip("172.30.0.0"), 16),
            node_ip: ip("192.168.1.1"),
            vxlan_port: 4789,
        },
        pods: vec![
            Pod { ip: ip("10.128.0.2"), ifindex: POD_A, project: 1 },
            Pod { ip: ip("10.128.0.3"), ifindex: POD_B, project: 1 },
            Pod { ip: ip("10.128.0.4"), ifindex: POD_C, project: 2 },
            Pod { ip: ip("10.128.0.5"), ifindex: POD_DEFAULT, project: 3 },
        ],
        projects: BTreeMap::from([(1, 10), (2, 11), (3, 0)]),
        remote_nodes: vec![RemoteNode { subnet: Net::new(ip("10.128.2.0"), 23), node_ip: NODE2 }],
        services: vec![
            Service {
                cluster_ip: ip("172.30.0.10"),
                project: 1,
                ports: vec![ServicePort { port: 80, protocol: IPPROTO_TCP, target_port: 8080 }],
                endpoints: vec![ip("10.128.0.3")],
                draining: vec![],
            },
            Service {
                cluster_ip: ip("172.30.0.11"),
                project: 2,
                ports: vec![ServicePort { port: 80, protocol: IPPROTO_TCP, target_port: 8080 }],
                endpoints: vec![ip("10.128.0.4")],
                draining: vec![],
            },
        ],
        connections: vec![],
        fragments: vec![],
        now: 1 << 40,
    }
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(pod_mac(ip(src)), pod_mac(ip(dst)))
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .tcp(sport, dport, 1, 1000)
        .write(&mut f, b"data")
        .unwrap();
    f
}

fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(pod_mac(ip(src)), pod_mac(ip(dst)))
        .ipv4(ip(src).octets(), ip(dst).octets(), 64)
        .udp(sport, dport)
        .write(&mut f, b"data")
        .unwrap();
    f
}

fn arp(sender_mac: [u8; 6], sender: &str, target: &str) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&ip(sender).octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip(target).octets());
    f
}

fn unchanged(out: Out, frame: &[u8]) -> Verdict {
    Verdict::Deliver(Delivery { out, frame: frame.to_vec() })
}

fn dropped(v: &Verdict) -> bool {
    matches!(v, Verdict::Drop(_))
}

#[test]
fn case1_same_project_same_node_delivered() {
    let f = tcp("10.128.0.2", "10.128.0.3", 1000, 80);
    assert_eq!(pipeline(&state(), Ingress::Pod(POD_A), &f), unchanged(Out::Pod(POD_B), &f));
}

#[test]
fn case2_other_project_dropped_at_table80() {
    let f = tcp("10.128.0.2", "10.128.0.4", 1000, 80);
    assert_eq!(pipeline(&state(), Ingress::Pod(POD_A), &f), Verdict::Drop("T80 isolated"));
}

#[test]
fn case3_default_project_both_ways() {
    let s = state();
    let to = tcp("10.128.0.2", "10.128.0.5", 1000, 80);
    assert_eq!(pipeline(&s, Ingress::Pod(POD_A), &to), unchanged(Out::Pod(POD_DEFAULT), &to));
    let back = tcp("10.128.0.5", "10.128.0.4", 80, 1000);
    assert_eq!(pipeline(&s, Ingress::Pod(POD_DEFAULT), &back), unchanged(Out::Pod(POD_C), &back));
}

#[test]
fn case4_remote_pod_over_vxlan_with_source_vnid_and_isolated_at_the_receiver() {
    let s = state();
    let f = tcp("10.128.0.2", "10.128.2.9", 1000, 80);
    assert_eq!(pipeline(&s, Ingress::Pod(POD_A), &f), unchanged(Out::Tunnel { node_ip: NODE2, vni: 10 }, &f));
    let back = tcp("10.128.2.9", "10.128.0.2", 80, 1000);
    assert_eq!(pipeline(&s, Ingress::Tunnel { src: NODE2, vni: 10 }, &back), unchanged(Out::Pod(POD_A), &back));
    assert!(dropped(&pipeline(&s, Ingress::Tunnel { src: NODE2, vni: 11 }, &back)));
    // VNI 0 (the remote node's host, or a service's translated traffic) is global.
    assert_eq!(pipeline(&s, Ingress::Tunnel { src: NODE2, vni: 0 }, &back), unchanged(Out::Pod(POD_A), &back));
}

#[test]
fn case5_arp_for_a_remote_pod_is_tunnelled_and_not_isolated() {
    let s = state();
    let f = arp(pod_mac(ip("10.128.0.2")), "10.128.0.2", "10.128.2.9");
    assert_eq!(pipeline(&s, Ingress::Pod(POD_A), &f), unchanged(Out::Tunnel { node_ip: NODE2, vni: 10 }, &f));
    let remote = arp(pod_mac(ip("10.128.2.9")), "10.128.2.9", "10.128.0.4");
    assert_eq!(pipeline(&s, Ingress::Tunnel { src: NODE2, vni: 10 }, &remote), unchanged(Out::Pod(POD_C), &remote));
}

#[test]
fn case6_service_of_the_same_project_translated_to_its_endpoint() {
    let f = tcp("10.128.0.2", "172.30.0.10", 40000, 80);
    let Verdict::Deliver(d) = pipeline(&state(), Ingress::Pod(POD_A), &f) else { panic!("not delivered") };
    assert_eq!(d.out, Out::Pod(POD_B));
    assert_eq!(d.frame, {
        let mut e = tcp("10.128.0.2", "10.128.0.3", 40000, 8080);
        e[6..12].copy_from_slice(&f[6..12]);
        e
    });
}

#[test]
fn case7_8_service_of_another_project_or_undeclared_port_dropped() {
    let s = state();
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &tcp("10.128.0.2", "172.30.0.11", 40000, 80))));
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &tcp("10.128.0.2", "172.30.0.10", 40000, 81))));
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &udp("10.128.0.2", "172.30.0.10", 40000, 80))));
}

#[test]
fn case9_node_reaches_every_pod() {
    let s = state();
    let f = tcp("10.128.0.1", "10.128.0.4", 1000, 80);
    assert_eq!(pipeline(&s, Ingress::Tun0, &f), unchanged(Out::Pod(POD_C), &f));
    let remote = tcp("10.128.0.1", "10.128.2.9", 1000, 80);
    assert_eq!(pipeline(&s, Ingress::Tun0, &remote), unchanged(Out::Tunnel { node_ip: NODE2, vni: 0 }, &remote));
}

#[test]
fn case10_11_12_18_gateway_outside_dns_and_broadcast_go_to_tun0() {
    let s = state();
    for f in [
        tcp("10.128.0.2", "10.128.0.1", 1000, 22),
        tcp("10.128.0.2", "8.8.8.8", 1000, 443),
        udp("10.128.0.2", "192.168.1.1", 1000, 53),
        udp("10.128.0.2", "255.255.255.255", 68, 67),
    ] {
        assert_eq!(pipeline(&s, Ingress::Pod(POD_A), &f), unchanged(Out::Tun0, &f));
    }
}

#[test]
fn case19_20_21_subnet_broadcast_ipv6_and_spoofing_dropped() {
    let s = state();
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &tcp("10.128.0.2", "10.128.1.255", 1, 2))));
    let mut v6 = tcp("10.128.0.2", "10.128.0.3", 1, 2);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &v6)));
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &tcp("10.128.0.3", "10.128.0.5", 1, 2))));
    // ARP with another pod's IP, or its own IP with someone else's MAC
    let poison = arp(pod_mac(ip("10.128.0.3")), "10.128.0.3", "10.128.0.1");
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &poison)));
    let foreign_mac = arp(pod_mac(ip("10.128.0.3")), "10.128.0.2", "10.128.0.1");
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &foreign_mac)));
    let own = arp(pod_mac(ip("10.128.0.2")), "10.128.0.2", "10.128.0.1");
    assert_eq!(pipeline(&s, Ingress::Pod(POD_A), &own), unchanged(Out::Tun0, &own));
}

#[test]
fn vxlan_from_pods_to_the_outside_and_from_unknown_nodes_dropped() {
    let s = state();
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &udp("10.128.0.2", "192.168.1.7", 1, 4789))));
    let f = tcp("10.128.2.9", "10.128.0.2", 80, 1000);
    assert!(dropped(&pipeline(&s, Ingress::Tunnel { src: ip("192.168.1.9"), vni: 10 }, &f)));
}

#[test]
fn a_pod_sending_to_itself_is_not_sent_back_out_of_its_port() {
    let f = tcp("10.128.0.2", "10.128.0.2", 1, 2);
    assert_eq!(pipeline(&state(), Ingress::Pod(POD_A), &f), Verdict::Drop("output to the ingress port"));
}

#[test]
fn hairpin_and_reply_translation() {
    let mut s = state();
    // Pod B is its own service's endpoint: it sees the gateway as the client.
    let f = tcp("10.128.0.3", "172.30.0.10", 40000, 80);
    let Verdict::Deliver(d) = pipeline(&s, Ingress::Pod(POD_B), &f) else { panic!("not delivered") };
    assert_eq!(d.out, Out::Pod(POD_B));
    assert_eq!(&d.frame[ETH_IP_SRC..ETH_IP_SRC + 8], &[10, 128, 0, 1, 10, 128, 0, 3]);
    s.connections.push(Connection {
        protocol: IPPROTO_TCP,
        client: (ip("10.128.0.3"), 40000),
        service: (ip("172.30.0.10"), 80),
        endpoint: (ip("10.128.0.3"), 8080),
    });
    let reply = tcp("10.128.0.3", "10.128.0.1", 8080, 40000);
    let Verdict::Deliver(d) = pipeline(&s, Ingress::Pod(POD_B), &reply) else { panic!("not delivered") };
    assert_eq!(d.out, Out::Pod(POD_B));
    assert_eq!(&d.frame[ETH_IP_SRC..ETH_IP_SRC + 8], &[172, 30, 0, 10, 10, 128, 0, 3]);
}

const ETH_IP_SRC: usize = 14 + 12;

#[test]
fn a_reply_to_a_client_outside_the_cluster_goes_to_the_host_and_outside_endpoints_are_refused() {
    let mut s = state();
    s.connections.push(Connection {
        protocol: IPPROTO_TCP,
        client: (ip("192.0.2.10"), 40000),
        service: (ip("172.30.0.10"), 80),
        endpoint: (ip("10.128.0.3"), 8080),
    });
    let reply = tcp("10.128.0.3", "192.0.2.10", 8080, 40000);
    let Verdict::Deliver(d) = pipeline(&s, Ingress::Pod(POD_B), &reply) else { panic!("not delivered") };
    assert_eq!(d.out, Out::Tun0);
    assert_eq!(&d.frame[ETH_IP_SRC..ETH_IP_SRC + 8], &[172, 30, 0, 10, 192, 0, 2, 10]);
    s.services[0].endpoints = vec![ip("192.168.1.1")];
    let f = tcp("10.128.0.2", "172.30.0.10", 40000, 80);
    assert!(dropped(&pipeline(&s, Ingress::Pod(POD_A), &f)));
}

/// docs/design.md, "Services": an endpoint that left its service (here pod C, local)
/// keeps its tracked TCP connections until its drain window ends; UDP flows and new
/// connections go to the endpoints listed; its replies still get the service address.
#[test]
fn a_draining_endpoint_keeps_tcp_connections_until_its_window_ends() {
    let mut s = state();
    s.services[0].ports.push(ServicePort { port: 80, protocol: IPPROTO_UDP, target_port: 8080 });
    s.services[0].draining = vec![Draining { ip: ip("10.128.0.4"), until: s.now + 1 }];
    for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
        s.connections.push(Connection {
            protocol,
            client: (ip("10.128.0.2"), 40000),
            service: (ip("172.30.0.10"), 80),
            endpoint: (ip("10.128.0.4"), 8080),
        });
    }
    let endpoint_of = |s: &State, frame: &[u8]| match pipeline(s, Ingress::Pod(POD_A), frame) {
        Verdict::Deliver(d) => d.out,
        other => panic!("not delivered to one endpoint: {other:?}"),
    };
    let tcp_packet = tcp("10.128.0.2", "172.30.0.10", 40000, 80);
    let udp_packet = udp("10.128.0.2", "172.30.0.10", 40000, 80);
    assert_eq!(endpoint_of(&s, &tcp_packet), Out::Pod(POD_C), "a TCP connection left its draining endpoint");
    assert_eq!(endpoint_of(&s, &udp_packet), Out::Pod(POD_B), "a UDP flow stayed on a removed endpoint");
    assert_eq!(
        endpoint_of(&s, &tcp("10.128.0.2", "172.30.0.10", 40001, 80)),
        Out::Pod(POD_B),
        "a new connection went to a removed endpoint"
    );
    let reply = tcp("10.128.0.4", "10.128.0.2", 8080, 40000);
    let Verdict::Deliver(d) = pipeline(&s, Ingress::Pod(POD_C), &reply) else { panic!("reply not delivered") };
    assert_eq!((d.out, &d.frame[ETH_IP_SRC..ETH_IP_SRC + 8]), (Out::Pod(POD_A), &[172, 30, 0, 10, 10, 128, 0, 2][..]));
    // The window ends: the connection chooses again, like any.
    s.now += 1;
    assert_eq!(endpoint_of(&s, &tcp_packet), Out::Pod(POD_B), "a TCP connection kept an endpoint whose window ended");
    // Listed again, it serves again.
    s.services[0].draining.clear();
    s.services[0].endpoints.push(ip("10.128.0.4"));
    assert_eq!(endpoint_of(&s, &tcp_packet), Out::Pod(POD_C));
}
