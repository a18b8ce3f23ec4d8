//! The egress firewall on each node (OpenShift's EgressNetworkPolicy, table 101): the
//! projects' policies, their VNIDs and the addresses their `dnsName` rules resolve to,
//! compiled into `EGRESS_CIDRS` (`oxsdn_common::egress`), of which only the entries that
//! changed are written. A restarted agent reads the map back and keeps the entries and
//! counters that still apply.
//!
//! As OpenShift: rules apply per VNID; a VNID that joined projects share, one of which
//! has a policy, loses all external traffic (`EGRESS_INVALID`); policies of global
//! projects (VNID 0) are ignored. `dnsName` rules follow the name's A records, resolved
//! again when their TTL ends (at most 30 s; `dns`); a name that does not resolve (yet)
//! matches no address, a failed resolution keeps the addresses it had, and so does a
//! restarted agent until its first answer.

pub mod dns;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::lpm_trie::Key;
use ipnetwork::Ipv4Network;
use oxsdn_common::egress::{
    EgressCidr, EgressVerdict, EGRESS_ALLOW, EGRESS_DENY, EGRESS_INVALID, EGRESS_KEY_FIXED_BITS, MAX_EGRESS_ENTRIES,
};
use oxsdn_controller::{
    cluster::{EgressPolicyEvent, NetNamespaceEvent},
    egress::{EgressNetworkPolicyRecord, EgressRuleType, EgressTarget},
    NetNamespace,
};

use crate::{
    maps::{ignore_missing, ip_from_key, ip_key, reset, NodeMaps},
    policy::mirrors::PolicyInput,
};

/// How soon a name whose resolution failed is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// An entry of `EGRESS_CIDRS`: VNID, prefix length of the address, address (map form).
type EntryKey = (u32, u32, u32);

/// What an entry says: action, rule index, rule count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wanted {
    action: u32,
    rule: u32,
    rules: u32,
}

pub struct EgressFirewall {
    maps: Arc<Mutex<NodeMaps>>,
    dns_server: Option<SocketAddr>,
    state: Mutex<State>,
    /// Wakes the resolver: a name to resolve now.
    names_changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Policies by project.
    policies: BTreeMap<String, EgressNetworkPolicyRecord>,
    /// VNIDs by project.
    vnids: HashMap<String, u32>,
    /// The `dnsName`s of the policies, with their addresses (`None`: not resolved since
    /// this agent started) and when to resolve again.
    names: HashMap<String, (Option<BTreeSet<Ipv4Addr>>, Instant)>,
    /// What `EGRESS_CIDRS` holds.
    written: HashMap<EntryKey, EgressVerdict>,
    /// Counter slots no entry holds.
    free: BTreeSet<u32>,
    /// Whether the projects and the policies have been listed: until both are, what the
    /// map holds (a previous agent's entries) stays.
    listed_projects: bool,
    listed_policies: bool,
}

impl EgressFirewall {
    /// Takes over what the map holds and starts the resolver of `dnsName` rules.
    pub fn start(maps: Arc<Mutex<NodeMaps>>, dns_server: Option<SocketAddr>) -> Result<Arc<EgressFirewall>> {
        let dns_server = dns_server.or_else(resolv_conf_server);
        if dns_server.is_none() {
            tracing::warn!(
                "no DNS server (no --dns-server, none in /etc/resolv.conf): dnsName egress rules match nothing"
            );
        }
        let mut state = State { free: (0..MAX_EGRESS_ENTRIES).collect(), ..State::default() };
        {
            let maps = maps.lock().unwrap();
            for entry in maps.egress_cidrs.iter() {
                let (key, verdict) = entry?;
                let data = key.data();
                let prefix = key.prefix_len().saturating_sub(EGRESS_KEY_FIXED_BITS);
                if !state.free.remove(&verdict.slot) {
                    bail!("two egress firewall entries hold counter slot {}", verdict.slot);
                }
                state.written.insert((data.vnid, prefix, data.ip), verdict);
            }
        }
        let firewall =
            Arc::new(EgressFirewall { maps, dns_server, state: Mutex::new(state), names_changed: Condvar::new() });
        std::thread::Builder::new().name("egress-dns".into()).spawn({
            let firewall = firewall.clone();
            move || firewall.resolve_forever()
        })?;
        Ok(firewall)
    }

