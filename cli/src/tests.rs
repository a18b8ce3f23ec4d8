use clap::error::ErrorKind;
use oxsdn_controller::{NetNamespace, Service};
use oxsdn_tests::etcd::{EtcdServer, Transport};
use tempfile::TempDir;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("oxsdnctl").chain(args.iter().copied()))
}

/// Runs a command line against the store in `tmp`; returns stdout or the error message.
fn oxsdnctl(tmp: &TempDir, args: &[&str]) -> Result<String, String> {
    let store = tmp.path().join("store");
    let mut full = vec!["--store", store.to_str().unwrap()];
    full.extend_from_slice(args);
    let cli = parse(&full).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    run(cli, &mut out).map_err(|e| format!("{e:#}"))?;
    Ok(String::from_utf8(out).unwrap())
}

fn ok(tmp: &TempDir, args: &[&str]) -> String {
    oxsdnctl(tmp, args).unwrap_or_else(|e| panic!("oxsdnctl {args:?}: {e}"))
}

/// A store with default, a, b (team=blue) and c (team=blue).
fn cluster_with_projects() -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    ok(&tmp, &["init"]);
    ok(&tmp, &["create", "project", "default"]);
    ok(&tmp, &["create", "project", "a"]);
    ok(&tmp, &["create", "project", "b", "--label", "team=blue"]);
    ok(&tmp, &["create", "project", "c", "--label", "team=blue"]);
    tmp
}

fn netnamespaces(tmp: &TempDir) -> BTreeMap<String, u32> {
    let json = ok(tmp, &["get", "netnamespaces", "-o", "json"]);
    let all: Vec<NetNamespace> = serde_json::from_str(&json).unwrap();
    all.into_iter().map(|ns| (ns.name, ns.netid)).collect()
}

#[test]
fn names_and_selector_are_mutually_exclusive_and_one_is_required() {
    for command in [
        &["pod-network", "join-projects", "--to=a"][..],
        &["pod-network", "isolate-projects"],
        &["pod-network", "make-projects-global"],
    ] {
        let both: Vec<&str> = command.iter().copied().chain(["b", "--selector", "k=v"]).collect();
        let err = parse(&both).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict, "{both:?}");
        assert_eq!(err.exit_code(), 2);
        let err = parse(command).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{command:?}");
        assert_eq!(err.exit_code(), 2);
        let names: Vec<&str> = command.iter().copied().chain(["b", "c"]).collect();
        parse(&names).unwrap();
        let selector: Vec<&str> = command.iter().copied().chain(["--selector", "k=v"]).collect();
        parse(&selector).unwrap();
    }
    let err = parse(&["pod-network", "join-projects", "b"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "--to is required");
}

#[test]
fn isolating_default_is_refused_client_side() {
    let tmp = tempfile::tempdir().unwrap();
    // Refused before the store is even looked at: there is none.
    let err = oxsdnctl(&tmp, &["pod-network", "isolate-projects", "a", "default"]).unwrap_err();
    assert_eq!(err, Error::IsolateDefault.to_string());
    assert!(!tmp.path().join("store").exists());
}

#[test]
fn isolating_a_selection_including_default_changes_nothing() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["create", "project", "default", "--label", "team=blue"]);
    ok(&tmp, &["pod-network", "join-projects", "--to=a", "b", "c"]);
    let before = netnamespaces(&tmp);
    let err = oxsdnctl(&tmp, &["pod-network", "isolate-projects", "--selector", "team=blue"]).unwrap_err();
    assert_eq!(err, Error::IsolateDefault.to_string());
    assert_eq!(netnamespaces(&tmp), before);
}

#[test]
fn join_excludes_the_target_from_the_selection() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["create", "project", "a", "--label", "team=blue"]);
    let a = netnamespaces(&tmp)["a"];
    let out = ok(&tmp, &["pod-network", "join-projects", "--to=a", "--selector", "team=blue"]);
    assert_eq!(out, format!("NAME      NETID\nb         {a}\nc         {a}\n"));
    let after = netnamespaces(&tmp);
    assert_eq!((after["a"], after["b"], after["c"], after["default"]), (a, a, a, 0));
    // Naming the target among the projects is harmless too.
    ok(&tmp, &["pod-network", "isolate-projects", "b"]);
    ok(&tmp, &["pod-network", "join-projects", "--to=b", "b", "c"]);
    let after = netnamespaces(&tmp);
    assert_eq!(after["c"], after["b"]);
}

#[test]
fn selector_matching_nothing_is_an_error() {
    let tmp = cluster_with_projects();
    let err = oxsdnctl(&tmp, &["pod-network", "make-projects-global", "--selector", "team=red"]).unwrap_err();
    assert_eq!(err, "no projects found matching selector \"team=red\"");
    let err = oxsdnctl(&tmp, &["pod-network", "make-projects-global", "--selector", "team in (x)"]).unwrap_err();
    assert!(err.starts_with("invalid label selector"), "{err}");
}

#[test]
fn pod_network_commands_end_to_end() {
    let tmp = cluster_with_projects();
    let out = ok(&tmp, &["pod-network", "make-projects-global", "--selector", "team=blue"]);
    assert_eq!(out, "NAME      NETID\nb         0\nc         0\n");
    let out = ok(&tmp, &["pod-network", "isolate-projects", "b", "c"]);
    let after = netnamespaces(&tmp);
    assert!(after["b"] != 0 && after["c"] != 0 && after["b"] != after["c"], "{out}");
    let err = oxsdnctl(&tmp, &["pod-network", "join-projects", "--to=nope", "b"]).unwrap_err();
    assert_eq!(err, "project \"nope\" not found");
    assert_eq!(netnamespaces(&tmp), after);
}

#[test]
fn commands_other_than_init_need_an_existing_store() {
    let tmp = tempfile::tempdir().unwrap();
    let err = oxsdnctl(&tmp, &["get", "netnamespaces"]).unwrap_err();
    assert!(err.ends_with("does not exist; run `oxsdnctl init` first"), "{err}");
    assert!(!tmp.path().join("store").exists());
}

