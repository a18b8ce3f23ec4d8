//! The generators on the model alone: no case panics, and the cases reach every kind of
//! verdict (so the differential test exercises more than drops).

use oxsdn_model::generate::{case, state, Ports};
use oxsdn_model::state::{IPPROTO_TCP, IPPROTO_UDP};
use oxsdn_model::{pipeline, Out, Verdict};
use rand::{rngs::StdRng, SeedableRng};

#[test]
fn generated_cases_reach_every_kind_of_verdict() {
    let ports = Ports { ifindexes: &[11, 12, 13, 14, 15, 16] };
    let (mut drops, mut pods, mut tun0, mut tunnel, mut any_of) = (0, 0, 0, 0, 0);
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..200 {
        let s = state(&mut rng, &ports);
        for _ in 0..100 {
            let c = case(&mut rng, &s, &ports);
            match pipeline(&s, c.ingress, &c.frame) {
                Verdict::Drop(_) => drops += 1,
                Verdict::AnyOf(_) => any_of += 1,
                Verdict::Deliver(d) => match d.out {
                    Out::Pod(_) => pods += 1,
                    Out::Tun0 => tun0 += 1,
                    Out::Tunnel { .. } => tunnel += 1,
                },
            }
        }
    }
    println!("drops {drops}, to pods {pods}, to tun0 {tun0}, to the tunnel {tunnel}, endpoint choices {any_of}");
    for count in [drops, pods, tun0, tunnel, any_of] {
        assert!(count > 50, "a kind of verdict is rare: {count}");
    }
}

/// The generated states hold tracked connections to draining endpoints of each kind:
/// TCP with the window open (kept), TCP with it ended and UDP (both choose again).
#[test]
fn generated_states_have_connections_to_draining_endpoints() {
    let ports = Ports { ifindexes: &[11, 12, 13, 14, 15, 16] };
    let (mut tcp_open, mut tcp_ended, mut udp) = (0, 0, 0);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let s = state(&mut rng, &ports);
        for c in &s.connections {
            let Some(service) = s.service_by_ip(c.service.0) else { continue };
            let Some(d) = service.draining.iter().find(|d| d.ip == c.endpoint.0) else { continue };
            match c.protocol {
                IPPROTO_TCP if s.now < d.until => tcp_open += 1,
                IPPROTO_TCP => tcp_ended += 1,
                IPPROTO_UDP => udp += 1,
                _ => {}
            }
        }
    }
    println!("connections to draining endpoints: TCP open {tcp_open}, TCP ended {tcp_ended}, UDP {udp}");
    for count in [tcp_open, tcp_ended, udp] {
        assert!(count > 20, "a kind of draining connection is rare: {count}");
    }
}
