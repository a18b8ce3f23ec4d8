use std::{
    collections::HashSet,
    sync::mpsc::RecvTimeoutError,
    time::{Duration, Instant},
};

use ipnetwork::Ipv4Network;

use super::*;
use crate::{
    cluster::{
        record_key,
        tests::{cluster_on, everything, ip, raw_put, recv},
    },
    service::Protocol,
    store::{
        testing::{on_both_stores, Backing, Kind},
        Op,
    },
    ClusterConfig,
};

// Allocation, conflicts, watches and the project/service interplay rest on the store's
// transactions and watches: run on etcd too.
on_both_stores!(
    cluster_ips_are_random_distinct_and_ids_increase,
    requested_cluster_ips,
    cluster_ips_run_out_and_come_back,
    ports_and_endpoints_change_in_place,
    watch_services_after_list,
    concurrent_creations_never_share_a_cluster_ip,
    concurrent_requests_for_one_cluster_ip,
    projects_with_services_are_not_deleted,
    racing_project_deletion_leaves_no_orphan_service,
);

fn tcp(port: u16, target: u16) -> ServicePort {
    ServicePort::new(Protocol::Tcp, port, target)
}

fn udp(port: u16, target: u16) -> ServicePort {
    ServicePort::new(Protocol::Udp, port, target)
}

fn net(s: &str) -> Ipv4Network {
    s.parse().unwrap()
}

/// An initialised cluster (service network `service_network`) with projects `a` and `b`.
fn with_projects(kind: Kind, service_network: &str) -> (Backing, Cluster) {
    let (backing, c) = cluster_on(kind);
    c.init_config(&ClusterConfig { service_network: net(service_network), ..ClusterConfig::default() }).unwrap();
    for p in ["a", "b"] {
        c.ensure_netnamespace(p).unwrap();
    }
    (backing, c)
}

fn with_default_projects(kind: Kind) -> (Backing, Cluster) {
    with_projects(kind, "172.30.0.0/16")
}

fn unknown_service(r: Result<impl std::fmt::Debug>, project: &str, name: &str) {
    match r {
        Err(Error::UnknownService { project: p, name: n }) if p == project && n == name => {}
        other => panic!("expected UnknownService {project}/{name}, got {other:?}"),
    }
}

fn invalid_service(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(Error::InvalidService(m)) => m,
        other => panic!("expected InvalidService, got {other:?}"),
    }
}

// ---- creation ---------------------------------------------------------------------------

