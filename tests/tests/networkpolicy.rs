//! NetworkPolicy end to end: the upstream Kubernetes e2e scenarios
//! (`test/e2e/network/netpol/network_policy.go`) through the real agent, CNI plugin and
//! `oxsdnctl apply -f` on two nodes (`oxsdn_tests::netpol`), each checked against its
//! truth table on one node and across nodes.

use std::time::Instant;

use anyhow::Result;
use oxsdn_tests::netpol::{ns, pod, tcp, udp, NetpolCluster, PodId, Probe, Reachability, ANY};

const XA: PodId = PodId { ns: "x", pod: "a" };
const XB: PodId = PodId { ns: "x", pod: "b" };

/// A NetworkPolicy manifest; `spec` in YAML flow style.
fn policy(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n---\n"
    )
}

/// Everyone reaches everyone (no policy).
fn all_allowed() -> Reachability {
    Reachability::new(true)
}

/// Applies `manifests`, waits until `probes` hold, deletes them and waits until all is
/// open again; prints how long enforcing took.
fn scenario(np: &NetpolCluster, name: &str, manifests: &str, probes: &[Probe]) -> Result<()> {
    let start = Instant::now();
    np.apply(manifests)?;
    let enforced = np.check(name, probes)?;
    np.delete(manifests)?;
    let opened = np.check(&format!("{name}, deleted"), &[tcp(80, &all_allowed())])?;
    eprintln!("{name}: enforced after {enforced:?}, open again after {opened:?}, {:?} in all", start.elapsed());
    Ok(())
}

const POD_A: &str = "{matchLabels: {pod: a}}";

#[test]
fn ingress_selectors() -> Result<()> {
    let np = NetpolCluster::new(&[])?;
    np.check("no policy", &[tcp(80, &all_allowed()), udp(81, &all_allowed())])?;

    let deny_x = all_allowed().expect(ANY, ns("x"), false);
    scenario(
        &np,
        "default-deny-ingress",
        &policy("deny-ingress", "x", "{podSelector: {}, policyTypes: [Ingress]}"),
        &[tcp(80, &deny_x), udp(81, &deny_x)],
    )?;
    scenario(
        &np,
        "allow-all adds up with default-deny-ingress",
        &(policy("deny-ingress", "x", "{podSelector: {}, policyTypes: [Ingress]}")
            + &policy("allow-all", "x", "{podSelector: {}, ingress: [{}]}")),
        &[tcp(80, &all_allowed())],
    )?;

    let only_from_xb = all_allowed().expect(ANY, pod("x", "a"), false).expect(pod("x", "b"), pod("x", "a"), true);
    scenario(
        &np,
        "podSelector matchLabels",
        &policy("allow-b", "x", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}")),
        &[tcp(80, &only_from_xb)],
    )?;
    scenario(
        &np,
        "podSelector matchExpressions In",
        &policy(
            "allow-b",
            "x",
            &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b]}}]}}}}]}}]}}"),
        ),
        &[tcp(80, &only_from_xb)],
    )?;

    let only_from_y = all_allowed().expect(ANY, pod("x", "a"), false).expect(ns("y"), pod("x", "a"), true);
    for (name, selector) in [
        ("namespaceSelector matchLabels", "{matchLabels: {ns: y}}"),
        ("namespaceSelector matchExpressions In", "{matchExpressions: [{key: ns, operator: In, values: [y]}]}"),
        ("namespaceSelector on the default label", "{matchLabels: {kubernetes.io/metadata.name: y}}"),
    ] {
        let spec = format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {selector}}}]}}]}}");
        scenario(&np, name, &policy("allow-y", "x", &spec), &[tcp(80, &only_from_y)])?;
    }
    let not_from_x = all_allowed().expect(ns("x"), pod("x", "a"), false);
    scenario(
        &np,
        "namespaceSelector matchExpressions NotIn",
        &policy(
            "allow-not-x",
            "x",
            &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: NotIn, values: [x]}}]}}}}]}}]}}"),
        ),
        &[tcp(80, &not_from_x)],
    )?;

    // Exists and DoesNotExist on a label only namespace y has.
    np.cluster.oxsdnctl(&["label", "namespace", "y", "team=blue"])?;
    for (name, operator, expected) in [
        ("namespaceSelector matchExpressions Exists", "Exists", only_from_y.clone()),
        (
            "namespaceSelector matchExpressions DoesNotExist",
            "DoesNotExist",
            all_allowed().expect(ns("y"), pod("x", "a"), false),
        ),
    ] {
        let spec = format!(
            "{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: team, operator: {operator}}}]}}}}]}}]}}"
        );
        scenario(&np, name, &policy("by-team", "x", &spec), &[tcp(80, &expected)])?;
    }
    np.cluster.oxsdnctl(&["label", "namespace", "y", "team-"])?;

    scenario(
        &np,
        "podSelector OR namespaceSelector (two peers)",
        &policy(
            "or",
            "x",
            &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {{matchLabels: {{pod: b}}}}}}, {{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}]}}"),
        ),
        &[tcp(80, &only_from_y.clone().expect(pod("x", "b"), pod("x", "a"), true))],
    )?;
    let and = all_allowed()
        .expect(ANY, pod("x", "a"), false)
        .expect(pod("y", "b"), pod("x", "a"), true)
        .expect(pod("y", "c"), pod("x", "a"), true)
        .expect(pod("z", "b"), pod("x", "a"), true)
        .expect(pod("z", "c"), pod("x", "a"), true);
    scenario(
        &np,
        "podSelector AND namespaceSelector (one peer)",
        &policy(
            "and",
            "x",
            &format!(
                "{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: NotIn, values: [x]}}]}}, \
                 podSelector: {{matchExpressions: [{{key: pod, operator: In, values: [b, c]}}]}}}}]}}]}}"
            ),
        ),
        &[tcp(80, &and)],
    )?;
    scenario(
        &np,
        "ingress on port 81 from namespace y",
        &policy(
            "port-81",
            "x",
            &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 81}}]}}]}}"),
        ),
        &[tcp(80, &all_allowed().expect(ANY, pod("x", "a"), false)), tcp(81, &only_from_y)],
    )?;
    Ok(())
}

