//! End to end: oxsdn-kube's translation, fed the watcher events the API would send,
//! drives real agents and pods in network namespaces (the harness's `TestCluster`): a
//! Service created "in the API" becomes reachable from a pod, and a NetworkPolicy applied
//! "in the API" is enforced, then lifted when deleted; the change-network annotation of
//! a NetNamespace joins two projects, and a NETID changed by OpenShift's master isolates
//! them again; an EgressNetworkPolicy of the API is the project's egress firewall.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use futures::stream;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use kube::runtime::watcher::Event;
use oxsdn_controller::{store, store::StoreOptions, Cluster};
use oxsdn_kube::{
    openshift::{self, ApiWrite, NetNamespaceWrite, CHANGE_NETWORK_ANNOTATION},
    run,
    translate::{Change, Translator},
};
use oxsdn_tests::{
    cluster::{StoreArgs, EXTERNAL_HOST},
    probe::{serve_identity, serve_whoami, whoami_tcp, IdentityClient},
    TestCluster,
};
use serde_json::json;

const CLUSTER_IP: &str = "172.30.0.80";

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

fn namespace(name: &str) -> Namespace {
    object(json!({"metadata": {"name": name}}))
}

fn node(name: &str, ip: Ipv4Addr) -> Node {
    object(
        json!({"metadata": {"name": name}, "status": {"addresses": [{"type": "InternalIP", "address": ip.to_string()}]}}),
    )
}

fn pod(namespace: &str, name: &str, app: &str, node: &str) -> Pod {
    object(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]}
    }))
}

fn service(namespace: &str) -> Service {
    object(json!({
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"type": "ClusterIP", "clusterIP": CLUSTER_IP, "selector": {"app": "web"},
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}]}
    }))
}

fn slice(namespace: &str, endpoint: Ipv4Addr) -> EndpointSlice {
    object(json!({
        "metadata": {"name": "web-x1", "namespace": namespace, "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": [endpoint.to_string()], "conditions": {"ready": true}}]
    }))
}

/// Only pods labelled app=client of the namespace may reach app=web.
fn clients_only(namespace: &str) -> NetworkPolicy {
    object(json!({
        "metadata": {"name": "clients-only", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}
    }))
}

fn listed<K>(objects: Vec<K>, wrap: fn(Event<K>) -> Change) -> Vec<Change> {
    let mut events = vec![wrap(Event::Init)];
    events.extend(objects.into_iter().map(|o| wrap(Event::InitApply(o))));
    events.push(wrap(Event::InitDone));
    events
}

/// The test cluster's store, as oxsdn-kube opens it.
fn open_store(store: &StoreArgs) -> Result<Cluster> {
    let StoreArgs::File(dir) = store else { anyhow::bail!("the test cluster runs on the file store") };
    let options = StoreOptions { store: dir.clone(), ..StoreOptions::default() };
    Ok(Cluster::new(store::open(&options.backend()?)?))
}

/// Sends `changes` through the product's path (`run::follow`: the translation thread)
/// and waits for it to finish them.
fn follow(translator: Translator, changes: Vec<Change>) -> Result<Translator> {
    let (translator, _) = follow_writing(translator, changes)?;
    Ok(translator)
}

/// `follow`, also returning the writes to NetNamespace objects it asked for.
fn follow_writing(translator: Translator, changes: Vec<Change>) -> Result<(Translator, Vec<NetNamespaceWrite>)> {
    let (translator, writes) = follow_writing_all(translator, changes)?;
    let netnamespaces = writes
        .into_iter()
        .filter_map(|w| match w {
            ApiWrite::NetNamespace(w) => Some(w),
            _ => None,
        })
        .collect();
    Ok((translator, netnamespaces))
}

/// `follow`, also returning every write to the API it asked for.
fn follow_writing_all(translator: Translator, changes: Vec<Change>) -> Result<(Translator, Vec<ApiWrite>)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let writes = Arc::new(Mutex::new(Vec::new()));
    let sink = writes.clone();
    let translator =
        runtime.block_on(run::follow(translator, stream::iter(changes), move |w| sink.lock().unwrap().push(w)))?;
    let writes = std::mem::take(&mut *writes.lock().unwrap());
    Ok((translator, writes))
}