fn cluster_ips_are_random_distinct_and_ids_increase(kind: Kind) {
    let (_backing, c) = with_default_projects(kind);
    let network = c.config().unwrap().service_network;
    let created: Vec<Service> =
        (0..10).map(|i| c.create_service("a", &format!("s{i}"), &[tcp(80, 8080)], None).unwrap()).collect();
    let ips: HashSet<Ipv4Addr> = created.iter().map(|s| s.cluster_ip).collect();
    assert_eq!(ips.len(), 10);
    assert!(ips.iter().all(|ip| network.contains(*ip) && *ip != network.network() && *ip != network.broadcast()));
    // Random starts: ten in a row from one address up would be a fixed start.
    let mut sorted: Vec<u32> = ips.iter().map(|ip| u32::from(*ip)).collect();
    sorted.sort();
    assert!(sorted[9] - sorted[0] > 9, "{ips:?}");
    assert_eq!(created.iter().map(|s| s.id).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let first = &created[0];
    assert_eq!(
        (first.project.as_str(), first.name.as_str(), first.ports.as_slice(), first.endpoints.as_slice()),
        ("a", "s0", &[tcp(80, 8080)][..], &[][..])
    );
    assert_eq!(c.get_service("a", "s0").unwrap().as_ref(), Some(first));
    assert_eq!(c.get_service("a", "nope").unwrap(), None);
    assert_eq!(c.get_service("b", "s0").unwrap(), None);
}

#[test]
fn services_need_a_configuration_and_an_existing_project() {
    let (_backing, c) = cluster_on(Kind::File);
    c.ensure_netnamespace("a").unwrap();
    assert!(matches!(c.create_service("a", "web", &[tcp(80, 80)], None), Err(Error::NotInitialised)));
    c.init_config(&ClusterConfig::default()).unwrap();
    let before = everything(&c);
    let err = c.create_service("nope", "web", &[tcp(80, 80)], None).unwrap_err();
    assert!(matches!(&err, Error::UnknownProject(p) if p == "nope"), "{err}");
    assert_eq!(everything(&c), before);
}

#[test]
fn creating_an_existing_service_is_an_error() {
    let (_backing, c) = with_default_projects(Kind::File);
    let web = c.create_service("a", "web", &[tcp(80, 80)], None).unwrap();
    let before = everything(&c);
    for again in [
        c.create_service("a", "web", &[tcp(80, 80)], Some(web.cluster_ip)),
        c.create_service("a", "web", &[udp(53, 53)], None),
    ] {
        let err = again.unwrap_err();
        assert!(matches!(err, Error::ServiceExists { .. }), "{err:?}");
        assert_eq!(err.to_string(), "service \"web\" already exists in project \"a\"");
    }
    assert_eq!(everything(&c), before);
    // The same name in another project is another service.
    let other = c.create_service("b", "web", &[tcp(80, 80)], None).unwrap();
    assert_ne!(other.cluster_ip, web.cluster_ip);
}

#[test]
fn names_and_ports_are_validated_before_anything_is_written() {
    let (_backing, c) = with_default_projects(Kind::File);
    let before = everything(&c);
    assert!(matches!(c.create_service("A", "web", &[tcp(80, 80)], None), Err(Error::InvalidProjectName(_))));
    let m = invalid_service(c.create_service("a", "1web", &[tcp(80, 80)], None));
    assert!(m.starts_with("invalid service name \"1web\""), "{m}");
    assert_eq!(invalid_service(c.create_service("a", "web", &[], None)), "a service needs at least one port");
    assert_eq!(
        invalid_service(c.create_service("a", "web", &[tcp(80, 80), tcp(80, 81)], None)),
        "port 80/TCP is declared twice"
    );
    assert_eq!(
        invalid_service(c.create_service("a", "web", &[udp(0, 53)], None)),
        "port 0:53/UDP: port 0 is not valid"
    );
    assert_eq!(everything(&c), before);
    assert!(matches!(c.get_service("a", "a/b"), Err(Error::InvalidService(_))));
    assert!(matches!(c.list_project_services("a/b"), Err(Error::InvalidProjectName(_))));
}

fn requested_cluster_ips(kind: Kind) {
    let (_backing, c) = with_default_projects(kind);
    let web = c.create_service("a", "web", &[tcp(80, 80)], Some(ip("172.30.0.10"))).unwrap();
    assert_eq!(web.cluster_ip, ip("172.30.0.10"));
    // The lowest and highest usable addresses may be requested.
    for edge in ["172.30.0.1", "172.30.255.254"] {
        let name = format!("edge-{}", edge.replace('.', "-"));
        let s = c.create_service("b", &name, &[tcp(80, 80)], Some(ip(edge))).unwrap();
        assert_eq!(s.cluster_ip, ip(edge));
    }
    let before = everything(&c);
    let err = c.create_service("b", "db", &[tcp(5432, 5432)], Some(ip("172.30.0.10"))).unwrap_err();
    assert!(matches!(&err, Error::ClusterIpInUse { service, .. } if service == "a/web"), "{err:?}");
    assert_eq!(err.to_string(), "ClusterIP 172.30.0.10 is already allocated to service a/web");
    for (bad, why) in [
        ("172.31.0.1", "is outside"),
        ("10.128.0.1", "is outside"),
        ("172.30.0.0", "is the network address of"),
        ("172.30.255.255", "is the broadcast address of"),
    ] {
        let err = c.create_service("b", "db", &[tcp(5432, 5432)], Some(ip(bad))).unwrap_err();
        assert!(matches!(err, Error::ClusterIpOutOfRange { why: w, .. } if w == why), "{bad}: {err:?}");
    }
    assert_eq!(everything(&c), before, "refusals write nothing");
    // Deleting the service frees its address.
    c.delete_service("a", "web").unwrap();
    let db = c.create_service("b", "db", &[tcp(5432, 5432)], Some(ip("172.30.0.10"))).unwrap();
    assert_eq!(db.cluster_ip, ip("172.30.0.10"));
}

fn cluster_ips_run_out_and_come_back(kind: Kind) {
    // A /29 has 6 usable addresses.
    let (_backing, c) = with_projects(kind, "172.30.0.0/29");
    let mut ips: Vec<Ipv4Addr> =
        (0..6).map(|i| c.create_service("a", &format!("s{i}"), &[tcp(80, 80)], None).unwrap().cluster_ip).collect();
    ips.sort();
    assert_eq!(ips, (1..=6).map(|i| Ipv4Addr::new(172, 30, 0, i)).collect::<Vec<_>>());
    let before = everything(&c);
    let err = c.create_service("a", "s6", &[tcp(80, 80)], None).unwrap_err();
    assert!(matches!(&err, Error::ServiceIpsExhausted(n) if n == "172.30.0.0/29"), "{err:?}");
    assert_eq!(everything(&c), before, "not even the id counter moves");
    let s3 = c.get_service("a", "s3").unwrap().unwrap();
    c.delete_service("a", "s3").unwrap();
    let again = c.create_service("a", "s6", &[tcp(80, 80)], None).unwrap();
    assert_eq!(again.cluster_ip, s3.cluster_ip);
    assert_eq!(again.id, 7, "ids are never reused");
}

// ---- ports and endpoints ----------------------------------------------------------------

fn ports_and_endpoints_change_in_place(kind: Kind) {
    let (_backing, c) = with_default_projects(kind);
    let web = c.create_service("a", "web", &[tcp(80, 8080)], None).unwrap();

    let set = c.set_endpoints("a", "web", &[ip("10.129.0.7"), ip("10.128.0.5"), ip("10.129.0.7")]).unwrap();
    assert_eq!(set.endpoints, [ip("10.128.0.5"), ip("10.129.0.7")]);
    assert_eq!((set.cluster_ip, set.id, &set.ports), (web.cluster_ip, web.id, &web.ports));
    assert_eq!(c.get_service("a", "web").unwrap().unwrap(), set);

    let ports = [tcp(80, 8081), udp(53, 5353)];
    let updated = c.update_service_ports("a", "web", &ports).unwrap();
    assert_eq!(updated.ports, ports);
    assert_eq!(
        (updated.cluster_ip, updated.id, &updated.endpoints),
        (web.cluster_ip, web.id, &set.endpoints),
        "ClusterIP and endpoints kept"
    );

    let added = c.add_endpoints("a", "web", &[ip("10.130.0.2"), ip("10.128.0.5")]).unwrap();
    assert_eq!(added.endpoints, [ip("10.128.0.5"), ip("10.129.0.7"), ip("10.130.0.2")]);
    let removed = c.remove_endpoints("a", "web", &[ip("10.129.0.7"), ip("10.131.0.1")]).unwrap();
    assert_eq!(removed.endpoints, [ip("10.128.0.5"), ip("10.130.0.2")]);

    // No change, no write.
    let revision = everything(&c).revision;
    c.set_endpoints("a", "web", &[ip("10.130.0.2"), ip("10.128.0.5")]).unwrap();
    c.remove_endpoints("a", "web", &[ip("10.131.0.1")]).unwrap();
    c.add_endpoints("a", "web", &[ip("10.128.0.5")]).unwrap();
    c.update_service_ports("a", "web", &ports).unwrap();
    assert_eq!(everything(&c).revision, revision);

    // Refusals change nothing.
    let before = everything(&c);
    let m = invalid_service(c.set_endpoints("a", "web", &[ip("10.128.0.9"), ip("192.168.1.1")]));
    assert_eq!(m, "endpoint 192.168.1.1 is not in the cluster network 10.128.0.0/14");
    invalid_service(c.add_endpoints("a", "web", &[ip("172.30.0.1")]));
    assert_eq!(invalid_service(c.update_service_ports("a", "web", &[])), "a service needs at least one port");
    unknown_service(c.set_endpoints("b", "web", &[]), "b", "web");
    unknown_service(c.update_service_ports("a", "nope", &ports), "a", "nope");
    unknown_service(c.add_endpoints("a", "nope", &[]), "a", "nope");
    unknown_service(c.remove_endpoints("a", "nope", &[]), "a", "nope");
    unknown_service(c.delete_service("a", "nope"), "a", "nope");
    assert_eq!(everything(&c), before);

    let cleared = c.set_endpoints("a", "web", &[]).unwrap();
    assert!(cleared.endpoints.is_empty());
    c.delete_service("a", "web").unwrap();
    assert_eq!(c.get_service("a", "web").unwrap(), None);
    unknown_service(c.delete_service("a", "web"), "a", "web");
}

#[test]
fn unknown_service_message() {
    let (_backing, c) = with_default_projects(Kind::File);
    assert_eq!(c.delete_service("a", "web").unwrap_err().to_string(), "service \"web\" not found in project \"a\"");
}

// ---- listing and watching ---------------------------------------------------------------

#[test]
fn lists_are_sorted_by_project_then_name() {
    let (_backing, c) = with_default_projects(Kind::File);
    // "a-b/…" keys sort before "a/…" ones ('-' < '/'), but project "a" comes first.
    c.ensure_netnamespace("a-b").unwrap();
    for (project, name) in [("b", "x"), ("a-b", "a"), ("a", "y"), ("a", "x-1"), ("a", "x")] {
        c.create_service(project, name, &[tcp(80, 80)], None).unwrap();
    }
    let (all, revision) = c.list_services().unwrap();
    let names: Vec<(&str, &str)> = all.iter().map(|s| (s.project.as_str(), s.name.as_str())).collect();
    assert_eq!(names, [("a", "x"), ("a", "x-1"), ("a", "y"), ("a-b", "a"), ("b", "x")]);
    assert_eq!(revision, everything(&c).revision);
    let (of_a, _) = c.list_project_services("a").unwrap();
    assert_eq!(of_a, all[..3]);
    assert!(c.list_project_services("zz").unwrap().0.is_empty());
}

#[test]
fn record_named_differently_from_its_key_is_bad() {
    let (_backing, c) = with_default_projects(Kind::File);
    let web = c.create_service("a", "web", &[tcp(80, 80)], None).unwrap();
    let moved = Service { project: "b".into(), ..web };
    raw_put(&c, &record_key::<Service>("a/web"), &serde_json::to_vec(&moved).unwrap());
    let err = c.get_service("a", "web").unwrap_err();
    assert_eq!(err.to_string(), "record /oxsdn/services/a/web is not valid: record is named \"b/web\"");
    assert!(matches!(c.list_services(), Err(Error::BadRecord { .. })));
    assert!(matches!(c.create_service("a", "db", &[tcp(80, 80)], None), Err(Error::BadRecord { .. })));
}

fn watch_services_after_list(kind: Kind) {
    let (_backing, c) = with_default_projects(kind);
    let web = c.create_service("a", "web", &[tcp(80, 80)], None).unwrap();
    let (listed, revision) = c.list_services().unwrap();
    assert_eq!(listed, [web]);
    let rx = c.watch_services(revision).unwrap();

    let db = c.create_service("b", "db", &[tcp(5432, 5432)], None).unwrap();
    assert_eq!(recv(&rx), ServiceEvent::Upsert(db));
    // Undecodable records and keys that name no service are skipped.
    raw_put(&c, &record_key::<Service>("a/junk"), b"{");
    raw_put(&c, &record_key::<Service>("nonsense"), b"{");
    assert!(c.store().txn(&[], &[Op::Delete { key: record_key::<Service>("nonsense") }]).unwrap());
    // Endpoint changes reach watchers within a second (the bound).
    let written = Instant::now();
    let with_endpoints = c.set_endpoints("a", "web", &[ip("10.128.0.5")]).unwrap();
    assert_eq!(recv(&rx), ServiceEvent::Upsert(with_endpoints));
    assert!(written.elapsed() < Duration::from_secs(1), "{:?}", written.elapsed());
    let ported = c.update_service_ports("a", "web", &[udp(53, 53)]).unwrap();
    assert_eq!(recv(&rx), ServiceEvent::Upsert(ported));
    c.delete_service("a", "web").unwrap();
    assert_eq!(recv(&rx), ServiceEvent::Deleted { project: "a".into(), name: "web".into() });
    // Changes to projects are not service events.
    c.ensure_netnamespace("c").unwrap();
    assert!(matches!(rx.recv_timeout(Duration::from_millis(200)), Err(RecvTimeoutError::Timeout)));
}

// ---- concurrency ------------------------------------------------------------------------

fn concurrent_creations_never_share_a_cluster_ip(kind: Kind) {
    const THREADS: usize = 3;
    const EACH: usize = 2;
    // Exactly as many addresses as services: a double allocation would run out.
    let (backing, _c) = with_projects(kind, "172.30.0.0/29");
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let c = Cluster::new(backing.open());
            std::thread::spawn(move || {
                (0..EACH)
                    .map(|i| c.create_service("a", &format!("s{t}-{i}"), &[tcp(80, 80)], None).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let created: Vec<Service> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let ips: HashSet<Ipv4Addr> = created.iter().map(|s| s.cluster_ip).collect();
    let ids: HashSet<u32> = created.iter().map(|s| s.id).collect();
    assert_eq!(ips.len(), THREADS * EACH);
    assert_eq!(ids, (1..=(THREADS * EACH) as u32).collect());
}

fn concurrent_requests_for_one_cluster_ip(kind: Kind) {
    let (backing, _c) = with_default_projects(kind);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let c = Cluster::new(backing.open());
            std::thread::spawn(move || c.create_service("a", &format!("s{t}"), &[tcp(80, 80)], Some(ip("172.30.1.1"))))
        })
        .collect();
    let results: Vec<Result<Service>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(Error::ClusterIpInUse { .. }))));
}