#[test]
fn egress_and_ip_blocks() -> Result<()> {
    let np = NetpolCluster::new(&[])?;
    let x_shut = all_allowed().expect(ANY, ns("x"), false).expect(ns("x"), ANY, false);
    scenario(
        &np,
        "default-deny-all",
        &policy("deny-all", "x", "{podSelector: {}, policyTypes: [Ingress, Egress]}"),
        &[tcp(80, &x_shut), udp(80, &x_shut)],
    )?;
    scenario(
        &np,
        "default-deny-egress",
        &policy("deny-egress", "x", "{podSelector: {}, policyTypes: [Egress]}"),
        &[tcp(80, &all_allowed().expect(ns("x"), ANY, false))],
    )?;
    let a_to_xb = all_allowed().expect(pod("x", "a"), ANY, false).expect(pod("x", "a"), pod("x", "b"), true);
    scenario(
        &np,
        "egress only, to a podSelector",
        &policy(
            "a-to-b",
            "x",
            &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"),
        ),
        &[tcp(80, &a_to_xb), udp(81, &a_to_xb)],
    )?;
    scenario(
        &np,
        "egress denied on the client even if the server allows it",
        &(policy("deny-egress-a", "x", &format!("{{podSelector: {POD_A}, policyTypes: [Egress]}}"))
            + &policy("allow-all", "y", "{podSelector: {}, ingress: [{}]}")),
        &[tcp(80, &all_allowed().expect(pod("x", "a"), ANY, false))],
    )?;
    scenario(
        &np,
        "egress to a pod of another namespace (pod AND namespace selector)",
        &policy(
            "a-to-yb",
            "x",
            &format!(
                "{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}, podSelector: {{matchLabels: {{pod: b}}}}}}]}}]}}"
            ),
        ),
        &[tcp(80, &all_allowed().expect(pod("x", "a"), ANY, false).expect(pod("x", "a"), pod("y", "b"), true))],
    )?;
    let both = all_allowed()
        .expect(ANY, pod("x", "a"), false)
        .expect(ns("y"), pod("x", "a"), true)
        .expect(pod("x", "a"), ANY, false)
        .expect(pod("x", "a"), ns("z"), true);
    scenario(
        &np,
        "ingress and egress together",
        &policy(
            "both",
            "x",
            &format!(
                "{{podSelector: {POD_A}, policyTypes: [Ingress, Egress], ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}]}}], \
                 egress: [{{to: [{{namespaceSelector: {{matchLabels: {{ns: z}}}}}}]}}]}}"
            ),
        ),
        &[tcp(80, &both), udp(81, &both)],
    )?;

    // ipBlocks on pods' addresses: the cluster network, except x/b's.
    let except_xb = np.cidrs(XB).join(", ");
    let no_xb = all_allowed().expect(pod("x", "a"), pod("x", "b"), false);
    let cidr_except = |name: &str| {
        policy(
            name,
            "x",
            &format!(
                "{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{{ipBlock: {{cidr: 10.128.0.0/14, except: [{except_xb}]}}}}]}}]}}"
            ),
        )
    };
    scenario(&np, "egress to an ipBlock with except", &cidr_except("cidr-except"), &[tcp(80, &no_xb)])?;
    let xb_blocks: Vec<String> = np.cidrs(XB).iter().map(|c| format!("{{ipBlock: {{cidr: {c}}}}}")).collect();
    scenario(
        &np,
        "an address in both an ipBlock's except and another policy's cidr is allowed",
        &(cidr_except("cidr-except")
            + &policy(
                "cidr-xb",
                "x",
                &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{to: [{}]}}]}}", xb_blocks.join(", ")),
            )),
        &[tcp(80, &all_allowed())],
    )?;
    let yb_blocks: Vec<String> =
        np.cidrs(PodId { ns: "y", pod: "b" }).iter().map(|c| format!("{{ipBlock: {{cidr: {c}}}}}")).collect();
    scenario(
        &np,
        "ingress from an ipBlock",
        &policy("from-yb", "x", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{}]}}]}}", yb_blocks.join(", "))),
        &[tcp(80, &all_allowed().expect(ANY, pod("x", "a"), false).expect(pod("y", "b"), pod("x", "a"), true))],
    )?;
    Ok(())
}

