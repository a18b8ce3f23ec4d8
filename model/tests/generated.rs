//! The generators on the model alone: no case panics, and the cases reach every kind of
//! verdict (so the differential test exercises more than drops).

use oxsdn_model::generate::{case, state, Ports};
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