fn projects_with_services_are_not_deleted(kind: Kind) {
    let (_backing, c) = with_default_projects(kind);
    c.create_service("a", "web", &[tcp(80, 80)], None).unwrap();
    c.create_service("a", "db", &[tcp(5432, 5432)], None).unwrap();
    let before = everything(&c);
    let err = c.delete_netnamespace("a").unwrap_err();
    assert_eq!(err.to_string(), "project \"a\" still has 2 services (\"db\", \"web\"): delete its services first");
    assert_eq!(everything(&c), before);
    c.delete_service("a", "db").unwrap();
    assert_eq!(
        c.delete_netnamespace("a").unwrap_err().to_string(),
        "project \"a\" still has service \"web\": delete its services first"
    );
    c.delete_service("a", "web").unwrap();
    c.delete_netnamespace("a").unwrap();
    assert!(matches!(c.create_service("a", "web", &[tcp(80, 80)], None), Err(Error::UnknownProject(_))));
    // Other projects' services do not hold a project back.
    c.create_service("b", "web", &[tcp(80, 80)], None).unwrap();
    c.ensure_netnamespace("c").unwrap();
    c.delete_netnamespace("c").unwrap();
}

/// A service created while its project is deleted: one of the two fails, never both
/// succeed (which would leave a service without a project).
fn racing_project_deletion_leaves_no_orphan_service(kind: Kind) {
    let (backing, c) = with_default_projects(kind);
    for i in 0..10 {
        let project = format!("p{i}");
        c.ensure_netnamespace(&project).unwrap();
        let creator = {
            let (c, project) = (Cluster::new(backing.open()), project.clone());
            std::thread::spawn(move || c.create_service(&project, "web", &[tcp(80, 80)], None))
        };
        let deleted = c.delete_netnamespace(&project);
        let created = creator.join().unwrap();
        match (&created, &deleted) {
            (Ok(_), Err(Error::ProjectHasServices { .. })) => {}
            (Err(Error::UnknownProject(_)), Ok(())) => {}
            other => panic!("{project}: {other:?}"),
        }
    }
    let (projects, _) = c.list_netnamespaces().unwrap();
    let (services, _) = c.list_services().unwrap();
    for s in services {
        assert!(projects.iter().any(|p| p.name == s.project), "orphan {s:?}");
    }
}