#[test]
fn ports_and_protocols() -> Result<()> {
    let np = NetpolCluster::new(&[])?;
    let a_shut = all_allowed().expect(ANY, pod("x", "a"), false);
    let ingress_ports = |name: &str, ports: &str| {
        policy(name, "x", &format!("{{podSelector: {POD_A}, ingress: [{{ports: [{ports}]}}]}}"))
    };
    scenario(
        &np,
        "ingress on a named port",
        &ingress_ports("named", "{port: serve-81-tcp}"),
        &[tcp(81, &all_allowed()), tcp(80, &a_shut), udp(81, &a_shut)],
    )?;
    scenario(
        &np,
        "ingress on a named UDP port",
        &ingress_ports("named-udp", "{protocol: UDP, port: serve-81-udp}"),
        &[udp(81, &all_allowed()), tcp(81, &a_shut), udp(80, &a_shut)],
    )?;
    scenario(
        &np,
        "a policy for SCTP does not allow TCP",
        &ingress_ports("sctp", "{protocol: SCTP, port: 80}"),
        &[tcp(80, &a_shut), udp(80, &a_shut)],
    )?;
    scenario(
        &np,
        "a policy for UDP does not allow TCP",
        &ingress_ports("udp", "{protocol: UDP, port: 80}"),
        &[tcp(80, &a_shut), udp(80, &all_allowed())],
    )?;
    scenario(
        &np,
        "any port of one protocol",
        &ingress_ports("any-udp", "{protocol: UDP}"),
        &[udp(80, &all_allowed()), udp(81, &all_allowed()), tcp(80, &a_shut)],
    )?;
    let only_from_y = all_allowed().expect(ANY, pod("x", "a"), false).expect(ns("y"), pod("x", "a"), true);
    scenario(
        &np,
        "ingress on a port range (endPort)",
        &policy(
            "range",
            "x",
            &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{ns: y}}}}}}], ports: [{{port: 80, endPort: 81}}]}}]}}"),
        ),
        &[tcp(80, &only_from_y), tcp(81, &only_from_y), udp(80, &a_shut)],
    )?;
    let a_out = all_allowed().expect(pod("x", "a"), ANY, false);
    let egress_ports = |name: &str, ports: &str| {
        policy(name, "x", &format!("{{podSelector: {POD_A}, policyTypes: [Egress], egress: [{{ports: [{ports}]}}]}}"))
    };
    scenario(
        &np,
        "egress on a named port (the destination's)",
        &egress_ports("named-egress", "{port: serve-80-tcp}"),
        &[tcp(80, &all_allowed()), tcp(81, &a_out), udp(80, &a_out)],
    )?;
    scenario(
        &np,
        "egress on a port range (endPort)",
        &egress_ports("range-egress", "{port: 81, endPort: 90}"),
        &[tcp(81, &all_allowed()), tcp(80, &a_out)],
    )?;
    Ok(())
}

