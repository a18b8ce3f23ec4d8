//! The cluster store holds every project's VNID, so whoever can write it decides
//! isolation. etcd serves clients over TLS only to holders of a certificate of its CA,
//! with etcd's auth on: a pod (or any host without such a certificate) gets nothing from
//! it, a node's credentials write only the node's own HostSubnet, the operator's
//! everything; certificates etcd does not trust, and plain HTTP to a remote etcd, are
//! refused with clear errors.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::Path,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use base64::{engine::general_purpose::STANDARD, Engine};
use oxsdn_tests::{
    bins,
    cluster::StoreArgs,
    cni::CniCall,
    etcd::{EtcdServer, Ports, Transport},
    inventory::Inventory,
    netns::{run, Netns},
    pki::Pki,
    probe::{serve_echo, tcp_echo, ECHO_PORT},
    TestCluster,
};
use serde_json::Value;

/// What one HTTP request to `addr` from inside `ns` got back: empty if nothing (no
/// connection, no answer within 2 s).
fn http_post(ns: &Netns, addr: SocketAddr, path: &str, body: &str) -> Result<String> {
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    ns.enter(move || {
        let timeout = Duration::from_secs(2);
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, timeout) else {
            return String::new();
        };
        let _ = conn.set_read_timeout(Some(timeout));
        let _ = conn.write_all(request.as_bytes());
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
}

/// `curl` over TLS (not checking etcd's certificate, which is no secret anyway) from
/// inside `ns`, with `extra` options.
fn curl(ns: &Netns, url: &str, body: &str, extra: &[&Path]) -> Result<Output> {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "--max-time", "3", "-k", url, "-d", body]);
    if let [cert, key] = extra {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.output().context("running curl")
}

/// Whether etcd answered a KV request (its JSON answers carry a header naming the
/// cluster).
fn etcd_answered(text: &str) -> bool {
    text.contains("cluster_id") || text.contains("kvs")
}

/// Every project, node and service, as the operator reads them.
fn store_state(cluster: &TestCluster) -> Result<Vec<String>> {
    ["netnamespaces", "hostsubnets", "services"]
        .iter()
        .map(|kind| cluster.oxsdnctl(&["get", kind, "-o", "json"]))
        .collect()
}

