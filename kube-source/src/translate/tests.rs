//! The translation on a real store (the file backend), fed watcher events of real
//! k8s-openapi objects written as the Kubernetes documentation's examples (addresses
//! moved into oxsdn's default networks: pods 10.128.0.0/14, services 172.30.0.0/16).

use std::{collections::BTreeMap, net::Ipv4Addr};

use oxsdn_controller::{
    egress_ip::NodeLease, netnamespaces::MULTICAST_ANNOTATION, store::FileStore, ClusterConfig, Service,
};
use serde::de::DeserializeOwned;

use super::*;
use crate::openshift::{self, ApiWrite, ClusterNetwork, HostSubnetWrite};

fn yaml<K: DeserializeOwned>(text: &str) -> K {
    serde_yaml_ng::from_str(text).unwrap()
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut ns: Namespace = yaml(&format!("metadata:\n  name: {name}\n"));
    ns.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    ns
}

fn node(name: &str, ip: &str) -> Node {
    yaml(&format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
status:
  addresses:
  - type: Hostname
    address: {name}
  - type: InternalIP
    address: {ip}
"
    ))
}

/// The docs' "Defining a Service" example, with the ClusterIP the API server assigned.
fn my_service(namespace: &str, cluster_ip: &str) -> KubeService {
    yaml(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: my-service
  namespace: {namespace}
spec:
  type: ClusterIP
  clusterIP: {cluster_ip}
  selector:
    app.kubernetes.io/name: MyApp
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: http-web-svc
"
    ))
}

/// The docs' EndpointSlice example, for `my-service`.
fn slice(namespace: &str, name: &str, endpoints: &[(&str, bool, bool)]) -> EndpointSlice {
    let mut text = format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    kubernetes.io/service-name: my-service
addressType: IPv4
ports:
  - name: http
    protocol: TCP
    port: 9376
endpoints:
"
    );
    for (ip, ready, terminating) in endpoints {
        text += &format!(
            "  - addresses:\n    - \"{ip}\"\n    conditions:\n      ready: {ready}\n      serving: true\n      terminating: {terminating}\n    nodeName: node-1\n"
        );
    }
    yaml(&text)
}

/// The docs' Pod with a named container port.
fn pod(namespace: &str, name: &str, app: &str) -> Pod {
    yaml(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app.kubernetes.io/name: {app}
spec:
  nodeName: node-1
  containers:
  - name: nginx
    image: nginx:stable
    ports:
      - containerPort: 9376
        name: http-web-svc
"
    ))
}

/// The docs' `test-network-policy`.
fn policy(namespace: &str) -> NetworkPolicy {
    yaml(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: {namespace}
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
"
    ))
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: std::path::PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let fixture = Fixture { _dir: dir, store };
        fixture.cluster().init_config(&ClusterConfig::default()).unwrap();
        fixture
    }

    /// A new handle on the same store (a restarted component sees what the last left).
    fn cluster(&self) -> Cluster {
        Cluster::new(std::sync::Arc::new(FileStore::open(&self.store).unwrap()))
    }

    fn translator(&self) -> Translator {
        Translator::new(self.cluster()).unwrap()
    }
}

/// A watcher's initial list (or relist) of `objects`.
fn listed<K>(objects: Vec<K>) -> Vec<Event<K>> {
    let mut events = vec![Event::Init];
    events.extend(objects.into_iter().map(Event::InitApply));
    events.push(Event::InitDone);
    events
}

fn feed<K>(t: &mut Translator, wrap: fn(Event<K>) -> Change, events: Vec<Event<K>>) {
    events.into_iter().for_each(|e| t.handle(wrap(e)));
}

/// Lists all ten kinds: the namespaces `ns`, node-1, my-service in `ns[0]` with one
/// ready endpoint, a pod in each namespace, the policy in `ns[0]`, no OpenShift objects
/// (their creation is asked for).
fn list_all(t: &mut Translator, ns: &[&str]) {
    feed(t, Change::ClusterNetwork, listed(vec![]));
    list_all_but_the_cluster_network(t, ns, vec![]);
    assert!(t.synced());
}

/// `list_all` after the ClusterNetwork, with `hostsubnets` listed.
fn list_all_but_the_cluster_network(t: &mut Translator, ns: &[&str], hostsubnets: Vec<openshift::HostSubnet>) {
    feed(t, Change::HostSubnet, listed(hostsubnets));
    feed(t, Change::EgressNetworkPolicy, listed(vec![]));
    feed(t, Change::Namespace, listed(ns.iter().map(|n| namespace(n, &[("team", "a")])).collect()));
    feed(t, Change::Node, listed(vec![node("node-1", "192.168.10.1")]));
    feed(t, Change::Service, listed(vec![my_service(ns[0], "172.30.0.10")]));
    feed(t, Change::EndpointSlice, listed(vec![slice(ns[0], "my-service-abc", &[("10.128.0.5", true, false)])]));
    feed(t, Change::Pod, listed(ns.iter().map(|n| pod(n, "web-0", "MyApp")).collect()));
    feed(t, Change::NetworkPolicy, listed(vec![policy(ns[0])]));
    feed(t, Change::NetNamespace, listed(vec![]));
}