    fn changed(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state);
        let names: BTreeSet<String> = state.policies.values().flat_map(dns_names).collect();
        state.names.retain(|name, _| names.contains(name));
        let now = Instant::now();
        let mut new_names = false;
        for name in names {
            state.names.entry(name).or_insert_with(|| {
                new_names = true;
                (None, now)
            });
        }
        if new_names {
            self.names_changed.notify_all();
        }
        if !(state.listed_projects && state.listed_policies) {
            return;
        }
        if let Err(e) = self.write(&mut state) {
            tracing::error!("writing the egress firewall: {e:#}");
        }
    }

    /// Makes `EGRESS_CIDRS` what the state compiles to: new and changed entries first,
    /// then the stale ones removed (first if the counter slots are short).
    fn write(&self, state: &mut State) -> Result<()> {
        // A name not resolved since the agent started keeps the addresses its rule has in
        // the map (a previous agent's answer), so a restart neither opens nor closes them.
        let addresses = |name: &str, vnid: u32, rule: u32| match state.names.get(name) {
            Some((Some(resolved), _)) => resolved.clone(),
            _ => state
                .written
                .iter()
                .filter(|((v, prefix, _), verdict)| *v == vnid && *prefix == 32 && verdict.rule == rule)
                .map(|((_, _, ip), _)| ip_from_key(*ip))
                .collect(),
        };
        let wanted = compile(&state.policies, &state.vnids, addresses);
        let stale: Vec<EntryKey> = state.written.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        let new = wanted.keys().filter(|k| !state.written.contains_key(k)).count();
        let mut maps = self.maps.lock().unwrap();
        let remove_stale = |state: &mut State, maps: &mut NodeMaps| -> Result<()> {
            for key in &stale {
                ignore_missing(maps.egress_cidrs.remove(&lpm_key(key)))?;
                if let Some(old) = state.written.remove(key) {
                    state.free.insert(old.slot);
                }
            }
            Ok(())
        };
        if new > state.free.len() {
            remove_stale(state, &mut maps)?;
            if new > state.free.len() {
                bail!("the egress firewalls need {new} more entries than the {MAX_EGRESS_ENTRIES} a node holds");
            }
        }
        for (key, w) in &wanted {
            let old = state.written.get(key).copied();
            if old.is_some_and(|v| (v.action, v.rule, v.rules) == (w.action, w.rule, w.rules)) {
                continue;
            }
            let slot = match old {
                // The same destination and action: the same flow, its counter kept.
                Some(v) if v.action == w.action => v.slot,
                Some(v) => {
                    reset(&mut maps.egress_stats, v.slot)?;
                    v.slot
                }
                None => {
                    let slot = state.free.pop_first().context("no free egress counter slot")?;
                    reset(&mut maps.egress_stats, slot)?;
                    slot
                }
            };
            let verdict = EgressVerdict { action: w.action, slot, rule: w.rule, rules: w.rules };
            if let Err(e) = maps.egress_cidrs.insert(&lpm_key(key), verdict, 0) {
                if old.is_none() {
                    state.free.insert(slot);
                }
                return Err(e.into());
            }
            state.written.insert(*key, verdict);
        }
        remove_stale(state, &mut maps)
    }

    /// Resolves each name when it is due, and rewrites the entries when its addresses
    /// change.
    fn resolve_forever(&self) {
        loop {
            let due: Vec<String> = {
                let state = self.state.lock().unwrap();
                let now = Instant::now();
                let next = state.names.values().map(|(_, at)| *at).min();
                let wait = next.map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now));
                let state = if wait.is_zero() {
                    state
                } else {
                    self.names_changed.wait_timeout(state, wait.min(Duration::from_secs(1))).unwrap().0
                };
                let now = Instant::now();
                state.names.iter().filter(|(_, (_, at))| *at <= now).map(|(name, _)| name.clone()).collect()
            };
            for name in due {
                let resolved = match self.dns_server {
                    Some(server) => dns::resolve(server, &name),
                    None => Err(anyhow::anyhow!("no DNS server")),
                };
                let mut state = self.state.lock().unwrap();
                let Some((addresses, at)) = state.names.get_mut(&name) else { continue };
                let changed = match resolved {
                    Ok(r) => {
                        *at = Instant::now() + r.refresh;
                        let changed = addresses.as_ref() != Some(&r.addresses);
                        if changed {
                            tracing::info!(%name, addresses = ?r.addresses, "egress firewall dnsName resolved");
                        }
                        *addresses = Some(r.addresses);
                        changed
                    }
                    Err(e) => {
                        tracing::warn!(%name, "resolving an egress firewall dnsName: {e:#}");
                        *at = Instant::now() + RETRY;
                        false
                    }
                };
                if changed && state.listed_projects && state.listed_policies {
                    if let Err(e) = self.write(&mut state) {
                        tracing::error!("writing the egress firewall: {e:#}");
                    }
                }
            }
        }
    }
}

fn dns_names(policy: &EgressNetworkPolicyRecord) -> impl Iterator<Item = String> + '_ {
    policy.spec.egress.iter().filter_map(|rule| match rule.target() {
        Ok(EgressTarget::DnsName(name)) => Some(name),
        _ => None,
    })
}

