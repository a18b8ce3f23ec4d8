use super::*;
use oxsdn_controller::egress::{EgressNetworkPolicySpec, EgressPeer, EgressRule};

fn rule(kind: EgressRuleType, to: &str) -> EgressRule {
    let to = if to.contains('/') {
        EgressPeer { cidr_selector: Some(to.into()), dns_name: None }
    } else {
        EgressPeer { cidr_selector: None, dns_name: Some(to.into()) }
    };
    EgressRule { kind, to }
}

fn policies(project: &str, rules: Vec<EgressRule>) -> BTreeMap<String, EgressNetworkPolicyRecord> {
    let spec = EgressNetworkPolicySpec { egress: rules };
    [(project.to_owned(), EgressNetworkPolicyRecord { namespace: project.into(), name: "default".into(), spec })].into()
}

/// The action for `dst` as the LPM lookup finds it: the longest entry holding it.
fn lookup(entries: &BTreeMap<EntryKey, Wanted>, vnid: u32, dst: Ipv4Addr) -> Option<(u32, u32)> {
    (0..=32u8).rev().find_map(|p| {
        let net = Ipv4Network::new(dst, p).unwrap().network();
        entries.get(&(vnid, u32::from(p), ip_key(net))).map(|w| (w.action, w.rule))
    })
}

/// First match, as OpenShift's priorities give it, straight from the rule list.
fn first_match(rules: &[EgressRule], dst: Ipv4Addr) -> Option<(u32, u32)> {
    rules.iter().enumerate().find_map(|(i, r)| match r.target() {
        Ok(EgressTarget::Cidr(net)) if net.contains(dst) => {
            Some((if r.kind == EgressRuleType::Allow { EGRESS_ALLOW } else { EGRESS_DENY }, i as u32))
        }
        _ => None,
    })
}

#[test]
fn the_lpm_lookup_is_first_match() {
    use EgressRuleType::{Allow, Deny};
    let rules = vec![
        rule(Allow, "10.1.2.0/24"),
        rule(Deny, "10.1.0.0/16"),
        rule(Allow, "10.1.3.0/24"), // shadowed by rule 1
        rule(Allow, "10.1.2.7/32"), // shadowed by rule 0
        rule(Deny, "10.1.2.8/32"),  // shadowed by rule 0
        rule(Allow, "192.168.0.0/16"),
        rule(Deny, "192.168.5.0/24"), // shadowed by rule 5
        rule(Deny, "0.0.0.0/0"),
    ];
    let vnids = [("p".to_owned(), 11)].into();
    let entries = compile(&policies("p", rules.clone()), &vnids, |_, _, _| BTreeSet::new());
    assert_eq!(entries.len(), 4, "shadowed rules are not written: {entries:?}");
    let mut rng = 0x1234_5678u32;
    let mut samples: Vec<Ipv4Addr> =
        ["10.1.2.7", "10.1.2.8", "10.1.3.1", "10.2.0.1", "192.168.5.5", "8.8.8.8"].map(|a| a.parse().unwrap()).into();
    for _ in 0..2000 {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        // Around the rules' networks and anywhere.
        samples.push(Ipv4Addr::from(match rng % 3 {
            0 => 0x0a01_0000 | (rng >> 16) & 0x03ff,
            1 => 0xc0a8_0000 | (rng >> 8) & 0x0fff,
            _ => rng,
        }));
    }
    for dst in samples {
        assert_eq!(lookup(&entries, 11, dst), first_match(&rules, dst), "{dst}");
        assert_eq!(lookup(&entries, 12, dst), None, "another VNID");
    }
}

#[test]
fn dns_names_become_addresses_at_their_rules_place() {
    use EgressRuleType::{Allow, Deny};
    let rules = vec![rule(Allow, "example.com"), rule(Deny, "0.0.0.0/0")];
    let vnids = [("p".to_owned(), 11)].into();
    let addresses: BTreeSet<Ipv4Addr> = ["192.0.2.1".parse().unwrap(), "192.0.2.9".parse().unwrap()].into();
    let entries = compile(&policies("p", rules.clone()), &vnids, |n, _, _| {
        if n == "example.com" {
            addresses.clone()
        } else {
            BTreeSet::new()
        }
    });
    assert_eq!(lookup(&entries, 11, "192.0.2.1".parse().unwrap()), Some((EGRESS_ALLOW, 0)));
    assert_eq!(lookup(&entries, 11, "192.0.2.2".parse().unwrap()), Some((EGRESS_DENY, 1)));
    // Not resolved yet: matches nothing.
    let entries = compile(&policies("p", rules), &vnids, |_, _, _| BTreeSet::new());
    assert_eq!(lookup(&entries, 11, "192.0.2.1".parse().unwrap()), Some((EGRESS_DENY, 1)));
}

#[test]
fn joined_projects_lose_egress_and_global_ones_ignore_policies() {
    let rules = vec![rule(EgressRuleType::Allow, "0.0.0.0/0")];
    let joined = [("p".to_owned(), 11), ("q".to_owned(), 11)].into();
    let entries = compile(&policies("p", rules.clone()), &joined, |_, _, _| BTreeSet::new());
    assert_eq!(
        entries.into_iter().collect::<Vec<_>>(),
        vec![((11, 0, 0), Wanted { action: EGRESS_INVALID, rule: 0, rules: 0 })]
    );
    let global = [("p".to_owned(), 0)].into();
    assert!(compile(&policies("p", rules.clone()), &global, |_, _, _| BTreeSet::new()).is_empty());
    assert!(compile(&policies("p", rules), &HashMap::new(), |_, _, _| BTreeSet::new()).is_empty(), "unknown project");
}
