//! ClusterIP services, load-balanced in the dataplane: spread and stickiness, isolation
//! through services for every pod-network command, undeclared ports, hairpin, endpoint
//! changes under load (removed endpoints drain: TCP connections stay, UDP flows move),
//! also across agent restarts, UDP and fragments.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
};

use anyhow::Result;
use oxsdn_tests::{
    flows::packets,
    inventory::pinned_entries,
    probe::{serve_identity, udp_identity, IdentityClient, IdentityFlow},
    scenario::{allowed_between, wait_applied_everywhere, STEPS},
    Pod, TestCluster,
};

const PORT: u16 = 80;
const TARGET: u16 = 8080;

/// Pods of `project` named `name-<i>`, on the nodes in turn, each answering with its
/// name on TARGET (TCP and UDP).
fn backends(cluster: &TestCluster, project: &str, name: &str, count: usize) -> Result<Vec<Pod>> {
    (0..count)
        .map(|i| {
            let pod = cluster.nodes[i % cluster.nodes.len()].add_pod(project, &format!("{name}-{i}"))?;
            serve_identity(&pod.netns, TARGET, &pod.name)?;
            Ok(pod)
        })
        .collect()
}

/// Creates service `name` in `project` on TCP and UDP PORT -> TARGET with `endpoints`;
/// returns its ClusterIP.
fn service(cluster: &TestCluster, project: &str, name: &str, endpoints: &[&Pod]) -> Result<Ipv4Addr> {
    let ports = format!("{PORT}:{TARGET}");
    cluster.oxsdnctl(&["create", "service", name, "-n", project, "--tcp", &ports, "--udp", &ports])?;
    set_endpoints(cluster, project, name, endpoints)?;
    cluster.service_ip(project, name)
}

fn set_endpoints(cluster: &TestCluster, project: &str, name: &str, endpoints: &[&Pod]) -> Result<()> {
    let ips: Vec<String> = endpoints.iter().map(|p| p.ip.to_string()).collect();
    let mut args = vec!["set", "endpoints", name, "-n", project];
    args.extend(ips.iter().map(String::as_str));
    if ips.is_empty() {
        args.push("--none");
    }
    cluster.oxsdnctl(&args)?;
    // Within a second every node has it; give the watchers that long.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    Ok(())
}

/// Who answers a new TCP connection from `client` to the service (None: no answer).
fn ask_once(client: &Pod, ip: Ipv4Addr) -> Option<String> {
    IdentityClient::connect(&client.netns, ip, PORT).and_then(|mut c| c.ask()).ok()
}

/// Established TCP connections from `client` to the service, one answered by each of
/// `count` endpoints, by name.
fn one_connection_per_endpoint(client: &Pod, ip: Ipv4Addr, count: usize) -> Result<HashMap<String, IdentityClient>> {
    let mut open: HashMap<String, IdentityClient> = HashMap::new();
    for _ in 0..100 {
        let mut c = IdentityClient::connect(&client.netns, ip, PORT)?;
        let who = c.ask()?;
        open.entry(who).or_insert(c);
        if open.len() == count {
            return Ok(open);
        }
    }
    anyhow::bail!("100 connections reached only {:?}", open.keys().collect::<Vec<_>>())
}

/// A UDP flow from `client` to the service that endpoint `who` answers.
fn udp_flow_to(client: &Pod, ip: Ipv4Addr, who: &str) -> Result<IdentityFlow> {
    for _ in 0..100 {
        let flow = IdentityFlow::open(&client.netns, ip, PORT)?;
        if flow.ask()? == who {
            return Ok(flow);
        }
    }
    anyhow::bail!("100 UDP flows and none reached {who}")
}

#[test]
fn connections_spread_over_endpoints_on_two_nodes_and_stick() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let eps = backends(&cluster, "red", "web", 4)?;
    let ip = service(&cluster, "red", "web", &eps.iter().collect::<Vec<_>>())?;
    let client = cluster.nodes[0].add_pod("red", "client")?;

    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let mut conn = IdentityClient::connect(&client.netns, ip, PORT)?;
        assert_eq!(conn.peer()?, SocketAddr::from((ip, PORT)), "the client must see the service's address");
        let first = conn.ask()?;
        for _ in 0..3 {
            assert_eq!(conn.ask()?, first, "a connection moved to another endpoint");
        }
        *seen.entry(first).or_default() += 1;
    }
    assert_eq!(seen.len(), 4, "not every endpoint was used: {seen:?}");
    assert!(seen.values().all(|&n| n >= 5), "uneven spread over 60 connections: {seen:?}");
    let flows = cluster.nodes[0].dump_flows()?;
    assert_eq!(packets(&flows, 61, 100, "ct_state=+new"), 60, "one new connection each");
    Ok(())
}