fn projects(c: &Cluster) -> Vec<String> {
    c.list_netnamespaces().unwrap().0.into_iter().map(|n| n.name).collect()
}

fn pods(c: &Cluster) -> Vec<String> {
    c.list_pod_meta().unwrap().0.into_iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect()
}

fn service(c: &Cluster, ns: &str) -> Option<Service> {
    c.get_service(ns, "my-service").unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn objects_of_the_api_become_store_records() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing"]);
    let c = t.cluster();
    assert_eq!(projects(c), ["billing", "shop"]);
    let shop = c.get_netnamespace("shop").unwrap().unwrap();
    assert_eq!(shop.labels, BTreeMap::from([("team".to_owned(), "a".to_owned())]));
    let hs = c.get_hostsubnet("node-1").unwrap().unwrap();
    assert_eq!(hs.host_ip, ip("192.168.10.1"));
    let svc = service(c, "shop").unwrap();
    assert_eq!(svc.cluster_ip, ip("172.30.0.10"));
    // The named target port, resolved through the EndpointSlice.
    assert_eq!(
        svc.ports,
        vec![ServicePort { name: Some("http".into()), protocol: Protocol::Tcp, port: 80, target_port: 9376 }]
    );
    assert_eq!(svc.endpoints, vec![ip("10.128.0.5")]);
    let meta = c.get_pod_meta("shop", "web-0").unwrap().unwrap();
    assert_eq!(meta.labels["app.kubernetes.io/name"], "MyApp");
    assert_eq!(meta.ports[0].name, "http-web-svc");
    assert_eq!(meta.ports[0].port, 9376);
    let p = c.get_network_policy("shop", "test-network-policy").unwrap().unwrap();
    assert_eq!(p.spec.ingress.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].port, Some(IntOrString::Int(6379)));
}

#[test]
fn updates_and_deletions_follow() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    // Labels replaced, a second endpoint, a node's new address, a relabelled pod.
    t.handle(Change::Namespace(Event::Apply(namespace("shop", &[("team", "b")]))));
    t.handle(Change::EndpointSlice(Event::Apply(slice(
        "shop",
        "my-service-abc",
        &[("10.128.0.5", true, false), ("10.128.0.6", true, false)],
    ))));
    t.handle(Change::Node(Event::Apply(node("node-1", "192.168.10.9"))));
    t.handle(Change::Pod(Event::Apply(pod("shop", "web-0", "Other"))));
    let c = f.cluster();
    assert_eq!(c.get_netnamespace("shop").unwrap().unwrap().labels["team"], "b");
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.0.5"), ip("10.128.0.6")]);
    assert_eq!(c.get_hostsubnet("node-1").unwrap().unwrap().host_ip, ip("192.168.10.9"));
    assert_eq!(c.get_pod_meta("shop", "web-0").unwrap().unwrap().labels["app.kubernetes.io/name"], "Other");

    t.handle(Change::NetworkPolicy(Event::Delete(policy("shop"))));
    t.handle(Change::Pod(Event::Delete(pod("shop", "web-0", "Other"))));
    t.handle(Change::Node(Event::Delete(node("node-1", "192.168.10.9"))));
    t.handle(Change::Service(Event::Delete(my_service("shop", "172.30.0.10"))));
    assert!(c.list_network_policies(None).unwrap().0.is_empty());
    assert!(pods(&c).is_empty());
    assert!(c.list_hostsubnets().unwrap().0.is_empty());
    assert_eq!(service(&c, "shop"), None);
    assert_eq!(projects(&c), ["shop"]);
    assert_eq!(t.pending(), 0);
}

#[test]
fn replayed_events_write_nothing() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing"]);
    let revision = f.cluster().store().list("").unwrap().revision;
    // What a watch resumed from an older resourceVersion delivers again.
    list_all(&mut t, &["shop", "billing"]);
    t.handle(Change::Pod(Event::Apply(pod("shop", "web-0", "MyApp"))));
    t.handle(Change::Service(Event::Apply(my_service("shop", "172.30.0.10"))));
    assert_eq!(f.cluster().store().list("").unwrap().revision, revision);
}

#[test]
fn a_relist_after_410_removes_what_was_deleted_while_away() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing"]);
    let vnid = f.cluster().get_netnamespace("shop").unwrap().unwrap().netid;
    // The watch expired (410 Gone); meanwhile billing, node-1, the policy and the
    // service's only endpoint went, and a pod came.
    feed(&mut t, Change::Namespace, listed(vec![namespace("shop", &[("team", "a")])]));
    feed(&mut t, Change::Node, listed(vec![]));
    feed(&mut t, Change::NetworkPolicy, listed(vec![]));
    feed(&mut t, Change::EndpointSlice, listed(vec![slice("shop", "my-service-abc", &[])]));
    feed(&mut t, Change::Pod, listed(vec![pod("shop", "web-0", "MyApp"), pod("shop", "web-1", "MyApp")]));
    let c = f.cluster();
    assert_eq!(projects(&c), ["shop"]);
    assert_eq!(c.get_netnamespace("shop").unwrap().unwrap().netid, vnid, "a listed project keeps its VNID");
    assert!(c.list_hostsubnets().unwrap().0.is_empty());
    assert!(c.list_network_policies(None).unwrap().0.is_empty());
    assert_eq!(service(&c, "shop").unwrap().endpoints, Vec::<Ipv4Addr>::new());
    assert_eq!(pods(&c), ["shop/web-0", "shop/web-1"]);
}