#[test]
fn init_prints_the_configuration_and_refuses_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ok(&tmp, &["init", "--cluster-network", "10.0.0.0/16", "--host-subnet-length", "8", "--mtu", "1400"]);
    let config: ClusterConfig = serde_json::from_str(&out).unwrap();
    assert_eq!(
        config,
        ClusterConfig {
            cluster_network: "10.0.0.0/16".parse().unwrap(),
            host_subnet_length: 8,
            mtu: 1400,
            ..ClusterConfig::default()
        }
    );
    let err = oxsdnctl(&tmp, &["init"]).unwrap_err();
    assert!(err.contains("clusterNetwork: 10.0.0.0/16 -> 10.128.0.0/14"), "{err}");
    assert!(parse(&["init", "--cluster-network", "nonsense"]).is_err());
}

#[test]
fn get_output_formats() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["pod-network", "make-projects-global", "a"]);
    ok(&tmp, &["pod-network", "join-projects", "--to=default", "b"]);
    ok(&tmp, &["pod-network", "join-projects", "--to=default", "c"]);
    assert_eq!(
        ok(&tmp, &["get", "netnamespaces"]),
        "NAME      NETID     EGRESS IPS\na         0         []\nb         0         []\nc         0         []\ndefault   0         []\n"
    );
    ok(&tmp, &["node", "add", "ip-10-0-130-137.us-east-2.compute.internal", "--ip", "10.0.130.137"]);
    ok(&tmp, &["node", "add", "node-b", "--ip", "10.0.0.2"]);
    assert_eq!(
        ok(&tmp, &["get", "hostsubnets"]),
        "NAME                                         HOST                                         HOST IP        SUBNET          EGRESS CIDRS   EGRESS IPS\n\
         ip-10-0-130-137.us-east-2.compute.internal   ip-10-0-130-137.us-east-2.compute.internal   10.0.130.137   10.128.0.0/23   []             []\n\
         node-b                                       node-b                                       10.0.0.2       10.129.0.0/23   []             []\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&tmp, &["get", "hostsubnets", "-o", "json"])).unwrap();
    assert_eq!(json[1], serde_json::json!({"host": "node-b", "hostIp": "10.0.0.2", "subnet": "10.129.0.0/23"}));
    assert_eq!(ok(&tmp, &["node", "delete", "node-b"]), "hostsubnet \"node-b\" deleted\n");
    assert_eq!(oxsdnctl(&tmp, &["node", "delete", "node-b"]).unwrap_err(), "node \"node-b\" not found");
    assert_eq!(ok(&tmp, &["delete", "project", "c"]), "netnamespace \"c\" deleted\n");
    assert!(parse(&["get", "netnamespaces", "-o", "xml"]).is_err());
    let yaml = ok(&tmp, &["get", "netnamespaces", "-o", "yaml"]);
    assert!(yaml.starts_with("- name: a\n  netid: 0\n"), "{yaml}");
}

#[test]
fn labels_must_be_key_value() {
    let err = parse(&["create", "project", "a", "--label", "novalue"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ValueValidation);
    let tmp = cluster_with_projects();
    let err = oxsdnctl(&tmp, &["create", "project", "x", "--label", "bad key=v"]).unwrap_err();
    assert!(err.starts_with("invalid label key \"bad key\": name part must consist of"), "{err}");
}

#[test]
fn dump_flows_of_a_node_without_dataplane_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let bpffs = tmp.path().join("no-pins");
    let err = oxsdnctl(&tmp, &["dump-flows", "--node", "n1", "--table", "80", "--bpffs-dir", bpffs.to_str().unwrap()])
        .unwrap_err();
    assert!(err.starts_with("node n1 has no dataplane here"), "{err}");
}

/// A TLS etcd on loopback and the arguments that reach it as etcd user `user`.
fn etcd_as(tmp: &TempDir, user: &str) -> (EtcdServer, Vec<String>) {
    let etcd = EtcdServer::start_on_loopback(&tmp.path().join("etcd"), Transport::Tls).unwrap();
    let args = etcd_args(&etcd, user);
    (etcd, args)
}

/// `--etcd-endpoints …` and the TLS options of a new certificate for `user`.
fn etcd_args(etcd: &EtcdServer, user: &str) -> Vec<String> {
    let cert = etcd.client_cert(user).unwrap();
    ["--etcd-endpoints".to_owned(), etcd.endpoint()]
        .into_iter()
        .chain(cert.args().into_iter().map(|a| a.into_string().unwrap()))
        .collect()
}

#[test]
fn etcd_endpoints_choose_etcd_over_the_store_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (_etcd, tls) = etcd_as(&tmp, "root");
    // The store options are global: before or after the subcommand.
    let with_etcd = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend(tls.iter().map(String::as_str));
        oxsdnctl(&tmp, &full)
    };
    with_etcd(&["init"]).unwrap();
    with_etcd(&["create", "project", "a"]).unwrap();
    with_etcd(&["create", "project", "b"]).unwrap();
    with_etcd(&["pod-network", "join-projects", "--to=a", "b"]).unwrap();
    let table = with_etcd(&["get", "netnamespaces"]).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(rows[0][1], rows[1][1], "b joined a: {table}");
    // The file store was not touched.
    assert!(!tmp.path().join("store").exists());
    assert!(oxsdnctl(&tmp, &["get", "netnamespaces"]).is_err());
}

#[test]
fn plain_http_to_a_loopback_etcd_needs_no_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let etcd = EtcdServer::start_on_loopback(&tmp.path().join("etcd"), Transport::Plain).unwrap();
    let endpoint = etcd.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    ok(&tmp, &["--etcd-endpoints", &endpoint, "init"]);
    ok(&tmp, &["--etcd-endpoints", &endpoint, "create", "project", "a"]);
}

#[test]
fn etcd_down_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut etcd, tls) = etcd_as(&tmp, "root");
    let endpoint = etcd.endpoint();
    etcd.stop();
    let mut args: Vec<&str> = tls.iter().map(String::as_str).collect();
    args.extend(["get", "hostsubnets"]);
    let err = oxsdnctl(&tmp, &args).unwrap_err();
    assert!(err.starts_with(&format!("store unavailable: etcd at {endpoint}")), "{err}");
}