#[test]
fn isolation_through_services_follows_pod_network_commands() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let red = backends(&cluster, "red", "red-web", 1)?;
    let blue = backends(&cluster, "blue", "blue-web", 1)?;
    let dflt = backends(&cluster, "default", "default-web", 1)?;
    let services = [
        ("red", service(&cluster, "red", "web", &[&red[0]])?),
        ("blue", service(&cluster, "blue", "web", &[&blue[0]])?),
        ("default", service(&cluster, "default", "web", &[&dflt[0]])?),
    ];
    let clients = [
        cluster.nodes[1].add_pod("red", "client-red")?,
        cluster.nodes[0].add_pod("blue", "client-blue")?,
        cluster.nodes[1].add_pod("default", "client-default")?,
    ];
    let check = |stage: usize| -> Result<()> {
        let mut bad = Vec::new();
        for client in &clients {
            for (project, ip) in &services {
                let want = allowed_between(stage, &client.project, project);
                let got = ask_once(client, *ip).is_some();
                if got != want {
                    bad.push(format!("{} -> service of {project}: expected {want}, got {got}", client.project));
                }
            }
        }
        anyhow::ensure!(bad.is_empty(), "after {stage} steps: {}", bad.join("; "));
        Ok(())
    };
    check(0)?;
    for (i, step) in STEPS.iter().enumerate() {
        cluster.oxsdnctl(step.command)?;
        wait_applied_everywhere(&cluster, &clients, step.changed)?;
        for (project, ip) in &services {
            wait_service_vnid(&cluster, project, *ip)?;
        }
        check(i + 1)?;
    }
    Ok(())
}

/// Waits until every node's table 60 loads the VNID the store now gives `project` for
/// the service at `ip` (the decision is the client node's, which may host no pod of
/// the project to show it).
fn wait_service_vnid(cluster: &TestCluster, project: &str, ip: Ipv4Addr) -> Result<()> {
    let want = format!("load:{:#x}->NXM_NX_REG1[]", cluster.netid(project)?);
    let rule = format!("tcp,nw_dst={ip},tp_dst={PORT}");
    let start = std::time::Instant::now();
    for node in &cluster.nodes {
        while !node.dump_flows()?.iter().any(|f| f.table == 60 && f.matches == rule && f.actions.starts_with(&want)) {
            anyhow::ensure!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "{}: table 60 never loaded {want} for {rule}",
                node.name
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    Ok(())
}

#[test]
fn undeclared_ports_are_dropped_and_a_pod_reaches_itself_through_its_service() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let eps = backends(&cluster, "red", "solo", 1)?;
    let ip = service(&cluster, "red", "solo", &[&eps[0]])?;
    let client = cluster.nodes[0].add_pod("red", "client")?;
    let before = packets(&cluster.nodes[0].dump_flows()?, 60, 0, "");
    assert!(IdentityClient::connect(&client.netns, ip, PORT + 1).is_err(), "undeclared port answered");
    assert!(packets(&cluster.nodes[0].dump_flows()?, 60, 0, "") > before, "not counted by table 60");
    // Hairpin: the only endpoint asks its own service.
    assert_eq!(ask_once(&eps[0], ip).as_deref(), Some("solo-0"));
    Ok(())
}

#[test]
fn endpoint_changes_keep_remaining_connections_and_new_ones_flowing() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let eps = backends(&cluster, "red", "web", 3)?;
    let ip = service(&cluster, "red", "web", &eps.iter().collect::<Vec<_>>())?;
    let client = cluster.nodes[0].add_pod("red", "client")?;
    // Established connections, one on each endpoint, and a UDP flow on web-2.
    let mut open = one_connection_per_endpoint(&client, ip, 3)?;
    let udp = udp_flow_to(&client, ip, "web-2")?;
    // A client keeps making connections while web-2 is taken out.
    let (failures, after) = std::thread::scope(|s| -> Result<(usize, Vec<String>)> {
        let load = s.spawn(|| {
            let mut failures = 0;
            let mut answers = Vec::new();
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(3) {
                match ask_once(&client, ip) {
                    Some(who) => answers.push((start.elapsed(), who)),
                    None => failures += 1,
                }
            }
            (failures, answers)
        });
        set_endpoints(&cluster, "red", "web", &[&eps[0], &eps[1]])?;
        let changed_at = std::time::Duration::from_millis(1100);
        let (failures, answers) = load.join().expect("load thread");
        Ok((failures, answers.into_iter().filter(|(t, _)| *t > changed_at).map(|(_, w)| w).collect()))
    })?;
    assert_eq!(failures, 0, "connections failed while an endpoint was removed");
    assert!(
        !after.is_empty() && after.iter().all(|w| w != "web-2"),
        "the removed endpoint still got new connections: {after:?}"
    );
    for who in ["web-0", "web-1"] {
        let conn = open.get_mut(who).expect("open");
        assert_eq!(conn.ask()?, who, "an established connection to a remaining endpoint broke");
    }
    // web-2 drains: its established connection goes on; its UDP flow moved at once.
    let conn = open.get_mut("web-2").expect("open");
    assert_eq!(conn.ask()?, "web-2", "the established connection to the removed endpoint broke");
    let moved = udp.ask()?;
    assert!(moved == "web-0" || moved == "web-1", "the UDP flow of the removed endpoint went to {moved}");
    let flows = cluster.nodes[0].dump_flows()?;
    assert!(
        packets(&flows, 61, 150, "tcp,ct_state=+est,endpoint=draining") > 0,
        "table 61's draining rule counted nothing"
    );
    // Listed again, it serves new connections again.
    set_endpoints(&cluster, "red", "web", &eps.iter().collect::<Vec<_>>())?;
    let mut again = (0..60).filter_map(|_| ask_once(&client, ip));
    assert!(again.any(|w| w == "web-2"), "web-2 listed again got no new connection");
    Ok(())
}