#[test]
fn a_relist_in_progress_changes_nothing_until_it_completes() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    t.handle(Change::Pod(Event::Init));
    t.handle(Change::Pod(Event::InitApply(pod("shop", "web-1", "MyApp"))));
    assert_eq!(pods(&f.cluster()), ["shop/web-0"]);
    t.handle(Change::Pod(Event::InitDone));
    assert_eq!(pods(&f.cluster()), ["shop/web-1"]);
}

#[test]
fn a_restart_corrects_a_stale_store_without_emptying_services_first() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing"]);
    let c = f.cluster();
    // What the API no longer has, left in the store (written by hand or a past run).
    c.create_netnamespace("gone", BTreeMap::new()).unwrap();
    c.create_service("gone", "old", &[ServicePort::new(Protocol::Tcp, 80, 80)], None).unwrap();
    c.register_node("node-gone", ip("192.168.10.2")).unwrap();
    let shop_vnid = c.get_netnamespace("shop").unwrap().unwrap().netid;
    drop(t);

    // A new replica starts: until both Services and EndpointSlices are listed, the
    // service keeps its endpoints (the dataplanes keep forwarding to them).
    let mut t = f.translator();
    feed(&mut t, Change::ClusterNetwork, listed(vec![ClusterNetwork::of(&ClusterConfig::default())]));
    feed(&mut t, Change::NetNamespace, listed(vec![]));
    feed(&mut t, Change::Namespace, listed(vec![namespace("shop", &[("team", "a")])]));
    feed(&mut t, Change::Service, listed(vec![my_service("shop", "172.30.0.10")]));
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.0.5")]);
    assert_eq!(projects(&c), ["shop"], "projects the API does not have are gone, with their services");
    assert_eq!(c.get_service("gone", "old").unwrap(), None);
    assert_eq!(c.get_netnamespace("shop").unwrap().unwrap().netid, shop_vnid);
    assert_eq!(pods(&c), ["shop/web-0"], "a deleted project's pods went with it");
    feed(&mut t, Change::EndpointSlice, listed(vec![slice("shop", "my-service-abc", &[("10.128.0.7", true, false)])]));
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.0.7")]);
    feed(&mut t, Change::Node, listed(vec![node("node-1", "192.168.10.1")]));
    feed(&mut t, Change::HostSubnet, listed(vec![]));
    let nodes: Vec<String> = c.list_hostsubnets().unwrap().0.into_iter().map(|h| h.host).collect();
    assert_eq!(nodes, ["node-1"]);
}

#[test]
fn a_deleted_namespace_takes_its_objects_whatever_order_their_deletions_come_in() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing"]);
    // Kubernetes marks the namespace terminating, deletes its contents, then the
    // namespace; here the namespace's deletion is seen first, then a pod's last update
    // (terminating), then the deletions.
    t.handle(Change::Namespace(Event::Delete(namespace("shop", &[]))));
    let c = f.cluster();
    assert_eq!(projects(&c), ["billing"]);
    assert_eq!(service(&c, "shop"), None);
    assert_eq!(pods(&c), ["billing/web-0"]);
    assert!(c.list_network_policies(None).unwrap().0.is_empty());
    t.handle(Change::Pod(Event::Apply(pod("shop", "web-0", "MyApp"))));
    t.handle(Change::EndpointSlice(Event::Apply(slice("shop", "my-service-abc", &[("10.128.0.5", false, true)]))));
    assert_eq!(pods(&c), ["billing/web-0"], "no record comes back for a pod of a deleted namespace");
    assert_eq!(service(&c, "shop"), None);
    t.handle(Change::Pod(Event::Delete(pod("shop", "web-0", "MyApp"))));
    t.handle(Change::Service(Event::Delete(my_service("shop", "172.30.0.10"))));
    assert_eq!(projects(&c), ["billing"]);
    assert_eq!(t.pending(), 0);
    // The namespace is created again: a new project, its objects with it.
    t.handle(Change::Namespace(Event::Apply(namespace("shop", &[]))));
    t.handle(Change::Pod(Event::Apply(pod("shop", "web-0", "MyApp"))));
    assert_eq!(pods(&c), ["billing/web-0", "shop/web-0"]);
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    let c = f.cluster();
    let update = |t: &mut Translator, endpoints: &[(&str, bool, bool)]| {
        t.handle(Change::EndpointSlice(Event::Apply(slice("shop", "my-service-abc", endpoints))));
    };
    update(&mut t, &[("10.128.0.5", false, true), ("10.128.0.6", true, false)]);
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.0.6")]);
    update(&mut t, &[("10.128.0.5", false, true), ("10.128.0.6", false, true)]);
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.0.5"), ip("10.128.0.6")]);
    // A second slice of the same service adds its endpoints; one outside the cluster
    // network (a host-network pod) is left out.
    t.handle(Change::EndpointSlice(Event::Apply(slice(
        "shop",
        "my-service-def",
        &[("10.128.1.1", true, false), ("192.168.10.1", true, false)],
    ))));
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.1.1")]);
}