#[test]
fn pods_and_hosts_without_a_certificate_get_nothing_from_etcd() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let attacker = cluster.nodes[0].add_pod("blue", "attacker")?;
    let victim = cluster.nodes[1].add_pod("red", "victim")?;
    serve_echo(&victim.netns, ECHO_PORT)?;
    let etcd = cluster.etcd.as_ref().context("etcd")?.client_addr();
    let before = store_state(&cluster)?;
    // The requests of the attack that worked against an open etcd: list every key of
    // oxsdn's, and give the attacker's project the victim's VNID.
    let red = cluster.netid("red")?;
    let list = format!(r#"{{"key":"{}","range_end":"{}"}}"#, STANDARD.encode("/oxsdn/"), STANDARD.encode("/oxsdn0"));
    let blue = format!(r#"{{"name":"blue","netid":{red},"id":1,"labels":{{}}}}"#);
    let steal =
        format!(r#"{{"key":"{}","value":"{}"}}"#, STANDARD.encode("/oxsdn/netnamespaces/blue"), STANDARD.encode(blue));
    let own_ca = Pki::new(&cluster.dir.join("attacker-pki"), "attacker's CA")?.client("root")?;

    for (who, ns) in [("pod", &attacker.netns), ("host outside the cluster", &cluster.external)] {
        for (path, body) in [("/v3/kv/range", &list), ("/v3/kv/put", &steal)] {
            let plain = http_post(ns, etcd, path, body)?;
            assert!(!etcd_answered(&plain), "{who}: plain HTTP {path} answered: {plain}");
            let url = format!("https://{etcd}{path}");
            for cert in [vec![], vec![own_ca.cert.as_path(), own_ca.key.as_path()]] {
                let out = curl(ns, &url, body, &cert)?;
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    !out.status.success() && !etcd_answered(&stdout),
                    "{who}: TLS {path} with {cert:?} answered: {stdout}"
                );
                if who != "pod" {
                    // Reached etcd (pods may not reach it at all), which refused the
                    // handshake: 7 and 28 would be no connection at all.
                    assert!(
                        ![Some(7), Some(28)].contains(&out.status.code()),
                        "{who}: curl {:?}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
    }
    assert_eq!(store_state(&cluster)?, before, "the store changed");
    assert!(!tcp_echo(&attacker.netns, victim.ip, ECHO_PORT), "the attacker reaches the isolated victim");
    Ok(())
}

#[test]
fn a_nodes_credentials_write_only_its_own_hostsubnet() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    cluster.oxsdnctl(&["create", "project", "red"])?;
    let node1 = cluster.nodes[0].store.clone();
    let before = store_state(&cluster)?;
    // The node's agent registered it (it runs with these credentials); reading works.
    assert!(cluster.oxsdnctl_as(&node1, &["get", "hostsubnets"])?.contains("node1"));
    type Tool = fn(&TestCluster, &StoreArgs, &[&str]) -> Result<String>;
    let (oxsdnctl, hammer): (Tool, Tool) = (TestCluster::oxsdnctl_as, TestCluster::store_hammer_as);
    let attempts: [(Tool, &[&str], &str); 7] = [
        (oxsdnctl, &["node", "add", "node2", "--ip", "172.22.122.99"], "/oxsdn/hostsubnets/node2"),
        (oxsdnctl, &["node", "delete", "node2"], "/oxsdn/hostsubnets/node2"),
        (oxsdnctl, &["create", "project", "green"], "/oxsdn/netnamespaces/green"),
        (oxsdnctl, &["pod-network", "make-projects-global", "red"], "/oxsdn/netnamespaces/red"),
        (oxsdnctl, &["create", "service", "web", "-n", "red", "--tcp", "80"], "/oxsdn/services/red/web"),
        // Raw writes (the configuration's key too: see store::roles's tests).
        (hammer, &["--key", "/oxsdn/counters/project-id", "--count", "1"], "/oxsdn/counters/project-id"),
        (hammer, &["--key", "/oxsdn/netnamespaces/zz", "--count", "1"], "/oxsdn/netnamespaces/zz"),
    ];
    for (tool, args, key) in attempts {
        let err = format!("{:#}", tool(&cluster, &node1, args).err().with_context(|| format!("{args:?} succeeded"))?);
        assert!(err.contains("store permission denied: etcd at https://172.22.122.1:2379"), "{args:?}: {err}");
        let written = err.split("the transaction writes ").nth(1).unwrap_or_default();
        assert!(written.contains(key), "{args:?}: {err}");
    }
    assert_eq!(store_state(&cluster)?, before, "a refused write changed the store");
    // The operator's credentials may.
    cluster.oxsdnctl(&["pod-network", "make-projects-global", "red"])?;
    cluster.oxsdnctl(&["node", "delete", "node2"])?;
    Ok(())
}

#[test]
fn a_pod_of_a_project_no_operator_created_is_refused_and_leaves_nothing() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    let node = &cluster.nodes[0];
    let ns = Netns::create(&format!("{}-green", cluster.prefix))?;
    let add = CniCall::add(&node.network_config()?, "green-pod", &ns.path(), "green", "g");
    let before = Inventory::take(node)?;
    let out = node.cni(&add);
    out.error_code()?;
    let msg: Value = serde_json::from_str(&out.stdout)?;
    let msg = msg["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with(
            "project \"green\" does not exist and this node may not create it: an operator creates it with `oxsdnctl create project green`"
        ),
        "{msg}"
    );
    let left = before.differences(&Inventory::take(node)?);
    assert!(left.is_empty(), "the refused ADD left state behind: {left:#?}");
    assert_eq!(ns.ip(&["-o", "link"])?.lines().count(), 1, "the pod's namespace was changed");
    assert!(cluster.netids()?.iter().all(|(name, _)| name != "green"), "the project was created");
    // Once an operator created it, the same ADD succeeds.
    cluster.oxsdnctl(&["create", "project", "green"])?;
    node.cni(&add).success()?;
    Ok(())
}

/// Runs the agent in `ns` with `store` (and directories of its own in `dir`), which
/// must exit within 10 s (it is killed otherwise); its success and stderr.
fn agent_exits(ns: &Netns, node_ip: Ipv4Addr, store: &[std::ffi::OsString], dir: &Path) -> Result<(bool, String)> {
    let mut child = ns
        .command(bins::agent())
        .args(["--node-name", "node1", "--node-ip", &node_ip.to_string()])
        .args(store)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--socket")
        .arg(dir.join("cni.sock"))
        .arg("--bpffs-dir")
        .arg(dir.join("bpffs"))
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"))
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            let out = child.wait_with_output()?;
            bail!("the agent kept trying for 10 s: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn certificates_etcd_does_not_trust_or_that_do_not_verify_are_refused() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    let foreign = Pki::new(&cluster.dir.join("foreign-pki"), "another CA")?;
    let StoreArgs::Etcd { endpoint, cert: Some(operator) } = cluster.store.clone() else { bail!("no certificate") };
    let agent_cert = cluster.etcd_user("oxsdn-node-node1")?;
    let StoreArgs::Etcd { cert: Some(agent_cert), .. } = agent_cert else { bail!("no certificate") };
    let cases = [
        (
            operator.trusting(&foreign.ca()),
            agent_cert.trusting(&foreign.ca()),
            "etcd's certificate does not verify against --etcd-cacert",
        ),
        (
            foreign.client("oxsdn-operator")?.trusting(&operator.ca),
            foreign.client("oxsdn-node-node1")?.trusting(&operator.ca),
            "etcd refused the etcd user of certificate",
        ),
    ];
    for (i, (cli_cert, agent_cert, why)) in cases.into_iter().enumerate() {
        let cli = StoreArgs::Etcd { endpoint: endpoint.clone(), cert: Some(cli_cert) };
        let err =
            format!("{:#}", cluster.oxsdnctl_as(&cli, &["get", "netnamespaces"]).err().context("oxsdnctl succeeded")?);
        assert!(err.contains(why), "{err}");
        // The agent gives up at once with the same reason, rather than waiting for an
        // etcd that will never take it.
        let agent = StoreArgs::Etcd { endpoint: endpoint.clone(), cert: Some(agent_cert) };
        let node = &cluster.nodes[0];
        let (ok, stderr) = agent_exits(&node.netns, node.ip, &agent.args(), &cluster.dir.join(format!("agent{i}")))?;
        assert!(!ok && stderr.contains(why), "{stderr}");
    }
    Ok(())
}

#[test]
fn plain_http_to_a_remote_etcd_only_with_etcd_insecure() -> Result<()> {
    // A plain etcd on an address of its namespace's that is not loopback.
    let name = format!("oxt{}-plain", std::process::id());
    let ns = Netns::create(&name)?;
    let dir = std::env::temp_dir().join(&name);
    ns.ip(&["addr", "add", "198.18.0.1/32", "dev", "lo"])?;
    let etcd = EtcdServer::start(
        &dir.join("etcd"),
        Ports { ip: Ipv4Addr::new(198, 18, 0, 1), client: 2379, peer: 2380, metrics: 2381 },
        Some(&ns),
        Transport::Plain,
    )?;
    let endpoint = etcd.endpoint();
    let oxsdnctl = |env: &[(&str, &str)], args: &[&str]| {
        run(ns.command(bins::oxsdnctl()).args(["--etcd-endpoints", &endpoint]).envs(env.iter().copied()).args(args))
    };
    let refusal = format!("refusing plain HTTP to etcd endpoint {endpoint}: it is not a loopback address");
    let err = format!("{:#}", oxsdnctl(&[], &["init"]).err().context("init over plain HTTP succeeded")?);
    assert!(err.contains(&refusal), "{err}");
    let (ok, stderr) =
        agent_exits(&ns, Ipv4Addr::new(198, 18, 0, 1), &["--etcd-endpoints".into(), endpoint.clone().into()], &dir)?;
    assert!(!ok && stderr.contains(&refusal), "{stderr}");
    assert!(!dir.join("net.d").exists() && !dir.join("state").exists(), "the agent did something before refusing");
    // Said explicitly, it works.
    oxsdnctl(&[], &["--etcd-insecure", "init"])?;
    oxsdnctl(&[("OXSDN_ETCD_INSECURE", "true")], &["create", "project", "a"])?;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Whatever the store's own protection, pods cannot open connections to it: table 100
/// drops them and counts them (defence in depth). The node itself still reaches it.
#[test]
fn pods_cannot_open_connections_to_the_store_endpoints() -> Result<()> {
    let mut cluster = TestCluster::with_etcd(&[])?;
    cluster.add_node("node1")?;
    let pod = cluster.nodes[0].add_pod("blue", "attacker")?;
    let etcd = cluster.etcd.as_ref().context("etcd")?.client_addr();
    let store_rule = |cluster: &TestCluster| -> Result<u64> {
        let flows = cluster.nodes[0].dump_flows()?;
        Ok(oxsdn_tests::flows::packets(&flows, 100, 350, "ip,nw_dst:tp_dst=cluster_store"))
    };
    let before = store_rule(&cluster)?;
    let connected = pod.netns.enter(move || TcpStream::connect_timeout(&etcd, Duration::from_secs(1)).is_ok())?;
    assert!(!connected, "a pod opened a TCP connection to etcd at {etcd}");
    assert!(store_rule(&cluster)? > before, "table 100 did not count the dropped SYN");
    // The node's own connections are not the pods': the agent still reads and writes
    // (a new project's pod goes through the store).
    cluster.nodes[0].add_pod("green", "after")?;
    Ok(())
}