/// Whether `from` gets an answer from `to:port`, asking until the answer is `expected`
/// or `within` has passed.
fn answers(from: &oxsdn_tests::Pod, to: Ipv4Addr, port: u16, expected: bool, within: Duration) -> bool {
    let start = Instant::now();
    loop {
        let answered = IdentityClient::connect(&from.netns, to, port).and_then(|mut c| c.ask()).is_ok();
        if answered == expected || start.elapsed() > within {
            return answered;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `answers` from the service.
fn reaches(from: &oxsdn_tests::Pod, expected: bool, within: Duration) -> bool {
    answers(from, CLUSTER_IP.parse().unwrap(), 80, expected, within)
}

#[test]
fn services_and_policies_of_the_api_reach_the_dataplane() -> Result<()> {
    let mut cluster = TestCluster::new(&["--network-plugin", "networkpolicy"])?;
    cluster.add_node("n1")?;
    cluster.add_node("n2")?;
    let web = cluster.node("n1").add_pod("shop", "web-0")?;
    serve_identity(&web.netns, 8080, "web-0")?;
    let client = cluster.node("n2").add_pod("shop", "client-0")?;
    let other = cluster.node("n2").add_pod("shop", "other-0")?;
    let nodes: Vec<Node> = cluster.nodes.iter().map(|n| node(&n.name, n.ip)).collect();
    let pods = vec![
        pod("shop", "web-0", "web", "n1"),
        pod("shop", "client-0", "client", "n2"),
        pod("shop", "other-0", "other", "n2"),
    ];

    // Before the component runs, the ClusterIP goes nowhere (table 60 drops it).
    assert!(!reaches(&client, false, Duration::from_secs(1)));

    let mut changes = listed(vec![namespace("default"), namespace("shop")], Change::Namespace);
    changes.extend(listed(nodes, Change::Node));
    changes.extend(listed(pods, Change::Pod));
    changes.extend(listed(vec![service("shop")], Change::Service));
    changes.extend(listed(vec![slice("shop", web.ip)], Change::EndpointSlice));
    changes.extend(listed(vec![], Change::NetworkPolicy));
    changes.extend(openshift_objects_listed());
    let store = open_store(&cluster.store)?;
    let before = store.list_hostsubnets()?.0;
    let (translator, writes) = follow_writing_all(Translator::new(open_store(&cluster.store)?)?, changes)?;
    assert!(translator.synced());
    assert_eq!(store.list_hostsubnets()?.0, before, "the agents' nodes are the API's: none was removed or moved");
    let hostsubnets = writes.iter().filter(|w| matches!(w, ApiWrite::HostSubnet(_))).count();
    assert_eq!(hostsubnets, 2, "a HostSubnet object asked for each node: {writes:?}");
    assert!(reaches(&client, true, Duration::from_secs(10)), "the API's service is reachable");
    assert!(reaches(&other, true, Duration::from_secs(10)), "no policy yet: every pod reaches it");

    let translator = follow(translator, vec![Change::NetworkPolicy(Event::Apply(clients_only("shop")))])?;
    assert!(!reaches(&other, false, Duration::from_secs(5)), "the API's policy isolates web from other");
    assert!(reaches(&client, true, Duration::from_secs(10)), "and still admits the client");

    let translator = follow(translator, vec![Change::NetworkPolicy(Event::Delete(clients_only("shop")))])?;
    assert!(reaches(&other, true, Duration::from_secs(10)), "the policy's deletion lifts it");

    let translator = follow(translator, vec![Change::Service(Event::Delete(service("shop")))])?;
    assert!(!reaches(&client, false, Duration::from_secs(5)), "a deleted service is gone from the dataplane");
    assert_eq!(store.get_service("shop", "web")?, None);
    assert_eq!(translator.pending(), 0);
    Ok(())
}

#[test]
fn a_netnamespace_annotation_joins_two_projects() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("n1")?;
    let a = cluster.node("n1").add_pod("shop", "a-0")?;
    let b = cluster.node("n1").add_pod("billing", "b-0")?;
    serve_identity(&b.netns, 8080, "b-0")?;
    let asks = |expected, within| answers(&a, b.ip, 8080, expected, within);
    let node = &cluster.nodes[0];
    let mut changes = listed(vec![namespace("default"), namespace("shop"), namespace("billing")], Change::Namespace);
    changes.extend(listed(vec![crate::node(&node.name, node.ip)], Change::Node));
    changes.extend(listed(vec![pod("shop", "a-0", "a", "n1"), pod("billing", "b-0", "b", "n1")], Change::Pod));
    changes.extend(listed(vec![], Change::Service));
    changes.extend(listed(vec![], Change::EndpointSlice));
    changes.extend(listed(vec![], Change::NetworkPolicy));
    changes.extend(openshift_objects_listed());
    let (translator, writes) = follow_writing(Translator::new(open_store(&cluster.store)?)?, changes)?;
    assert_eq!(writes.len(), 3, "a NetNamespace object for each project: {writes:?}");
    assert!(!asks(false, Duration::from_secs(2)), "two projects are isolated");

    // `oc adm pod-network join-projects --to=shop billing` annotates billing's object.
    let store = open_store(&cluster.store)?;
    let mut object = openshift::NetNamespace::new("billing", cluster.netid("billing")?);
    object.metadata.annotations = Some([(CHANGE_NETWORK_ANNOTATION.to_owned(), "join:shop".to_owned())].into());
    let (translator, writes) = follow_writing(translator, vec![Change::NetNamespace(Event::Apply(object))])?;
    let shop = store.get_netnamespace("shop")?.unwrap().netid;
    assert_eq!(store.get_netnamespace("billing")?.unwrap().netid, shop);
    assert_eq!(
        writes,
        vec![NetNamespaceWrite::Update { name: "billing".into(), netid: shop, clear_change_network: true }]
    );
    assert!(asks(true, Duration::from_secs(10)), "joined, they reach each other");

    // OpenShift's master (in a migration) isolates billing again: only its NETID changes.
    let (_, writes) = follow_writing(
        translator,
        vec![Change::NetNamespace(Event::Apply(openshift::NetNamespace::new("billing", 4321)))],
    )?;
    assert_eq!(store.get_netnamespace("billing")?.unwrap().netid, 4321);
    assert_eq!(writes, vec![], "the master's object is left as it wrote it");
    assert!(!asks(false, Duration::from_secs(5)), "isolated again, they no longer reach each other");
    Ok(())
}

/// The initial lists of OpenShift's kinds on a cluster without OpenShift's master: none.
fn openshift_objects_listed() -> Vec<Change> {
    let mut changes = listed(vec![], Change::NetNamespace);
    changes.extend(listed(vec![], Change::HostSubnet));
    changes.extend(listed(vec![], Change::ClusterNetwork));
    changes.extend(listed(vec![], Change::EgressNetworkPolicy));
    changes
}

/// An EgressNetworkPolicy of project `namespace` whose last rule denies `denied`.
fn egress_policy(namespace: &str, name: &str, denied: &str) -> openshift::EgressNetworkPolicy {
    object(json!({
        "apiVersion": "network.openshift.io/v1", "kind": "EgressNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"egress": [
            {"type": "Allow", "to": {"cidrSelector": "203.0.113.7/32"}},
            {"type": "Deny", "to": {"cidrSelector": denied}}
        ]}
    }))
}