#[test]
fn headless_externalname_and_sctp_only_services_are_not_carried() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    let c = f.cluster();
    let mut headless = my_service("shop", "None");
    headless.metadata.name = Some("headless".into());
    let external: KubeService = yaml(
        "metadata: {name: db, namespace: shop}
spec: {type: ExternalName, externalName: my.database.example.com}",
    );
    let mut sctp = my_service("shop", "172.30.0.11");
    sctp.metadata.name = Some("sctp".into());
    sctp.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("SCTP".into());
    for s in [headless, external, sctp] {
        t.handle(Change::Service(Event::Apply(s)));
    }
    let names: Vec<String> = c.list_services().unwrap().0.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["my-service"]);
    // A service turned headless-less: its type changed to ExternalName, it goes.
    let mut now_external = my_service("shop", "172.30.0.10");
    now_external.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    t.handle(Change::Service(Event::Apply(now_external)));
    assert!(c.list_services().unwrap().0.is_empty());
}

#[test]
fn a_service_recreated_while_away_gets_its_new_cluster_ip() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    feed(&mut t, Change::Service, listed(vec![my_service("shop", "172.30.0.99")]));
    let svc = service(&f.cluster(), "shop").unwrap();
    assert_eq!(svc.cluster_ip, ip("172.30.0.99"));
    assert_eq!(svc.endpoints, vec![ip("10.128.0.5")]);
}

#[test]
fn objects_the_store_refuses_are_left_out_and_the_rest_goes_on() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    // A ClusterIP outside the store's service network: a configuration mismatch.
    let mut outside = my_service("shop", "10.96.0.10");
    outside.metadata.name = Some("outside".into());
    t.handle(Change::Service(Event::Apply(outside)));
    t.handle(Change::Pod(Event::Apply(pod("shop", "web-1", "MyApp"))));
    let c = f.cluster();
    assert_eq!(c.get_service("shop", "outside").unwrap(), None);
    assert_eq!(pods(&c), ["shop/web-0", "shop/web-1"]);
    assert_eq!(t.pending(), 0, "a refusal is not retried");
}

fn netnamespace(name: &str, netid: u32, change_network: Option<&str>) -> openshift::NetNamespace {
    let mut object = openshift::NetNamespace::new(name, netid);
    if let Some(value) = change_network {
        object.metadata.annotations =
            Some(BTreeMap::from([(openshift::CHANGE_NETWORK_ANNOTATION.to_owned(), value.to_owned())]));
    }
    object
}

fn netid(c: &Cluster, project: &str) -> u32 {
    c.get_netnamespace(project).unwrap().unwrap().netid
}

#[test]
fn netnamespace_objects_follow_the_projects() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing"]);
    let c = f.cluster();
    assert_eq!(
        netnamespace_writes(&mut t),
        vec![
            NetNamespaceWrite::Create { name: "billing".into(), netid: netid(&c, "billing") },
            NetNamespaceWrite::Create { name: "shop".into(), netid: netid(&c, "shop") },
        ]
    );
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("shop", netid(&c, "shop"), None))));
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("billing", netid(&c, "billing"), None))));
    assert_eq!(t.take_api_writes(), vec![]);
    // One with a NETID no project may have is corrected.
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("billing", 5, None))));
    let update =
        NetNamespaceWrite::Update { name: "billing".into(), netid: netid(&c, "billing"), clear_change_network: false };
    assert_eq!(netnamespace_writes(&mut t), vec![update]);
    t.handle(Change::Namespace(Event::Delete(namespace("billing", &[]))));
    assert_eq!(netnamespace_writes(&mut t), vec![NetNamespaceWrite::Delete { name: "billing".into() }]);
}

/// The NetNamespace writes asked for since the last call, sorted.
fn netnamespace_writes(t: &mut Translator) -> Vec<NetNamespaceWrite> {
    let mut writes: Vec<NetNamespaceWrite> = t
        .take_api_writes()
        .into_iter()
        .filter_map(|w| match w {
            ApiWrite::NetNamespace(w) => Some(w),
            _ => None,
        })
        .collect();
    writes.sort_by_key(|w| format!("{w:?}"));
    writes
}