fn lpm_key(&(vnid, prefix, ip): &EntryKey) -> Key<EgressCidr> {
    Key::new(EGRESS_KEY_FIXED_BITS + prefix, EgressCidr { vnid, ip })
}

/// The first nameserver of /etc/resolv.conf, on port 53.
fn resolv_conf_server() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|line| {
        let address = line.trim().strip_prefix("nameserver")?.trim();
        Some(SocketAddr::new(address.parse().ok()?, 53))
    })
}

/// The entries the policies compile to. Per VNID with a policy: if joined projects
/// share it, one entry for every address, `EGRESS_INVALID`; else the rules in order,
/// each CIDR (or resolved address) written only if no earlier rule's covers it. CIDRs
/// are nested or disjoint, so for any address the longest entry holding it is then the
/// first rule matching it: the LPM lookup is first match.
/// `resolved(name, vnid, rule)`: the addresses of rule `rule`'s name in VNID `vnid`.
fn compile(
    policies: &BTreeMap<String, EgressNetworkPolicyRecord>,
    vnids: &HashMap<String, u32>,
    resolved: impl Fn(&str, u32, u32) -> BTreeSet<Ipv4Addr>,
) -> BTreeMap<EntryKey, Wanted> {
    let mut projects_per_vnid: HashMap<u32, u32> = HashMap::new();
    for vnid in vnids.values() {
        *projects_per_vnid.entry(*vnid).or_default() += 1;
    }
    let mut out = BTreeMap::new();
    for (project, policy) in policies {
        let Some(&vnid) = vnids.get(project) else { continue };
        if vnid == 0 {
            continue;
        }
        if projects_per_vnid.get(&vnid).copied().unwrap_or(0) > 1 {
            out.insert((vnid, 0, 0), Wanted { action: EGRESS_INVALID, rule: 0, rules: 0 });
            continue;
        }
        let rules = policy.spec.egress.len() as u32;
        for (i, rule) in policy.spec.egress.iter().enumerate() {
            let action = match rule.kind {
                EgressRuleType::Allow => EGRESS_ALLOW,
                EgressRuleType::Deny => EGRESS_DENY,
            };
            let networks: Vec<Ipv4Network> = match rule.target() {
                Ok(EgressTarget::Cidr(net)) => vec![net],
                Ok(EgressTarget::DnsName(name)) => resolved(&name, vnid, i as u32)
                    .into_iter()
                    .map(|a| Ipv4Network::new(a, 32).expect("/32 is a prefix"))
                    .collect(),
                // Validated when stored.
                Err(_) => Vec::new(),
            };
            for net in networks {
                let covered = (0..=net.prefix()).any(|p| {
                    let outer = Ipv4Network::new(net.ip(), p).expect("shorter prefix").network();
                    out.contains_key(&(vnid, u32::from(p), ip_key(outer)))
                });
                if !covered {
                    let key = (vnid, u32::from(net.prefix()), ip_key(net.network()));
                    out.insert(key, Wanted { action, rule: i as u32, rules });
                }
            }
        }
    }
    out
}

impl PolicyInput<EgressFirewall> for NetNamespace {
    type Event = NetNamespaceEvent;
    const WHAT: &'static str = "egress firewall projects";
    fn replace_all(firewall: &EgressFirewall, all: Vec<Self>) {
        firewall.changed(|state| {
            state.vnids = all.into_iter().map(|ns| (ns.name, ns.netid)).collect();
            state.listed_projects = true;
        });
    }
    fn apply(firewall: &EgressFirewall, event: NetNamespaceEvent) {
        firewall.changed(|state| match event {
            NetNamespaceEvent::Upsert(ns) => {
                state.vnids.insert(ns.name, ns.netid);
            }
            NetNamespaceEvent::Deleted(name) => {
                state.vnids.remove(&name);
            }
        });
    }
}

impl PolicyInput<EgressFirewall> for EgressNetworkPolicyRecord {
    type Event = EgressPolicyEvent;
    const WHAT: &'static str = "egress network policy";
    fn replace_all(firewall: &EgressFirewall, all: Vec<Self>) {
        firewall.changed(|state| {
            state.policies = all.into_iter().map(|p| (p.namespace.clone(), p)).collect();
            state.listed_policies = true;
        });
    }
    fn apply(firewall: &EgressFirewall, event: EgressPolicyEvent) {
        firewall.changed(|state| match event {
            EgressPolicyEvent::Upsert(policy) => {
                state.policies.insert(policy.namespace.clone(), policy);
            }
            EgressPolicyEvent::Deleted(project) => {
                state.policies.remove(&project);
            }
        });
    }
}

#[cfg(test)]
mod tests;