#[test]
fn updates_deletes_and_label_changes() -> Result<()> {
    let np = NetpolCluster::new(&[])?;
    let from = |peer: &str| {
        policy("from-peer", "x", &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{podSelector: {peer}}}]}}]}}"))
    };
    let only = |p: &'static str| all_allowed().expect(ANY, pod("x", "a"), false).expect(pod("x", p), pod("x", "a"), true);

    // Updated in place: b's permission becomes c's.
    np.apply(&from("{matchLabels: {pod: b}}"))?;
    np.check("policy allowing x/b", &[tcp(80, &only("b"))])?;
    np.apply(&from("{matchLabels: {pod: c}}"))?;
    let took = np.check("the same policy updated to allow x/c", &[tcp(80, &only("c"))])?;
    eprintln!("update enforced after {took:?}");
    np.cluster.oxsdnctl(&["delete", "networkpolicy", "from-peer", "-n", "x"])?;
    np.check("policy deleted", &[tcp(80, &all_allowed())])?;

    // Stacked: port 81 from y and z, then port 80 too.
    let stacked = |name: &str, port: u16| {
        policy(
            name,
            "x",
            &format!(
                "{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: ns, operator: NotIn, values: [x]}}]}}}}], ports: [{{port: {port}}}]}}]}}"
            ),
        )
    };
    let not_x = all_allowed().expect(ns("x"), pod("x", "a"), false);
    np.apply(&stacked("allow-81", 81))?;
    np.check(
        "one policy on port 81",
        &[tcp(81, &not_x), tcp(80, &all_allowed().expect(ANY, pod("x", "a"), false))],
    )?;
    np.apply(&stacked("allow-80", 80))?;
    np.check("a second policy adds port 80", &[tcp(81, &not_x), tcp(80, &not_x)])?;
    np.delete(&(stacked("allow-81", 81) + &stacked("allow-80", 80)))?;
    np.check("both deleted", &[tcp(80, &all_allowed())])?;

    // A pod's label moves it into and out of a policy's peers.
    np.apply(&from("{matchLabels: {role: client}}"))?;
    let shut = all_allowed().expect(ANY, pod("x", "a"), false);
    np.check("no client yet", &[tcp(80, &shut)])?;
    for b in np.instances(XB) {
        np.cluster.oxsdnctl(&["label", "pod", &b.name, "-n", "x", "role=client"])?;
    }
    np.check("x/b labeled a client", &[tcp(80, &only("b"))])?;
    for b in np.instances(XB) {
        np.cluster.oxsdnctl(&["label", "pod", &b.name, "-n", "x", "role-"])?;
    }
    np.check("x/b's label removed", &[tcp(80, &shut)])?;
    np.delete(&from("{matchLabels: {role: client}}"))?;

    // A pod's label moves it into and out of a policy's subjects.
    let target = policy("isolate-targets", "x", "{podSelector: {matchLabels: {target: 'yes'}}, policyTypes: [Ingress]}");
    np.apply(&target)?;
    np.check("no target yet", &[tcp(80, &all_allowed())])?;
    for a in np.instances(XA) {
        np.cluster.oxsdnctl(&["label", "pod", &a.name, "-n", "x", "target=yes"])?;
    }
    np.check("x/a labeled a target", &[tcp(80, &shut)])?;
    for a in np.instances(XA) {
        np.cluster.oxsdnctl(&["label", "pod", &a.name, "-n", "x", "target-"])?;
    }
    np.check("x/a's label removed", &[tcp(80, &all_allowed())])?;
    np.delete(&target)?;

    // A namespace's label moves its pods into and out of a policy's peers.
    let by_team = policy(
        "from-blue",
        "x",
        &format!("{{podSelector: {POD_A}, ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: blue}}}}}}]}}]}}"),
    );
    np.apply(&by_team)?;
    np.check("no blue namespace", &[tcp(80, &shut)])?;
    np.cluster.oxsdnctl(&["label", "namespace", "z", "team=blue"])?;
    np.check("z labeled blue", &[tcp(80, &shut.clone().expect(ns("z"), pod("x", "a"), true))])?;
    np.cluster.oxsdnctl(&["label", "namespace", "z", "team-"])?;
    np.check("z's label removed", &[tcp(80, &shut)])?;
    np.delete(&by_team)?;
    np.check("all deleted", &[tcp(80, &all_allowed())])?;
    Ok(())
}