#[test]
fn setup_auth_makes_the_operator_and_node_users() {
    let tmp = tempfile::tempdir().unwrap();
    let (etcd, root) = etcd_as(&tmp, "root");
    let as_user = |args: &[String], command: &[&str]| {
        let mut full: Vec<&str> = args.iter().map(String::as_str).collect();
        full.extend(command);
        oxsdnctl(&tmp, &full)
    };
    let out = as_user(&root, &["store", "setup-auth", "--node", "n1", "--node", "n2"]).unwrap();
    assert_eq!(out.lines().count(), 8, "{out}");
    assert!(out.ends_with("user oxsdn-node-n2: created, granted role oxsdn-node-n2\nauth: enabled\n"), "{out}");
    let again = as_user(&root, &["store", "setup-auth", "--node", "n1"]).unwrap();
    assert_eq!(again.matches(": unchanged").count(), 5, "{again}");

    let operator = etcd_args(&etcd, "oxsdn-operator");
    let node = etcd_args(&etcd, "oxsdn-node-n1");
    as_user(&operator, &["init"]).unwrap();
    as_user(&operator, &["create", "project", "a"]).unwrap();
    as_user(&node, &["node", "add", "n1", "--ip", "192.0.2.11"]).unwrap();
    let err = as_user(&node, &["create", "project", "b"]).unwrap_err();
    assert!(err.starts_with("store permission denied: etcd at https://"), "{err}");
    assert!(err.contains("etcdserver: permission denied (as the etcd user of certificate"), "{err}");
    let err = as_user(&node, &["store", "setup-auth", "--node", "n3"]).unwrap_err();
    assert!(err.contains("only etcd's root user"), "{err}");
    // Only etcd has users and roles.
    let err = oxsdnctl(&tmp, &["store", "setup-auth"]).unwrap_err();
    assert!(err.starts_with("store setup-auth sets up etcd's users and roles: give --etcd-endpoints"), "{err}");
}

// ---- services ---------------------------------------------------------------------------

fn services(tmp: &TempDir, project: &str) -> Vec<Service> {
    let json = ok(tmp, &["get", "services", "-n", project, "-o", "json"]);
    serde_json::from_str(&json).unwrap()
}

#[test]
fn port_arguments() {
    let ports = |args: &[&str]| -> Result<Vec<ServicePort>, ErrorKind> {
        let full: Vec<&str> = ["create", "service", "web", "-n", "a"].iter().chain(args).copied().collect();
        match parse(&full).map_err(|e| e.kind())?.command {
            Command::Create(CreateCommand::Service { ports, .. }) => Ok(ports.ports()),
            other => panic!("{other:?}"),
        }
    };
    let tcp = |p, t| ServicePort::new(Protocol::Tcp, p, t);
    let udp = |p, t| ServicePort::new(Protocol::Udp, p, t);
    assert_eq!(ports(&["--tcp", "80"]).unwrap(), [tcp(80, 80)]);
    // Repeated or comma-separated; TCP ports first, each protocol in the order given.
    assert_eq!(
        ports(&["--udp=53", "--tcp", "80:8080,443:8443", "--tcp", "22", "--udp", "5353:53"]).unwrap(),
        [tcp(80, 8080), tcp(443, 8443), tcp(22, 22), udp(53, 53), udp(5353, 53)]
    );
    assert_eq!(ports(&[]), Err(ErrorKind::MissingRequiredArgument));
    for bad in ["x", "80:", ":80", "65536", "80:8080:1", "-1", ""] {
        let arg = format!("--tcp={bad}");
        assert_eq!(ports(&[&arg]), Err(ErrorKind::ValueValidation), "{bad:?}");
    }
    let err = parse(&["create", "service", "web", "-n", "a", "--tcp", "80:http"]).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid value '80:http' for '--tcp <PORT[:TARGET]>': \"http\" is not a port number (0-65535)"),
        "{err}"
    );
    // The project is required; --project is the same option.
    let err = parse(&["create", "service", "web", "--tcp", "80"]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
    parse(&["create", "svc", "web", "--project", "a", "--tcp", "80"]).unwrap();
    assert_eq!(
        parse(&["create", "service", "web", "-n", "a", "--tcp", "80", "--cluster-ip", "x"]).unwrap_err().kind(),
        ErrorKind::ValueValidation
    );
}

#[test]
fn endpoint_arguments() {
    let endpoints = |args: &[&str]| -> Result<(Vec<Ipv4Addr>, bool), ErrorKind> {
        let full: Vec<&str> = ["set", "endpoints", "web", "-n", "a"].iter().chain(args).copied().collect();
        match parse(&full).map_err(|e| e.kind())?.command {
            Command::Set(SetCommand::Endpoints { endpoints, .. }) => Ok((endpoints.ips, endpoints.none)),
            other => panic!("{other:?}"),
        }
    };
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(endpoints(&["10.128.0.5", "10.129.0.7"]).unwrap(), (vec![ip("10.128.0.5"), ip("10.129.0.7")], false));
    assert_eq!(endpoints(&["--none"]).unwrap(), (vec![], true));
    // Clearing must be said: no IPs at all is a usage error, and so is mixing.
    assert_eq!(endpoints(&[]), Err(ErrorKind::MissingRequiredArgument));
    assert_eq!(endpoints(&["--none", "10.128.0.5"]), Err(ErrorKind::ArgumentConflict));
    assert_eq!(endpoints(&["10.128.0"]), Err(ErrorKind::ValueValidation));
}