#[test]
fn many_services_name_a_few() {
    let (_backing, c) = with_default_projects(Kind::File);
    for i in 0..7 {
        c.create_service("a", &format!("s{i}"), &[tcp(80, 80)], None).unwrap();
    }
    assert_eq!(
        c.delete_netnamespace("a").unwrap_err().to_string(),
        "project \"a\" still has 7 services (\"s0\", \"s1\", \"s2\", \"s3\", \"s4\", and 2 more): delete its services first"
    );
}

#[test]
fn batch_creation_is_all_or_nothing() {
    let (_backing, c) = with_projects(Kind::File, "172.30.0.0/16");
    let existing = c.create_service("a", "web", &[tcp(80, 8080)], None).unwrap();
    let new = |project: &str, name: &str, cluster_ip: Option<&str>| NewService {
        project: project.into(),
        name: name.into(),
        ports: vec![tcp(80, 8080)],
        cluster_ip: cluster_ip.map(ip),
        endpoints: vec![ip("10.128.0.9"), ip("10.128.0.5"), ip("10.128.0.9")],
    };
    let created = c.create_services(&[new("a", "db", Some("172.30.0.10")), new("b", "web", None)]).unwrap();
    assert_eq!(created.iter().map(|s| s.id).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(created[0].cluster_ip, ip("172.30.0.10"));
    assert_eq!(created[1].endpoints, [ip("10.128.0.5"), ip("10.128.0.9")]);
    let ips: HashSet<Ipv4Addr> = [&existing, &created[0], &created[1]].iter().map(|s| s.cluster_ip).collect();
    assert_eq!(ips.len(), 3);
    for (batch, expected) in [
        (vec![new("a", "x", None), new("a", "x", None)], "ServiceExists"),
        (vec![new("b", "x", None), new("a", "web", None)], "ServiceExists"),
        (vec![new("b", "x", None), new("nope", "y", None)], "UnknownProject"),
        (vec![new("b", "x", Some("172.30.0.7")), new("b", "y", Some("172.30.0.7"))], "ClusterIpInUse"),
    ] {
        let err = c.create_services(&batch).unwrap_err();
        assert!(format!("{err:?}").starts_with(expected), "{err:?}");
        assert_eq!(c.get_service("b", "x").unwrap(), None, "nothing of a refused batch is written");
    }
}