#[test]
fn netid_changes_made_by_openshifts_master_are_followed() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing", "infra"]);
    let c = f.cluster();
    for name in ["shop", "billing", "infra"] {
        t.handle(Change::NetNamespace(Event::Apply(netnamespace(name, netid(&c, name), None))));
    }
    t.take_api_writes();
    let shop = netid(&c, "shop");
    // The master joined billing to shop, made infra global, then gave shop a new VNID:
    // the annotation already removed, only the NETIDs changed.
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("billing", shop, None))));
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("infra", 0, None))));
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("shop", 777, None))));
    assert_eq!((netid(&c, "billing"), netid(&c, "infra"), netid(&c, "shop")), (shop, 0, 777));
    assert_eq!(t.take_api_writes(), vec![], "the objects are left as the master wrote them");
    // The same after a relist (the watch was away while the master changed them).
    feed(
        &mut t,
        Change::NetNamespace,
        listed(vec![
            netnamespace("shop", 777, None),
            netnamespace("billing", 777, None),
            netnamespace("infra", 0, None),
        ]),
    );
    assert_eq!(netid(&c, "billing"), 777);
    assert_eq!(t.take_api_writes(), vec![]);
}

#[test]
fn the_change_network_annotation_is_applied_then_removed() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop", "billing", "infra"]);
    let c = f.cluster();
    t.take_api_writes();
    let shop = netid(&c, "shop");
    let billing = netid(&c, "billing");
    let request = |t: &mut Translator, name: &str, value: &str| {
        t.handle(Change::NetNamespace(Event::Apply(netnamespace(name, netid(&c, name), Some(value)))));
        let writes = netnamespace_writes(t);
        assert_eq!(
            writes,
            vec![NetNamespaceWrite::Update { name: name.into(), netid: netid(&c, name), clear_change_network: true }],
            "{name} {value}"
        );
    };
    request(&mut t, "billing", "join:shop");
    assert_eq!(netid(&c, "billing"), shop);
    request(&mut t, "billing", "isolate");
    assert_ne!(netid(&c, "billing"), shop);
    assert_ne!(netid(&c, "billing"), 0);
    request(&mut t, "infra", "global");
    assert_eq!(netid(&c, "infra"), 0);
    // A request that cannot succeed is removed all the same (oc would wait forever).
    let before = netid(&c, "shop");
    request(&mut t, "shop", "join:no-such-project");
    request(&mut t, "shop", "bogus");
    assert_eq!(netid(&c, "shop"), before);
    assert_ne!(billing, 0);
}

#[test]
fn a_new_project_adopts_the_netid_of_its_netnamespace() {
    // OpenShift's master assigned these; the watches may list either kind first.
    for netnamespaces_first in [true, false] {
        let f = Fixture::new();
        let mut t = f.translator();
        feed(&mut t, Change::ClusterNetwork, listed(vec![]));
        let objects = || listed(vec![netnamespace("shop", 4242, None), netnamespace("infra", 0, None)]);
        if netnamespaces_first {
            feed(&mut t, Change::NetNamespace, objects());
        }
        feed(
            &mut t,
            Change::Namespace,
            listed(vec![namespace("shop", &[]), namespace("infra", &[]), namespace("new", &[])]),
        );
        if !netnamespaces_first {
            feed(&mut t, Change::NetNamespace, objects());
        }
        let c = f.cluster();
        assert_eq!(netid(&c, "shop"), 4242, "NetNamespaces listed first: {netnamespaces_first}");
        assert_eq!(netid(&c, "infra"), 0, "NetNamespaces listed first: {netnamespaces_first}");
        assert!(![0, 4242].contains(&netid(&c, "new")));
        assert_eq!(
            netnamespace_writes(&mut t),
            vec![NetNamespaceWrite::Create { name: "new".into(), netid: netid(&c, "new") }]
        );
    }
}

/// The object OpenShift's master writes for node `name`.
fn hostsubnet(name: &str, ip: &str, subnet: &str) -> openshift::HostSubnet {
    yaml(&format!(
        "apiVersion: network.openshift.io/v1
kind: HostSubnet
metadata:
  name: {name}
  annotations:
    pod.network.openshift.io/node-uid: 8f3c1a52-0000-4000-8000-{name:0>12}
host: {name}
hostIP: {ip}
subnet: {subnet}
"
    ))
}

fn subnet_of(c: &Cluster, node: &str) -> Option<String> {
    c.get_hostsubnet(node).unwrap().map(|hs| hs.subnet.to_string())
}

fn hostsubnet_writes(t: &mut Translator) -> Vec<HostSubnetWrite> {
    t.take_api_writes()
        .into_iter()
        .filter_map(|w| match w {
            ApiWrite::HostSubnet(w) => Some(w),
            _ => None,
        })
        .collect()
}

