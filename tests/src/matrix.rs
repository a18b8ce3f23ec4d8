//! Reachability matrices between pods: the demo prints them, the tests compare them
//! with what the isolation rules say.

use std::{fmt::Write as _, net::Ipv4Addr};

use crate::{
    cluster::Pod,
    netns::Netns,
    probe::{ping, tcp_echo, ECHO_PORT},
};

/// Whether ping and a TCP echo got through from one pod to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    pub ping: bool,
    pub tcp: bool,
}

/// Probes every ordered pair of distinct pods, in parallel; `result[i][j]` is from
/// pod i to pod j (`None` on the diagonal).
pub fn measure(pods: &[Pod]) -> Vec<Vec<Option<Reach>>> {
    let targets: Vec<(String, Ipv4Addr)> = pods.iter().map(|p| (p.netns.name.clone(), p.ip)).collect();
    std::thread::scope(|s| {
        let handles: Vec<Vec<_>> = targets
            .iter()
            .enumerate()
            .map(|(i, (src, _))| {
                targets
                    .iter()
                    .enumerate()
                    .map(|(j, (_, dst))| {
                        let (src, dst) = (src.clone(), *dst);
                        s.spawn(move || {
                            (i != j).then(|| {
                                let ns = Netns::borrowed(&src);
                                Reach { ping: ping(&ns, dst), tcp: tcp_echo(&ns, dst, ECHO_PORT) }
                            })
                        })
                    })
                    .collect()
            })
            .collect();
        handles.into_iter().map(|row| row.into_iter().map(|h| h.join().expect("probe thread")).collect()).collect()
    })
}

/// The matrix as text: one row per source pod, `✓` reachable by ping and TCP, `✗`
/// by neither, `?` when the two disagree.
pub fn format(pods: &[Pod], m: &[Vec<Option<Reach>>]) -> String {
    let label = |p: &Pod| format!("{}/{}", p.project, p.name);
    let width = pods.iter().map(|p| label(p).len()).max().unwrap_or(0);
    let mut out = format!("{:width$}  ", "from \\ to");
    for p in pods {
        let _ = write!(out, " {:>w$}", p.name, w = p.name.len().max(3));
    }
    out.push('\n');
    for (i, p) in pods.iter().enumerate() {
        let _ = write!(out, "{:width$}  ", label(p));
        for (j, q) in pods.iter().enumerate() {
            let cell = match m[i][j] {
                None => "-",
                Some(Reach { ping: true, tcp: true }) => "✓",
                Some(Reach { ping: false, tcp: false }) => "✗",
                Some(_) => "?",
            };
            let _ = write!(out, " {:>w$}", cell, w = q.name.len().max(3));
        }
        out.push('\n');
    }
    out
}

/// Pairs whose reachability differs from `expected(from, to)`, as text.
pub fn mismatches(pods: &[Pod], m: &[Vec<Option<Reach>>], expected: impl Fn(&Pod, &Pod) -> bool) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, a) in pods.iter().enumerate() {
        for (j, b) in pods.iter().enumerate() {
            if let Some(r) = m[i][j] {
                let want = expected(a, b);
                if r.ping != want || r.tcp != want {
                    bad.push(format!(
                        "{}/{} -> {}/{}: expected {}, got {r:?}",
                        a.project,
                        a.name,
                        b.project,
                        b.name,
                        if want { "reachable" } else { "isolated" }
                    ));
                }
            }
        }
    }
    bad
}