#[test]
fn services_end_to_end() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["create", "project", "a-b"]);
    let out = ok(
        &tmp,
        &["create", "service", "web", "-n", "a", "--tcp", "80:8080", "--udp", "53", "--cluster-ip", "172.30.0.10"],
    );
    assert_eq!(
        out,
        "NAME      CLUSTER-IP    PORT(S)              ENDPOINTS\n\
         web       172.30.0.10   80:8080/TCP,53/UDP   <none>\n"
    );
    // Without --cluster-ip, a free address of the service network.
    let db = ok(&tmp, &["create", "svc", "db", "-n", "a-b", "--tcp", "5432"]);
    let db_ip: Ipv4Addr = db.lines().nth(1).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ClusterConfig::default().service_network.contains(db_ip), "{db}");
    ok(&tmp, &["delete", "service", "db", "-n", "a-b"]);
    ok(&tmp, &["create", "svc", "db", "-n", "a-b", "--tcp", "5432", "--cluster-ip", "172.30.1.1"]);

    let out = ok(&tmp, &["set", "endpoints", "web", "-n", "a", "10.129.0.7", "10.128.0.5", "10.129.0.7"]);
    assert_eq!(
        out,
        "NAME      CLUSTER-IP    PORT(S)              ENDPOINTS\n\
         web       172.30.0.10   80:8080/TCP,53/UDP   10.128.0.5,10.129.0.7\n"
    );
    // Every project, sorted by project then name, with a NAMESPACE column.
    assert_eq!(
        ok(&tmp, &["get", "services"]),
        "NAMESPACE   NAME      CLUSTER-IP    PORT(S)              ENDPOINTS\n\
             a           web       172.30.0.10   80:8080/TCP,53/UDP   10.128.0.5,10.129.0.7\n\
             a-b         db        172.30.1.1    5432/TCP             <none>\n"
    );
    assert_eq!(ok(&tmp, &["get", "svc", "-n", "b"]), "", "none there");

    let out = ok(&tmp, &["set", "ports", "web", "-n", "a", "--tcp", "443:8443"]);
    assert!(out.ends_with("web       172.30.0.10   443:8443/TCP   10.128.0.5,10.129.0.7\n"), "{out}");
    let web = &services(&tmp, "a")[0];
    assert_eq!(web.ports, [ServicePort::new(Protocol::Tcp, 443, 8443)]);
    let out = ok(&tmp, &["set", "endpoints", "web", "-n", "a", "--none"]);
    assert!(out.ends_with("   <none>\n"), "{out}");
    assert!(services(&tmp, "a")[0].endpoints.is_empty());

    // Errors from the controller, verbatim.
    let err = |args: &[&str]| oxsdnctl(&tmp, args).unwrap_err();
    assert_eq!(
        err(&["create", "service", "x", "-n", "b", "--tcp", "1", "--cluster-ip", "172.30.0.10"]),
        "ClusterIP 172.30.0.10 is already allocated to service a/web"
    );
    assert_eq!(err(&["create", "service", "x", "-n", "nope", "--tcp", "1"]), "project \"nope\" not found");
    assert_eq!(
        err(&["create", "service", "x", "-n", "b", "--tcp", "0:80"]),
        "invalid service: port 0:80/TCP: port 0 is not valid"
    );
    assert_eq!(
        err(&["set", "endpoints", "web", "-n", "a", "192.168.1.1"]),
        "invalid service: endpoint 192.168.1.1 is not in the cluster network 10.128.0.0/14"
    );
    assert_eq!(err(&["delete", "project", "a"]), "project \"a\" still has service \"web\": delete its services first");
    assert_eq!(ok(&tmp, &["delete", "service", "web", "-n", "a"]), "service \"web\" deleted\n");
    assert_eq!(err(&["delete", "svc", "web", "-n", "a"]), "service \"web\" not found in project \"a\"");
    assert_eq!(ok(&tmp, &["delete", "project", "a"]), "netnamespace \"a\" deleted\n");
}

#[test]
fn many_endpoints_are_summed_up_in_the_table() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["create", "service", "web", "-n", "a", "--tcp", "80"]);
    let ips = ["10.128.0.2", "10.128.0.3", "10.128.0.4", "10.128.0.5", "10.128.0.6"];
    let args: Vec<&str> = ["set", "endpoints", "web", "-n", "a"].iter().chain(&ips).copied().collect();
    let out = ok(&tmp, &args);
    assert!(out.ends_with("   10.128.0.2,10.128.0.3,10.128.0.4 + 2 more...\n"), "{out}");
    let all: Vec<String> = services(&tmp, "a")[0].endpoints.iter().map(|ip| ip.to_string()).collect();
    assert_eq!(all, ips, "JSON has them all");
}

// ---- network plugins, manifests, labels ------------------------------------------------

/// Writes `text` to a file in `tmp`; its path.
fn manifest(tmp: &TempDir, name: &str, text: &str) -> String {
    let path = tmp.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The store's state file: equal before and after means nothing was written.
fn store_state(tmp: &TempDir) -> Vec<u8> {
    std::fs::read(tmp.path().join("store/state")).unwrap()
}

const MANIFESTS: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {team: blue}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: NotIn, values: [b, a]}, {key: canary, operator: DoesNotExist}]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: blue}}}]
    ports: [{port: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: web}}
spec:
  containers:
  - name: c
    image: busybox
    ports: [{name: http, containerPort: 8080}]
";