/// Drain records outlive the agent, and an endpoint removed while no agent ran drains
/// once the next one starts: their established connections go on, new connections and
/// UDP flows avoid them.
#[test]
fn removed_endpoints_drain_across_agent_restarts() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let eps = backends(&cluster, "red", "web", 3)?;
    let ip = service(&cluster, "red", "web", &eps.iter().collect::<Vec<_>>())?;
    let client = cluster.nodes[0].add_pod("red", "client")?;
    let mut open = one_connection_per_endpoint(&client, ip, 3)?;
    let udp = udp_flow_to(&client, ip, "web-1")?;
    set_endpoints(&cluster, "red", "web", &[&eps[0], &eps[1]])?;
    cluster.nodes[0].kill_agent();
    set_endpoints(&cluster, "red", "web", &[&eps[0]])?;
    cluster.nodes[0].start_agent()?;
    let draining = pinned_entries(&cluster.nodes[0], "DRAINING")?;
    assert_eq!(draining.len(), 2, "drain records after the restart: {draining:?}");
    for who in ["web-0", "web-1", "web-2"] {
        assert_eq!(open.get_mut(who).expect("open").ask()?, who, "the established connection to {who} broke");
    }
    assert_eq!(udp.ask()?, "web-0", "the UDP flow of the endpoint removed while no agent ran did not move");
    for _ in 0..20 {
        assert_eq!(ask_once(&client, ip).as_deref(), Some("web-0"), "a new connection went elsewhere");
    }
    // Deleting the service takes its drain records along.
    cluster.oxsdnctl(&["delete", "service", "web", "-n", "red"])?;
    let start = std::time::Instant::now();
    while !pinned_entries(&cluster.nodes[0], "DRAINING")?.is_empty() {
        anyhow::ensure!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "drain records left after the service was deleted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn udp_services_and_fragmented_datagrams() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let eps = backends(&cluster, "red", "dns", 2)?;
    let ip = service(&cluster, "red", "dns", &eps.iter().collect::<Vec<_>>())?;
    let client = cluster.nodes[0].add_pod("red", "client")?;
    let mut seen = std::collections::HashSet::new();
    for i in 0..30 {
        let payload = format!("query-{i}").into_bytes();
        let (who, echo, from) = udp_identity(&client.netns, ip, PORT, payload.clone())?;
        assert_eq!(from, SocketAddr::from((ip, PORT)), "UDP answer not from the service address");
        assert_eq!(echo, payload);
        seen.insert(who);
    }
    assert_eq!(seen.len(), 2, "UDP not spread over both endpoints");
    // A datagram larger than the MTU travels in fragments both ways.
    let big: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let (_, echo, from) = udp_identity(&client.netns, ip, PORT, big.clone())?;
    assert_eq!(from, SocketAddr::from((ip, PORT)));
    assert_eq!(echo, big, "fragmented datagram mangled");
    Ok(())
}