#[test]
fn nodes_adopt_the_subnets_of_openshifts_hostsubnets_and_follow_their_changes() {
    let f = Fixture::new();
    let mut t = f.translator();
    // At a migration: node-1's subnet is the master's.
    feed(&mut t, Change::ClusterNetwork, listed(vec![]));
    list_all_but_the_cluster_network(&mut t, &["shop"], vec![hostsubnet("node-1", "192.168.10.1", "10.130.0.0/23")]);
    let c = f.cluster();
    assert_eq!(subnet_of(&c, "node-1").as_deref(), Some("10.130.0.0/23"));
    assert_eq!(hostsubnet_writes(&mut t), vec![], "the master's object is left as it is");
    // The master moved it (node deleted and created again while oxsdn-kube was away).
    t.handle(Change::HostSubnet(Event::Apply(hostsubnet("node-1", "192.168.10.1", "10.131.2.0/23"))));
    assert_eq!(subnet_of(&c, "node-1").as_deref(), Some("10.131.2.0/23"));
    // The node's address changed: the store follows the Node, the object is updated as
    // the master updates it, the subnet kept.
    t.handle(Change::Node(Event::Apply(node("node-1", "192.168.10.7"))));
    assert_eq!(c.get_hostsubnet("node-1").unwrap().unwrap().host_ip, ip("192.168.10.7"));
    assert_eq!(subnet_of(&c, "node-1").as_deref(), Some("10.131.2.0/23"));
    assert_eq!(
        hostsubnet_writes(&mut t),
        vec![HostSubnetWrite::UpdateHostIp { name: "node-1".into(), host_ip: ip("192.168.10.7") }]
    );
    // Deleted with its node.
    t.handle(Change::Node(Event::Delete(node("node-1", "192.168.10.7"))));
    assert_eq!(subnet_of(&c, "node-1"), None);
    assert_eq!(hostsubnet_writes(&mut t), vec![HostSubnetWrite::Delete { name: "node-1".into() }]);
}

#[test]
fn hostsubnets_outside_the_cluster_network_or_overlapping_are_not_adopted() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    let c = f.cluster();
    let node_1 = subnet_of(&c, "node-1").unwrap();
    for (name, ip, subnet) in [
        ("node-2", "192.168.10.2", "10.200.0.0/23"), // outside 10.128.0.0/14
        ("node-3", "192.168.10.3", node_1.as_str()), // node-1's
        ("node-4", "192.168.10.4", "10.129.0.0/24"), // not a /23
        ("node-5", "192.168.10.5", "not-a-cidr"),
    ] {
        t.handle(Change::HostSubnet(Event::Apply(hostsubnet(name, ip, subnet))));
        t.handle(Change::Node(Event::Apply(node(name, ip))));
        assert_eq!(subnet_of(&c, name), None, "{name} {subnet}");
    }
    // A valid change made later is adopted; an invalid one leaves the node as it was.
    t.handle(Change::HostSubnet(Event::Apply(hostsubnet("node-2", "192.168.10.2", "10.129.4.0/23"))));
    assert_eq!(subnet_of(&c, "node-2").as_deref(), Some("10.129.4.0/23"));
    t.handle(Change::HostSubnet(Event::Apply(hostsubnet("node-2", "192.168.10.2", node_1.as_str()))));
    assert_eq!(subnet_of(&c, "node-2").as_deref(), Some("10.129.4.0/23"));
    assert_eq!(subnet_of(&c, "node-1"), Some(node_1));
    assert_eq!(t.pending(), 0, "a refusal is not retried");
}

#[test]
fn nodes_without_a_hostsubnet_get_one_openshifts_master_accepts() {
    let f = Fixture::new();
    let mut t = f.translator();
    let mut node_1 = node("node-1", "192.168.10.1");
    node_1.metadata.uid = Some("6a0e1c7e-uid-of-node-1".into());
    feed(&mut t, Change::ClusterNetwork, listed(vec![]));
    feed(&mut t, Change::HostSubnet, listed(vec![]));
    feed(&mut t, Change::Node, listed(vec![node_1]));
    let c = f.cluster();
    let subnet = c.get_hostsubnet("node-1").unwrap().unwrap().subnet;
    let writes = hostsubnet_writes(&mut t);
    let [HostSubnetWrite::Create { name, host_ip, subnet: written, node_uid }] = &writes[..] else {
        panic!("{writes:?}")
    };
    assert_eq!((name.as_str(), *host_ip, *written), ("node-1", ip("192.168.10.1"), subnet));
    // The object as OpenShift's master writes it (host, hostIP, subnet; the Node's UID,
    // so its reconciliation keeps it and deletes it with the Node).
    let object = openshift::HostSubnet::new(name, *host_ip, *written, node_uid.as_deref());
    let json = serde_json::to_value(&object).unwrap();
    assert_eq!(json["apiVersion"], "network.openshift.io/v1");
    assert_eq!(json["kind"], "HostSubnet");
    assert_eq!(json["host"], "node-1");
    assert_eq!(json["hostIP"], "192.168.10.1");
    assert_eq!(json["subnet"], subnet.to_string());
    assert_eq!(json["metadata"]["annotations"][openshift::NODE_UID_ANNOTATION], "6a0e1c7e-uid-of-node-1");
    // Once it is there, nothing more is asked for, and the subnet stays.
    t.handle(Change::HostSubnet(Event::Apply(object)));
    assert_eq!(hostsubnet_writes(&mut t), vec![]);
    assert_eq!(c.get_hostsubnet("node-1").unwrap().unwrap().subnet, subnet);
    // One without the annotation and without a Node (F5, by hand) is not deleted.
    let mut f5 = hostsubnet("f5", "192.168.10.50", "10.129.8.0/23");
    f5.metadata.annotations = None;
    t.handle(Change::HostSubnet(Event::Apply(f5)));
    assert_eq!(hostsubnet_writes(&mut t), vec![]);
}