#[test]
fn network_plugins_are_switched_and_shown() {
    let tmp = cluster_with_projects();
    let table = |plugin: &str| {
        format!(
            "NAME      CLUSTER NETWORK   SERVICE NETWORK   PLUGIN NAME\n\
             default   10.128.0.0/14     172.30.0.0/16     redhat/openshift-ovs-{plugin}\n"
        )
    };
    assert_eq!(ok(&tmp, &["get", "clusternetwork"]), table("multitenant"));
    assert_eq!(
        ok(&tmp, &["set", "network-plugin", "redhat/openshift-ovs-subnet"]),
        "network plugin subnet (redhat/openshift-ovs-subnet)\n"
    );
    assert_eq!(ok(&tmp, &["get", "clusternetwork"]), table("subnet"));
    let json: serde_json::Value = serde_json::from_str(&ok(&tmp, &["get", "clusternetwork", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "ClusterNetwork");
    assert_eq!(json["pluginName"], "redhat/openshift-ovs-subnet");
    assert_eq!(json["clusterNetworks"][0], serde_json::json!({"CIDR": "10.128.0.0/14", "hostSubnetLength": 9}));
    let yaml = ok(&tmp, &["get", "clusternetwork", "-o", "yaml"]);
    assert!(yaml.contains("\npluginName: redhat/openshift-ovs-subnet\n"), "{yaml}");

    // pod-network: refused, by the controller, outside multitenant mode.
    let before = store_state(&tmp);
    for command in [
        &["pod-network", "join-projects", "--to=a", "b"][..],
        &["pod-network", "isolate-projects", "b"],
        &["pod-network", "make-projects-global", "--selector", "team=blue"],
    ] {
        let err = oxsdnctl(&tmp, command).unwrap_err();
        assert_eq!(err, Error::NotMultitenant(NetworkPlugin::Subnet).to_string(), "{command:?}");
    }
    assert_eq!(store_state(&tmp), before);
    ok(&tmp, &["set", "network-plugin", "networkpolicy"]);
    assert!(oxsdnctl(&tmp, &["pod-network", "isolate-projects", "b"])
        .unwrap_err()
        .contains("openshift-ovs-networkpolicy"));
    ok(&tmp, &["set", "network-plugin", "multitenant"]);
    ok(&tmp, &["pod-network", "isolate-projects", "b"]);
    let err = parse(&["set", "network-plugin", "ovs-subnet"]).unwrap_err();
    assert!(err.to_string().contains("unknown network plugin \"ovs-subnet\""), "{err}");
}

#[test]
fn manifests_are_applied_listed_and_deleted() {
    let tmp = cluster_with_projects();
    let file = manifest(&tmp, "policies.yaml", MANIFESTS);
    assert_eq!(
        ok(&tmp, &["apply", "-f", &file]),
        "namespace/x created\nnetworkpolicy.networking.k8s.io/deny-all created\n\
         networkpolicy.networking.k8s.io/web created\npod/a created\n"
    );
    assert_eq!(
        ok(&tmp, &["apply", "-f", &file]),
        "namespace/x unchanged\nnetworkpolicy.networking.k8s.io/deny-all unchanged\n\
         networkpolicy.networking.k8s.io/web unchanged\npod/a unchanged\n"
    );
    assert_eq!(
        ok(&tmp, &["get", "networkpolicies"]),
        "NAMESPACE   NAME       POD-SELECTOR\n\
         x           deny-all   <none>\n\
         x           web        app=web,!canary,tier notin (a,b)\n"
    );
    assert_eq!(
        ok(&tmp, &["get", "netpol", "-n", "x"]),
        "NAME       POD-SELECTOR\ndeny-all   <none>\nweb        app=web,!canary,tier notin (a,b)\n"
    );
    // JSON and YAML: networking.k8s.io/v1 objects, as the API server has them (defaults in).
    let list: serde_json::Value = serde_json::from_str(&ok(&tmp, &["get", "networkpolicies", "-o", "json"])).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(list["items"][0]["metadata"], serde_json::json!({"name": "deny-all", "namespace": "x"}));
    assert_eq!(list["items"][0]["spec"], serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
    assert_eq!(
        list["items"][1]["spec"]["ingress"][0]["ports"][0],
        serde_json::json!({"port": "http", "protocol": "TCP"})
    );
    let one = ok(&tmp, &["get", "networkpolicy", "web", "-n", "x", "-o", "yaml"]);
    assert!(
        one.starts_with("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n"),
        "{one}"
    );
    // What `get -o yaml` prints applies again, unchanged.
    let again = manifest(&tmp, "again.yaml", &one);
    assert_eq!(ok(&tmp, &["apply", "-f", &again]), "networkpolicy.networking.k8s.io/web unchanged\n");
    assert_eq!(
        oxsdnctl(&tmp, &["get", "netpol", "web"]).unwrap_err(),
        "networkpolicy \"web\" not found in namespace \"default\""
    );
    let table = ok(&tmp, &["get", "namespaces"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "NETID", "LABELS"]);
    assert_eq!(rows[1], ["a", &netnamespaces(&tmp)["a"].to_string(), "kubernetes.io/metadata.name=a"]);
    assert_eq!(rows[5][2], "kubernetes.io/metadata.name=x,team=blue", "{table}");
    let namespaces: serde_json::Value = serde_json::from_str(&ok(&tmp, &["get", "ns", "-o", "json"])).unwrap();
    let x = namespaces["items"].as_array().unwrap().iter().find(|ns| ns["metadata"]["name"] == "x").unwrap().clone();
    assert_eq!(x["metadata"]["labels"], serde_json::json!({"kubernetes.io/metadata.name": "x", "team": "blue"}));
    assert_eq!(
        ok(&tmp, &["get", "pods"]),
        "NAMESPACE   NAME      IP        LABELS    NAMED PORTS\nx           a         <none>    app=web   http:8080/TCP\n"
    );

    assert_eq!(
        ok(&tmp, &["delete", "networkpolicy", "web", "-n", "x"]),
        "networkpolicy.networking.k8s.io \"web\" deleted\n"
    );
    assert_eq!(
        oxsdnctl(&tmp, &["delete", "netpol", "web", "-n", "x"]).unwrap_err(),
        "networkpolicy \"web\" not found in namespace \"x\""
    );
    // delete -f: what exists is deleted, the rest reported.
    let err = oxsdnctl(&tmp, &["delete", "-f", &file]).unwrap_err();
    assert_eq!(err, "not found: networkpolicy.networking.k8s.io \"web\"");
    assert!(oxsdnctl(&tmp, &["get", "netnamespaces"]).unwrap().lines().all(|l| !l.starts_with("x ")));
    assert_eq!(ok(&tmp, &["delete", "-f", &file, "--ignore-not-found"]), "");
    assert!(parse(&["delete", "-f", &file, "project", "a"]).is_err(), "a file or a resource, not both");
    assert_eq!(parse(&["delete"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
}

#[test]
fn an_invalid_document_applies_nothing() {
    let tmp = cluster_with_projects();
    let bad = MANIFESTS
        .replace("ports: [{port: http}]", "ports: [{port: http, endPort: 90}]")
        .replace("spec: {}", "spec: {ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/33}}]}]}")
        + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    let file = manifest(&tmp, "bad.yaml", &bad);
    let before = store_state(&tmp);
    let err = oxsdnctl(&tmp, &["apply", "-f", &file]).unwrap_err();
    assert_eq!(
        err,
        format!(
            "{file}: nothing was applied: document 2: The NetworkPolicy \"deny-all\" is invalid: \
             spec.ingress[0].from[1].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. \
             10.9.8.0/24 or 2001:db8::/64)\n\
             document 3: The NetworkPolicy \"web\" is invalid: spec.ingress[0].ports[0].endPort: Invalid value: 90: \
             may not be specified when `port` is non-numeric\n\
             document 5: no matches for kind \"Deployment\" in version \"apps/v1\": oxsdn takes NetworkPolicy \
             (networking.k8s.io/v1), EgressNetworkPolicy, NetNamespace and HostSubnet (network.openshift.io/v1), \
             Namespace (v1), Pod (v1) and List"
        )
    );
    assert_eq!(store_state(&tmp), before);
    // Valid documents whose policy names a namespace that does not exist: one
    // transaction, so the namespace and pod of the file are not created either.
    let orphan = MANIFESTS.replace("name: web, namespace: x", "name: web, namespace: ghost");
    let file = manifest(&tmp, "orphan.yaml", &orphan);
    assert_eq!(oxsdnctl(&tmp, &["apply", "-f", &file]).unwrap_err(), "project \"ghost\" not found");
    assert_eq!(store_state(&tmp), before);
    let empty = manifest(&tmp, "empty.yaml", "# nothing\n---\n");
    assert!(oxsdnctl(&tmp, &["apply", "-f", &empty]).unwrap_err().ends_with("empty.yaml: no objects passed to apply"));
    let missing = tmp.path().join("missing.yaml");
    let err = oxsdnctl(&tmp, &["apply", "-f", missing.to_str().unwrap()]).unwrap_err();
    assert!(err.starts_with("opening ") && err.contains("No such file"), "{err}");
}

#[test]
fn apply_takes_the_namespace_option_as_kubectl_does() {
    let tmp = cluster_with_projects();
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n";
    let file = manifest(&tmp, "p.yaml", policy);
    assert_eq!(ok(&tmp, &["apply", "-f", &file, "-n", "b"]), "networkpolicy.networking.k8s.io/p created\n");
    // No namespace, no -n: default.
    ok(&tmp, &["apply", "-f", &file]);
    assert_eq!(ok(&tmp, &["get", "netpol", "-o", "json"]).matches("\"name\": \"p\"").count(), 2);
    let in_c = manifest(&tmp, "c.yaml", &policy.replace("{name: p}", "{name: p, namespace: c}"));
    let err = oxsdnctl(&tmp, &["apply", "-f", &in_c, "-n", "b"]).unwrap_err();
    assert!(err.ends_with(
        "document 1: the namespace from the provided object \"c\" does not match the namespace \"b\". You must pass \
         '--namespace=c' to perform this operation."
    ), "{err}");
}

#[test]
fn namespace_labels_in_manifests_replace_the_projects() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["label", "namespace", "b", "env=prod"]);
    let file = manifest(&tmp, "b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {tier: gold}}\n");
    let vnid = netnamespaces(&tmp)["b"];
    assert_eq!(ok(&tmp, &["apply", "-f", &file]), "namespace/b configured\n");
    let all: Vec<NetNamespace> = serde_json::from_str(&ok(&tmp, &["get", "netnamespaces", "-o", "json"])).unwrap();
    let b = all.iter().find(|ns| ns.name == "b").unwrap();
    assert_eq!(b.labels, BTreeMap::from([("tier".to_owned(), "gold".to_owned())]));
    assert_eq!(b.netid, vnid, "its VNID is kept");
}

#[test]
fn annotations_as_kubectl_annotate() {
    let tmp = cluster_with_projects();
    let key = "netnamespace.network.openshift.io/multicast-enabled";
    let on = format!("{key}=true");
    assert_eq!(ok(&tmp, &["annotate", "netnamespace", "a", &on]), "netnamespace.network.openshift.io/a annotated\n");
    assert!(ok(&tmp, &["get", "netnamespaces", "-o", "yaml"]).contains(&format!("{key}: 'true'")));
    assert_eq!(
        oxsdnctl(&tmp, &["annotate", "netnamespace", "a", &format!("{key}=false")]).unwrap_err(),
        "'netnamespace.network.openshift.io/multicast-enabled' already has a value (true), and --overwrite is false"
    );
    assert_eq!(
        oxsdnctl(&tmp, &["annotate", "netnamespace", "a", "novalue"]).unwrap_err(),
        "invalid annotation spec: \"novalue\" (KEY=VALUE sets an annotation, KEY- removes it)"
    );
    assert!(oxsdnctl(&tmp, &["annotate", "netnamespace", "nosuch", &on]).is_err());
    ok(&tmp, &["annotate", "netnamespace", "a", &format!("{key}-")]);
    assert!(!ok(&tmp, &["get", "netnamespaces", "-o", "yaml"]).contains(key));
}

#[test]
fn labels_as_kubectl_label() {
    let tmp = cluster_with_projects();
    assert_eq!(ok(&tmp, &["label", "namespace", "a", "env=prod", "tier=1"]), "namespace/a labeled\n");
    assert_eq!(
        oxsdnctl(&tmp, &["label", "ns", "a", "env=dev"]).unwrap_err(),
        "'env' already has a value (prod), and --overwrite is false"
    );
    assert_eq!(ok(&tmp, &["label", "ns", "a", "env=dev", "--overwrite"]), "namespace/a labeled\n");
    assert_eq!(ok(&tmp, &["label", "ns", "a", "env=dev"]), "namespace/a not labeled\n");
    assert_eq!(ok(&tmp, &["label", "ns", "a", "tier-", "gone-"]), "namespace/a unlabeled\n");
    assert_eq!(
        ok(&tmp, &["get", "ns"]).lines().nth(1).unwrap().split_whitespace().last(),
        Some("env=dev,kubernetes.io/metadata.name=a")
    );
    assert_eq!(
        oxsdnctl(&tmp, &["label", "ns", "a", "k=v", "k-"]).unwrap_err(),
        "can not both modify and remove the following label(s) in the same command: k"
    );
    assert_eq!(
        oxsdnctl(&tmp, &["label", "ns", "a", "novalue"]).unwrap_err(),
        "invalid label spec: \"novalue\" (KEY=VALUE sets a label, KEY- removes it)"
    );
    assert!(oxsdnctl(&tmp, &["label", "ns", "a", "bad key=v"])
        .unwrap_err()
        .starts_with("invalid label key \"bad key\""));
    assert!(oxsdnctl(&tmp, &["label", "ns", "a", "k=-v"]).unwrap_err().starts_with("invalid value \"-v\" for label"));
    assert!(oxsdnctl(&tmp, &["label", "ns", "a", "kubernetes.io/metadata.name-"])
        .unwrap_err()
        .contains("cannot be changed"));
    assert_eq!(oxsdnctl(&tmp, &["label", "ns", "ghost", "k=v"]).unwrap_err(), "project \"ghost\" not found");
    assert_eq!(parse(&["label", "ns", "a"]).unwrap_err().kind(), ErrorKind::MissingRequiredArgument);
    assert!(parse(&["label", "service", "a", "k=v"]).is_err());
    // Pods: before the CNI ADD too; their namespace must exist.
    assert_eq!(ok(&tmp, &["label", "pod", "web-1", "-n", "b", "app=web"]), "pod/web-1 labeled\n");
    assert_eq!(ok(&tmp, &["label", "po", "web-1", "-n", "b", "app=api", "--overwrite"]), "pod/web-1 labeled\n");
    assert_eq!(
        ok(&tmp, &["get", "pods", "-n", "b"]),
        "NAMESPACE   NAME      IP        LABELS    NAMED PORTS\nb           web-1     <none>    app=api   <none>\n"
    );
    assert_eq!(
        oxsdnctl(&tmp, &["label", "pod", "p", "-n", "ghost", "k=v"]).unwrap_err(),
        "project \"ghost\" not found"
    );
}

#[test]
fn projects_and_nodes_are_imported_with_openshifts_values() {
    let tmp = tempfile::tempdir().unwrap();
    ok(&tmp, &["init"]);
    let out = ok(&tmp, &["create", "project", "shop", "--netid", "4242", "--label", "team=blue"]);
    assert!(out.contains("4242"), "{out}");
    ok(&tmp, &["create", "project", "shop-db", "--netid", "4242"]);
    let err = oxsdnctl(&tmp, &["create", "project", "shop", "--netid", "9"]).unwrap_err();
    assert!(err.contains("out of range"), "{err}");
    let err = oxsdnctl(&tmp, &["create", "project", "shop", "--netid", "77"]).unwrap_err();
    assert!(err.contains("exists with NETID 4242"), "{err}");

    let out = ok(&tmp, &["node", "add", "n1", "--ip", "192.168.1.1", "--subnet", "10.129.4.0/23"]);
    assert!(out.contains("10.129.4.0/23"), "{out}");
    let err = oxsdnctl(&tmp, &["node", "add", "n2", "--ip", "192.168.1.2", "--subnet", "10.129.4.0/22"]).unwrap_err();
    assert!(err.contains("not a node subnet"), "{err}");
    let err = oxsdnctl(&tmp, &["node", "add", "n2", "--ip", "192.168.1.1", "--subnet", "10.129.6.0/23"]).unwrap_err();
    assert!(err.contains("already used by node"), "{err}");
    // Without --subnet, a node gets an allocated one, never the imported one.
    let out = ok(&tmp, &["node", "add", "n2", "--ip", "192.168.1.2"]);
    assert!(!out.contains("10.129.4.0/23"), "{out}");
}

#[test]
fn egress_ips_are_validated_as_a_whole_and_shown_as_oc_shows_them() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["node", "add", "node-a", "--ip", "10.0.0.1"]);
    ok(&tmp, &["node", "add", "node-b", "--ip", "10.0.0.2"]);
    assert_eq!(
        ok(&tmp, &["set", "hostsubnet-egress", "node-a", "--cidrs", "10.0.5.0/24"]),
        "hostsubnet.network.openshift.io/node-a patched\n"
    );
    ok(&tmp, &["set", "hostsubnet-egress", "node-b", "--cidrs", "10.0.6.0/24", "--ips", "10.0.6.7"]);
    assert_eq!(
        ok(&tmp, &["set", "egress-ips", "a", "10.0.5.10", "10.0.6.7"]),
        "netnamespace.network.openshift.io/a patched\n"
    );
    let refused = |args: &[&str], why: &str| {
        let before = (ok(&tmp, &["get", "netnamespaces"]), ok(&tmp, &["get", "hostsubnets"]));
        let err = oxsdnctl(&tmp, args).unwrap_err();
        assert!(err.contains(why), "{args:?}: {err}");
        assert_eq!((ok(&tmp, &["get", "netnamespaces"]), ok(&tmp, &["get", "hostsubnets"])), before, "{args:?}");
    };
    refused(&["set", "egress-ips", "b", "10.0.5.10"], "two projects, \"a\" and \"b\"");
    refused(&["set", "egress-ips", "b", "192.0.2.1"], "outside every node's network");
    refused(&["set", "egress-ips", "b", "10.0.0.2"], "node \"node-b\"'s own address");
    refused(&["set", "egress-ips", "b", "10.0.5.1", "10.0.5.1"], "given twice");
    refused(&["set", "egress-ips", "nope", "10.0.5.1"], "nope");
    refused(
        &["set", "hostsubnet-egress", "node-a", "--ips", "10.0.6.7", "--cidrs", "10.0.5.0/24,10.0.6.0/24"],
        "two nodes",
    );
    refused(&["set", "hostsubnet-egress", "node-a", "--cidrs", "10.0.5.1/24"], "network address");
    refused(&["set", "hostsubnet-egress", "node-c", "--cidrs", "10.0.5.0/24"], "node-c");
    // Clearing node-b's would leave project a's 10.0.6.7 outside every network.
    refused(&["set", "hostsubnet-egress", "node-b"], "outside every node's network");
    let table = ok(&tmp, &["get", "netnamespaces"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "NETID", "EGRESS", "IPS"], "{table}");
    assert!(table.contains(" [10.0.5.10 10.0.6.7]\n"), "{table}");
    let table = ok(&tmp, &["get", "hostsubnets"]);
    assert!(table.contains("node-b    node-b    10.0.0.2   10.129.0.0/23   [10.0.6.0/24]   [10.0.6.7]\n"), "{table}");
    // A global project has no egress IPs: making a with its own global is refused, both ways.
    refused(&["pod-network", "make-projects-global", "a"], "has egress IPs");
    ok(&tmp, &["pod-network", "make-projects-global", "b"]);
    refused(&["pod-network", "join-projects", "--to", "b", "a"], "has egress IPs");
    ok(&tmp, &["set", "egress-ips", "a"]);
    ok(&tmp, &["pod-network", "make-projects-global", "a"]);
    let table = ok(&tmp, &["get", "netnamespaces"]);
    assert!(table.lines().any(|l| l.starts_with("a ") && l.ends_with(" []")), "{table}");
    let json: serde_json::Value = serde_json::from_str(&ok(&tmp, &["get", "hostsubnets", "-o", "json"])).unwrap();
    assert_eq!(json[1]["egressIPs"], serde_json::json!(["10.0.6.7"]));
}

/// OpenShift's own objects, as `oc get -o yaml` prints them (status fields aside).
const EGRESS_MANIFESTS: &str = "apiVersion: network.openshift.io/v1
kind: HostSubnet
metadata:
  name: node-a
host: node-a
hostIP: 10.0.0.1
subnet: 10.128.0.0/23
egressCIDRs:
- 10.0.5.0/24
---
apiVersion: network.openshift.io/v1
kind: NetNamespace
metadata:
  name: a
netname: a
egressIPs:
- 10.0.5.10
- 10.0.5.11
";

#[test]
fn openshift_netnamespace_and_hostsubnet_manifests_set_egress() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["pod-network", "isolate-projects", "a"]);
    ok(&tmp, &["node", "add", "node-a", "--ip", "10.0.0.1"]);
    let file = manifest(&tmp, "egress.yaml", EGRESS_MANIFESTS);
    assert_eq!(
        ok(&tmp, &["apply", "-f", &file]),
        "hostsubnet.network.openshift.io/node-a configured\nnetnamespace.network.openshift.io/a configured\n"
    );
    assert_eq!(
        ok(&tmp, &["apply", "-f", &file]),
        "hostsubnet.network.openshift.io/node-a unchanged\nnetnamespace.network.openshift.io/a unchanged\n"
    );
    let table = ok(&tmp, &["get", "netnamespaces"]);
    assert!(table.lines().any(|l| l.starts_with("a ") && l.ends_with(" [10.0.5.10 10.0.5.11]")), "{table}");
    // Wrong facts about the node or the project, or a conflict: nothing applied.
    for (bad, why) in [
        (EGRESS_MANIFESTS.replace("hostIP: 10.0.0.1", "hostIP: 10.0.0.9"), "must be the node's"),
        (EGRESS_MANIFESTS.replace("netname: a", "netname: a\nnetid: 1234"), "is not the project's"),
        (EGRESS_MANIFESTS.replace("- 10.0.5.0/24", "- 10.0.7.0/24"), "outside every node's network"),
        (EGRESS_MANIFESTS.replace("- 10.0.5.11", "- 10.0.5.11\n- 10.0.5.11"), "given twice"),
        (EGRESS_MANIFESTS.replace("netname: a", "netname: a\nbogus: 1"), "bogus"),
    ] {
        let file = manifest(&tmp, "bad.yaml", &bad);
        let err = oxsdnctl(&tmp, &["apply", "-f", &file]).unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
        let table = ok(&tmp, &["get", "hostsubnets"]);
        assert!(table.contains("[10.0.5.0/24]"), "{table}");
    }
    let file = manifest(&tmp, "egress.yaml", EGRESS_MANIFESTS);
    assert!(oxsdnctl(&tmp, &["delete", "-f", &file]).unwrap_err().contains("follow projects and nodes"));
}