#[test]
fn an_egress_network_policy_of_the_api_is_the_projects_egress_firewall() -> Result<()> {
    const WHOAMI_PORT: u16 = 7070;
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("n1")?;
    let pod = cluster.node("n1").add_pod("shop", "a-0")?;
    let external: Ipv4Addr = EXTERNAL_HOST.parse()?;
    serve_whoami(&cluster.external, WHOAMI_PORT)?;
    let reaches_outside = |expected: bool| {
        let start = Instant::now();
        loop {
            let reached = whoami_tcp(&pod.netns, external, WHOAMI_PORT).is_ok();
            if reached == expected || start.elapsed() > Duration::from_secs(10) {
                return reached;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let node = &cluster.nodes[0];
    let mut changes = listed(vec![namespace("default"), namespace("shop")], Change::Namespace);
    changes.extend(listed(vec![crate::node(&node.name, node.ip)], Change::Node));
    changes.extend(listed(vec![pod_object("shop", "a-0")], Change::Pod));
    changes.extend(listed(vec![], Change::Service));
    changes.extend(listed(vec![], Change::EndpointSlice));
    changes.extend(listed(vec![], Change::NetworkPolicy));
    changes.extend(openshift_objects_listed());
    let translator = follow(Translator::new(open_store(&cluster.store)?)?, changes)?;
    assert!(reaches_outside(true), "no firewall yet");

    let deny_external = egress_policy("shop", "default", &format!("{EXTERNAL_HOST}/32"));
    let translator = follow(translator, vec![Change::EgressNetworkPolicy(Event::Apply(deny_external.clone()))])?;
    assert!(!reaches_outside(false), "the API's firewall denies the external host");
    let allow_external = egress_policy("shop", "default", "203.0.113.0/24");
    let translator = follow(translator, vec![Change::EgressNetworkPolicy(Event::Apply(allow_external.clone()))])?;
    assert!(reaches_outside(true), "its update lets it through again");
    // A second policy in the project: all its egress dropped, as on OpenShift.
    let second = egress_policy("shop", "second", "203.0.113.0/24");
    let translator = follow(translator, vec![Change::EgressNetworkPolicy(Event::Apply(second.clone()))])?;
    assert!(!reaches_outside(false), "two policies in one project drop its egress");
    let translator = follow(
        translator,
        vec![
            Change::EgressNetworkPolicy(Event::Delete(second)),
            Change::EgressNetworkPolicy(Event::Delete(allow_external)),
        ],
    )?;
    assert!(reaches_outside(true), "none left: egress allowed");
    assert_eq!(translator.pending(), 0);
    Ok(())
}

fn pod_object(namespace: &str, name: &str) -> Pod {
    pod(namespace, name, "a", "n1")
}