#[test]
fn the_cluster_network_is_checked_before_anything_is_written_and_created_when_absent() {
    let f = Fixture::new();
    let mut t = f.translator();
    let config = ClusterConfig::default();
    // OpenShift's master runs another plugin and host subnet size.
    let mut theirs: ClusterNetwork = yaml(
        "apiVersion: network.openshift.io/v1
kind: ClusterNetwork
metadata:
  name: default
clusterNetworks:
- CIDR: 10.128.0.0/14
  hostSubnetLength: 8
hostsubnetlength: 8
network: 10.128.0.0/14
serviceNetwork: 172.30.0.0/16
pluginName: redhat/openshift-ovs-subnet
vxlanPort: 4789
",
    );
    feed(&mut t, Change::ClusterNetwork, listed(vec![theirs.clone()]));
    list_all_but_the_cluster_network(&mut t, &["shop"], vec![]);
    let mismatch = t.config_mismatch().unwrap().join("\n");
    assert!(
        mismatch.contains("clusterNetworks: [10.128.0.0/14+8] in the ClusterNetwork, [10.128.0.0/14+9]"),
        "{mismatch}"
    );
    assert!(mismatch.contains("pluginName"), "{mismatch}");
    let c = f.cluster();
    assert!(projects(&c).is_empty(), "nothing written");
    assert!(c.list_hostsubnets().unwrap().0.is_empty());
    assert_eq!(t.take_api_writes(), vec![]);
    // Corrected (here, by the administrator): everything is written.
    theirs.cluster_networks[0].host_subnet_length = 9;
    theirs.host_subnet_length = Some(9);
    theirs.plugin_name = Some(config.network_plugin.openshift_name());
    t.handle(Change::ClusterNetwork(Event::Apply(theirs)));
    assert_eq!(t.config_mismatch(), None);
    assert_eq!(projects(&c), ["shop"]);
    assert!(c.get_hostsubnet("node-1").unwrap().is_some());
    // Absent (oxsdn is the only master): created from oxsdn's configuration.
    t.take_api_writes();
    t.handle(Change::ClusterNetwork(Event::Delete(ClusterNetwork::of(&config))));
    let written = ClusterNetwork::of(&config);
    assert_eq!(t.take_api_writes(), vec![ApiWrite::CreateClusterNetwork(Box::new(written.clone()))]);
    let json = serde_json::to_value(&written).unwrap();
    assert_eq!(json["network"], "10.128.0.0/14");
    assert_eq!(json["hostsubnetlength"], 9);
    assert_eq!(json["clusterNetworks"][0]["CIDR"], "10.128.0.0/14");
    assert_eq!(json["serviceNetwork"], "172.30.0.0/16");
    assert_eq!(json["pluginName"], "redhat/openshift-ovs-multitenant");
    assert_eq!(written.differences(&config), Vec::<String>::new());
}

/// The EgressNetworkPolicy example of OpenShift's documentation.
fn egress_policy(namespace: &str, name: &str) -> openshift::EgressNetworkPolicy {
    yaml(&format!(
        "apiVersion: network.openshift.io/v1
kind: EgressNetworkPolicy
metadata:
  name: {name}
  namespace: {namespace}
spec:
  egress:
  - type: Allow
    to:
      cidrSelector: 1.2.3.0/24
  - type: Allow
    to:
      dnsName: www.example.com
  - type: Deny
    to:
      cidrSelector: 0.0.0.0/0
"
    ))
}

#[test]
fn egress_network_policies_of_the_api_become_the_projects_egress_firewalls() {
    let f = Fixture::new();
    let mut t = f.translator();
    // Listed before the namespace: written once it is.
    feed(&mut t, Change::EgressNetworkPolicy, listed(vec![egress_policy("shop", "default")]));
    list_all_but_egress(&mut t);
    let c = f.cluster();
    let policy = c.get_egress_policy("shop").unwrap().unwrap();
    assert_eq!(policy.name, "default");
    assert_eq!(policy.spec, egress_policy("shop", "default").spec);
    // Updated: the rules follow.
    let mut allow_all = egress_policy("shop", "default");
    allow_all.spec.egress.truncate(1);
    t.handle(Change::EgressNetworkPolicy(Event::Apply(allow_all.clone())));
    assert_eq!(c.get_egress_policy("shop").unwrap().unwrap().spec, allow_all.spec);
    // A second one in the project: all egress dropped, as OpenShift does.
    t.handle(Change::EgressNetworkPolicy(Event::Apply(egress_policy("shop", "second"))));
    assert_eq!(c.get_egress_policy("shop").unwrap().unwrap().spec, deny_all());
    t.handle(Change::EgressNetworkPolicy(Event::Delete(egress_policy("shop", "default"))));
    let policy = c.get_egress_policy("shop").unwrap().unwrap();
    assert_eq!((policy.name.as_str(), &policy.spec), ("second", &egress_policy("shop", "second").spec));
    // An invalid one (a rule with both a CIDR and a DNS name): all egress dropped too.
    let mut invalid = egress_policy("shop", "second");
    invalid.spec.egress[0].to.dns_name = Some("www.example.com".into());
    t.handle(Change::EgressNetworkPolicy(Event::Apply(invalid)));
    assert_eq!(c.get_egress_policy("shop").unwrap().unwrap().spec, deny_all());
    // Deleted: the project has none; after a relist that misses one, neither.
    t.handle(Change::EgressNetworkPolicy(Event::Delete(egress_policy("shop", "second"))));
    assert_eq!(c.get_egress_policy("shop").unwrap(), None);
    t.handle(Change::EgressNetworkPolicy(Event::Apply(egress_policy("shop", "default"))));
    feed(&mut t, Change::EgressNetworkPolicy, listed(vec![]));
    assert_eq!(c.get_egress_policy("shop").unwrap(), None);
    // In a global project: refused by the store (OpenShift ignores it), the rest goes on.
    t.handle(Change::NetNamespace(Event::Apply(netnamespace("shop", 0, None))));
    t.handle(Change::EgressNetworkPolicy(Event::Apply(egress_policy("shop", "default"))));
    assert_eq!(c.get_egress_policy("shop").unwrap(), None);
    assert_eq!(t.pending(), 0);
}