#[test]
fn the_node_itself_reaches_services_on_both_nodes() -> Result<()> {
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    cluster.add_node("node2")?;
    let eps = backends(&cluster, "blue", "web", 2)?;
    let ip = service(&cluster, "blue", "web", &eps.iter().collect::<Vec<_>>())?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        let mut conn = IdentityClient::connect(&cluster.nodes[0].netns, ip, PORT)?;
        assert_eq!(conn.peer()?, SocketAddr::from((ip, PORT)));
        seen.insert(conn.ask()?);
    }
    assert_eq!(seen.len(), 2, "the node's connections did not reach both endpoints: {seen:?}");
    let (_, echo, from) = udp_identity(&cluster.nodes[1].netns, ip, PORT, b"from node2".to_vec())?;
    assert_eq!((echo.as_slice(), from), (&b"from node2"[..], SocketAddr::from((ip, PORT))));
    Ok(())
}

/// A tenant flooding its own service with new UDP flows (twice what the tracking tables
/// held when they were LRU) cannot break another tenant's established connections, busy
/// or idle, nor keep it from opening new ones: the flooder's share of the tables runs
/// out (counted), and nothing is ever evicted (the differential test's
/// `full_connection_tables_refuse_new_connections_and_keep_every_entry` shows that part
/// deterministically).
#[test]
fn a_flood_of_new_flows_leaves_other_tenants_connections_alone() -> Result<()> {
    use oxsdn_tests::{frames, probe::RawSocket};
    // Two services of blue's, every source port to each: twice the entries the tables
    // held when they were LRU.
    const PORTS: std::ops::Range<u16> = 1024..65535;
    let mut cluster = TestCluster::new(&[])?;
    cluster.add_node("node1")?;
    let red_eps = backends(&cluster, "red", "web", 2)?;
    let red = service(&cluster, "red", "web", &red_eps.iter().collect::<Vec<_>>())?;
    let blue_eps = backends(&cluster, "blue", "sink", 1)?;
    let blue = [
        service(&cluster, "blue", "sink", &blue_eps.iter().collect::<Vec<_>>())?,
        service(&cluster, "blue", "drain", &blue_eps.iter().collect::<Vec<_>>())?,
    ];
    let client = cluster.nodes[0].add_pod("red", "client")?;
    let flooder = cluster.nodes[0].add_pod("blue", "flooder")?;
    let mut open: Vec<(String, IdentityClient)> = (0..20)
        .map(|_| {
            let mut c = IdentityClient::connect(&client.netns, red, PORT)?;
            Ok((c.ask()?, c))
        })
        .collect::<Result<_>>()?;

    let (src_mac, gw_mac) = (frames::pod_mac(flooder.ip), frames::pod_mac(Ipv4Addr::new(10, 128, 0, 1)));
    let flood = {
        let tx = RawSocket::open(&flooder.netns, "eth0")?;
        let src = flooder.ip;
        std::thread::spawn(move || -> Result<()> {
            // Every flow's datagram twice: its entries are used again at once, as a real
            // client's are, so an LRU keeps them over older, idle ones.
            for service in blue {
                for sport in PORTS {
                    let frame = frames::udp_from(src_mac, gw_mac, (src, sport), (service, PORT), b"flood");
                    tx.send(&frame)?;
                    tx.send(&frame)?;
                }
            }
            Ok(())
        })
    };
    // Half the connections exchange data throughout the flood; the other half stay idle
    // (nothing refreshes their entries). After it, every one answers, from the endpoint
    // it had.
    let (busy, idle) = open.split_at_mut(10);
    while !flood.is_finished() {
        for (who, c) in busy.iter_mut() {
            assert_eq!(&c.ask()?, who, "an established connection of red broke during blue's flood");
        }
    }
    flood.join().expect("the flood thread")?;
    for (who, c) in busy.iter_mut().chain(idle.iter_mut()) {
        for _ in 0..3 {
            assert_eq!(&c.ask()?, who, "an established connection of red broke after blue's flood");
        }
    }
    let flows = cluster.nodes[0].dump_flows()?;
    let over_quota = packets(&flows, 61, 100, "ct_state=+new,ct_zone_limit=reached");
    assert!(over_quota > 0, "blue's flood never reached its share of the tables");
    // Red still opens new connections: its share is its own.
    assert!(ask_once(&client, red).is_some(), "red cannot open a new connection after blue's flood");
    Ok(())
}