#[test]
fn an_applied_netnamespace_sets_its_annotations_and_keeps_others() {
    let tmp = cluster_with_projects();
    ok(&tmp, &["annotate", "netnamespace", "a", "example.com/owner=ops"]);
    let multicast = "apiVersion: network.openshift.io/v1
kind: NetNamespace
metadata:
  name: a
  annotations:
    netnamespace.network.openshift.io/multicast-enabled: \"true\"
netname: a
";
    let file = manifest(&tmp, "multicast.yaml", multicast);
    assert_eq!(ok(&tmp, &["apply", "-f", &file]), "netnamespace.network.openshift.io/a configured\n");
    assert_eq!(ok(&tmp, &["apply", "-f", &file]), "netnamespace.network.openshift.io/a unchanged\n");
    let all: Vec<NetNamespace> = serde_json::from_str(&ok(&tmp, &["get", "netnamespaces", "-o", "json"])).unwrap();
    let a = all.iter().find(|ns| ns.name == "a").unwrap();
    assert!(a.multicast_enabled(), "{a:?}");
    assert_eq!(a.annotations["example.com/owner"], "ops", "an annotation the manifest does not name is kept");
    // Refused, nothing applied: a bad key, and pod-network's request (only a master acts on it).
    for (bad, why) in [
        (multicast.replace("netnamespace.network", "-bad.network"), "metadata.annotations"),
        (
            multicast.replace(
                "netnamespace.network.openshift.io/multicast-enabled: \"true\"",
                "pod.network.openshift.io/multitenant.change-network: global",
            ),
            "use `oxsdnctl pod-network`",
        ),
    ] {
        let file = manifest(&tmp, "bad.yaml", &bad);
        let err = oxsdnctl(&tmp, &["apply", "-f", &file]).unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    }
    let all: Vec<NetNamespace> = serde_json::from_str(&ok(&tmp, &["get", "netnamespaces", "-o", "json"])).unwrap();
    assert_eq!(all.iter().find(|ns| ns.name == "a").unwrap().annotations.len(), 2);
}