/// `list_all(["shop"])` with the EgressNetworkPolicies already listed.
fn list_all_but_egress(t: &mut Translator) {
    feed(t, Change::ClusterNetwork, listed(vec![]));
    feed(t, Change::HostSubnet, listed(vec![]));
    feed(t, Change::Namespace, listed(vec![namespace("shop", &[])]));
    feed(t, Change::NetNamespace, listed(vec![]));
}

#[test]
fn nothing_is_written_until_the_cluster_network_is_listed_whatever_the_order() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all_but_the_cluster_network(&mut t, &["shop"], vec![]);
    let c = f.cluster();
    assert!(projects(&c).is_empty());
    assert_eq!(t.take_api_writes(), vec![]);
    feed(&mut t, Change::ClusterNetwork, listed(vec![]));
    assert_eq!(projects(&c), ["shop"]);
    assert_eq!(service(&c, "shop").unwrap().endpoints, vec![ip("10.128.0.5")]);
    assert!(c.get_hostsubnet("node-1").unwrap().is_some());
}

#[test]
fn egress_ips_and_multicast_of_openshifts_objects_become_the_projects_and_nodes() {
    let f = Fixture::new();
    let mut t = f.translator();
    list_all(&mut t, &["shop"]);
    let c = f.cluster();
    // node-1's agent reports its underlay network, where egress IPs can be held.
    let network = "192.168.10.0/24".parse().unwrap();
    c.renew_lease(&NodeLease { node: "node-1".into(), network, beat: 1 }).unwrap();
    let mut subnet = hostsubnet("node-1", "192.168.10.1", &subnet_of(&c, "node-1").unwrap());
    subnet.egress_cidrs = vec!["192.168.10.128/25".into()];
    t.handle(Change::HostSubnet(Event::Apply(subnet.clone())));
    let mut object = netnamespace("shop", netid(&c, "shop"), None);
    object.egress_ips = vec!["192.168.10.200".into()];
    object.metadata.annotations = Some(BTreeMap::from([
        (MULTICAST_ANNOTATION.to_owned(), "true".to_owned()),
        ("example.com/not-ours".to_owned(), "x".to_owned()),
    ]));
    t.handle(Change::NetNamespace(Event::Apply(object.clone())));
    let egress_of_shop = |c: &Cluster| {
        let (all, _) = c.list_project_egress_ips().unwrap();
        all.into_iter().find(|p| p.project == "shop").map(|p| p.egress_ips).unwrap_or_default()
    };
    assert_eq!(egress_of_shop(&c), [ip("192.168.10.200")]);
    let (nodes, _) = c.list_node_egress().unwrap();
    assert_eq!(nodes[0].egress_cidrs, ["192.168.10.128/25".parse().unwrap()]);
    let shop = c.get_netnamespace("shop").unwrap().unwrap();
    assert!(shop.multicast_enabled());
    assert!(!shop.annotations.contains_key("example.com/not-ours"), "only OpenShift's settings are copied");
    // One the store refuses (outside every node's network) is left out; the rest follows.
    object.egress_ips = vec!["10.99.0.1".into()];
    object.metadata.annotations = None;
    t.handle(Change::NetNamespace(Event::Apply(object.clone())));
    assert_eq!(egress_of_shop(&c), [ip("192.168.10.200")]);
    assert!(!c.get_netnamespace("shop").unwrap().unwrap().multicast_enabled());
    // Removed from the objects: removed from the store.
    object.egress_ips = vec![];
    t.handle(Change::NetNamespace(Event::Apply(object)));
    assert_eq!(egress_of_shop(&c), Vec::<Ipv4Addr>::new());
    subnet.egress_cidrs = vec![];
    t.handle(Change::HostSubnet(Event::Apply(subnet)));
    assert_eq!(c.list_node_egress().unwrap().0, vec![]);
}
