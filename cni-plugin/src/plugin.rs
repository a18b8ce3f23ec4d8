//! The `oxsdn` CNI plugin's commands: what the binary runs, given the CNI environment and the
//! network config from stdin.
//!
//! The plugin does the per-pod kernel plumbing (veth pair, pod interface configuration); the
//! node agent, reached over its Unix socket, owns the IPAM, the project (VNID) lookup and the
//! datapath. See `client` for the transport and its error codes.

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;

use crate::client;
use crate::config::{self, NetConf};
use crate::del_queue::{self, Deletion};
use crate::env::{invalid_env, CniCommand, CniEnv};
use crate::error::{code, CniError};
use crate::naming::host_veth_name;
use crate::netlink::{self, Handle};
use crate::netns::{is_current_netns, open_netns, with_netlink, with_netlink_in};
use crate::protocol::{Attachment, Command, PodNetwork, Request, Response, MAX_MESSAGE_BYTES};
use crate::result::{add_result, check_prev_result, parse_ipv4_cidr, parse_prev_result, version_result};
use crate::version::{command_needs, error_tag, CniVersion};

/// MTU of a new veth pair until the agent tells the real one.
pub const INITIAL_MTU: u32 = 1450;
/// The loopback device's index in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;
/// How long the best-effort DEL sent after a failed ADD may wait for the agent.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long ADD waits for an agent to listen: one restarting (an upgrade) takes under a
/// second (docs/design.md, CNI).
pub const AGENT_START_WAIT: Duration = Duration::from_secs(10);

/// What the binary prints and how it exits.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// JSON for stdout (a result, VERSION's answer, or an error); `None` prints nothing.
    pub stdout: Option<Value>,
    /// Process exit status: 0 on success, 1 on error.
    pub exit_code: i32,
}

impl Outcome {
    fn error(version_tag: &str, e: &CniError) -> Outcome {
        Outcome { stdout: Some(e.to_json(version_tag)), exit_code: 1 }
    }
}

/// How long one invocation may take in all, whatever it waits on (stdin, the agent, the
/// kernel): the longest legitimate ADD waits [`AGENT_START_WAIT`] for the agent, then
/// [`client::RESPONSE_TIMEOUT`] for its answer, then [`ROLLBACK_TIMEOUT`] to undo.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// Run the whole invocation (read the config from `stdin`, run the command) within
/// `deadline`: past it the answer is code 11 and the caller exits, abandoning the work
/// (a runtime then cleans up with DEL, which is idempotent). A panic is code 100.
pub fn run_within(deadline: Duration, env: CniEnv, stdin: impl std::io::Read + Send + 'static) -> Outcome {
    let (tx, rx) = mpsc::channel();
    // The config's cniVersion, once read, tags a timeout's error like any other.
    let version_tag = Arc::new(OnceLock::new());
    let worker_tag = version_tag.clone();
    std::thread::spawn(move || {
        let outcome = match read_bounded(stdin) {
            Ok(stdin) => {
                let _ = worker_tag.set(error_tag(config::requested_version(&stdin).as_deref()));
                run(&env, &stdin)
            }
            Err(e) => Outcome::error(
                CniVersion::LATEST.as_str(),
                &CniError::new(code::IO_FAILURE, "cannot read the network config from stdin")
                    .with_details(e.to_string()),
            ),
        };
        let _ = tx.send(outcome);
    });
    let failure = match rx.recv_timeout(deadline) {
        Ok(outcome) => return outcome,
        Err(RecvTimeoutError::Timeout) => CniError::new(
            code::TRY_AGAIN_LATER,
            format!("oxsdn CNI plugin did not finish within {} s", deadline.as_secs_f32()),
        ),
        Err(RecvTimeoutError::Disconnected) => CniError::new(code::INTERNAL, "oxsdn CNI plugin: internal error"),
    };
    let tag = version_tag.get().map_or(CniVersion::LATEST.as_str(), String::as_str);
    Outcome::error(tag, &failure)
}

/// Read at most `MAX_MESSAGE_BYTES + 1` bytes (one more than accepted, so an oversized config
/// is detected and refused with code 6 rather than silently truncated).
pub fn read_bounded(r: impl std::io::Read) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut r.take(MAX_MESSAGE_BYTES as u64 + 1), &mut buf)?;
    Ok(buf)
}

/// Run the command `env` names on the config `stdin`. Never panics on any input.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Outcome {
    match dispatch(env, stdin) {
        Ok(stdout) => Outcome { stdout, exit_code: 0 },
        Err((tag, e)) => Outcome::error(&tag, &e),
    }
}

fn dispatch(env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>, (String, CniError)> {
    let cmd = env.command().map_err(|e| (error_tag(config::requested_version(stdin).as_deref()), e))?;
    if cmd == CniCommand::Version {
        return Ok(Some(version_result(config::requested_version(stdin).as_deref())));
    }
    let conf = config::parse_netconf(stdin).map_err(|ce| (error_tag(ce.requested_version.as_deref()), ce.error))?;
    let out = match cmd {
        CniCommand::Add => cmd_add(env, &conf).map(Some),
        CniCommand::Del => cmd_del(env, &conf).map(|()| None),
        CniCommand::Check => cmd_check(env, &conf).map(|()| None),
        CniCommand::Status => cmd_status(&conf).map(|()| None),
        CniCommand::Gc => cmd_gc(&conf).map(|()| None),
        CniCommand::Version => unreachable!("handled above"),
    };
    out.map_err(|e| (conf.cni_version.as_str().to_string(), e))
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn nl(what: impl Into<String>) -> impl FnOnce(netlink::Error) -> CniError {
    let what = what.into();
    move |e| CniError::new(code::INTERNAL, what).with_details(e.to_string())
}

/// Run a netlink session in the node's (the caller's) namespace.
fn in_node<T, F, Fut>(f: F) -> Result<T, CniError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, CniError>>,
{
    with_netlink(f)
        .map_err(|e| CniError::new(code::IO_FAILURE, "cannot open a netlink socket").with_details(e.to_string()))?
}

/// Run a netlink session inside the pod's namespace.
fn in_pod<T, F, Fut>(netns: BorrowedFd<'_>, path: &str, f: F) -> Result<T, CniError>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T, CniError>>,
{
    with_netlink_in(netns, f).map_err(|e| {
        CniError::new(code::IO_FAILURE, format!("cannot enter network namespace {path}")).with_details(e.to_string())
    })?
}

fn request(command: Command) -> Request {
    Request::of(command)
}

fn unexpected(command: &str, r: &Response) -> CniError {
    let kind = match r {
        Response::Pod(_) => "a pod network",
        Response::Done => "done",
        Response::Error(_) => "an error",
        Response::Health(_) => "its health report",
    };
    CniError::new(code::INTERNAL, format!("oxsdn node agent answered {command} with {kind}"))
}

fn expect_pod(r: Response, command: &str) -> Result<PodNetwork, CniError> {
    match r {
        Response::Pod(p) => Ok(p),
        Response::Error(e) => Err(e),
        other => Err(unexpected(command, &other)),
    }
}

fn expect_done(r: Response, command: &str) -> Result<(), CniError> {
    match r {
        Response::Done => Ok(()),
        Response::Error(e) => Err(e),
        other => Err(unexpected(command, &other)),
    }
}

/// The agent's pod network, checked before any of it is applied.
struct Applied {
    mac: [u8; 6],
    cluster: (std::net::Ipv4Addr, u8),
}

fn validate_pod_network(p: &PodNetwork) -> Result<Applied, CniError> {
    let bad = |why: String| {
        CniError::new(code::INTERNAL, "oxsdn node agent returned an invalid pod network").with_details(why)
    };
    if p.prefix_len == 0 || p.prefix_len > 32 {
        return Err(bad(format!("prefix length {}", p.prefix_len)));
    }
    if !(68..=65535).contains(&p.mtu) {
        return Err(bad(format!("MTU {}", p.mtu)));
    }
    if p.gateway == p.ip {
        return Err(bad(format!("gateway {} is the pod address", p.gateway)));
    }
    let mac = netlink::parse_mac(&p.mac).ok_or_else(|| bad(format!("MAC {:?}", p.mac)))?;
    let cluster =
        parse_ipv4_cidr(&p.cluster_network).ok_or_else(|| bad(format!("cluster network {:?}", p.cluster_network)))?;
    Ok(Applied { mac, cluster })
}

/// ADD waits up to [`AGENT_START_WAIT`] for the agent's socket, and without one fails
/// (code 11) before touching the network.
fn wait_for_agent_socket(socket: &Path) -> Result<(), CniError> {
    let start = std::time::Instant::now();
    loop {
        match std::fs::symlink_metadata(socket) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= AGENT_START_WAIT => return Err(client::agent_unavailable(socket, &e)),
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ADD

/// What a failed ADD has to undo.
#[derive(Default)]
struct AddProgress {
    veth_created: bool,
    agent_called: bool,
}

fn cmd_add(env: &CniEnv, conf: &NetConf) -> Result<Value, CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns_path = env.netns()?;
    let args = env.cni_args()?;
    let pod_namespace = args.project(conf.default_project.as_deref())?;

    let netns = open_netns(netns_path)?;
    wait_for_agent_socket(&conf.agent_socket)?;
    match is_current_netns(netns.as_fd()) {
        Ok(false) => {}
        Ok(true) => return Err(invalid_env(format!("CNI_NETNS {netns_path} is the node's own network namespace"))),
        Err(e) => {
            return Err(
                CniError::new(code::IO_FAILURE, format!("cannot inspect {netns_path}")).with_details(e.to_string())
            )
        }
    }

    let existing = in_pod(netns.as_fd(), netns_path, |h| async move {
        netlink::get_link(&h, ifname).await.map_err(nl(format!("cannot look up {ifname} in {netns_path}")))
    })?;
    if existing.is_some() {
        return Err(invalid_env(format!("interface {ifname} already exists in network namespace {netns_path}")));
    }

    let host = host_veth_name(container_id, ifname);
    let mut req = request(Command::Add);
    req.attachment = Some(Attachment { container_id: container_id.to_string(), ifname: ifname.to_string() });
    req.netns = Some(netns_path.to_string());
    req.pod_namespace = Some(pod_namespace.to_string());
    req.pod_name = args.pod_name.clone();
    req.host_veth = Some(host.clone());
    req.port_mappings = conf.runtime.port_mappings.clone();
    req.bandwidth = conf.runtime.bandwidth;

    let mut progress = AddProgress::default();
    let result = add_steps(conf, &req, ifname, netns.as_fd(), netns_path, &host, &mut progress);
    if result.is_err() {
        rollback_add(conf, &req, &host, &progress);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn add_steps(
    conf: &NetConf,
    req: &Request,
    ifname: &str,
    netns: BorrowedFd<'_>,
    netns_path: &str,
    host: &str,
    progress: &mut AddProgress,
) -> Result<Value, CniError> {
    // The pair: the host end in the node's namespace, the pod end created directly in
    // the pod's under its final name. A host veth of that name is left over from an
    // earlier, interrupted ADD of this same attachment (deleting it deletes its pair).
    in_node(|h| {
        let progress = &mut *progress;
        async move {
            netlink::delete_link_by_name(&h, host).await.map_err(nl(format!("cannot delete stale {host}")))?;
            netlink::create_veth(&h, host, ifname, INITIAL_MTU, Some(netns))
                .await
                .map_err(nl(format!("cannot create veth pair {host}/{ifname} in {netns_path}")))?;
            progress.veth_created = true;
            Ok(())
        }
    })?;

    // The agent: address, project, datapath.
    progress.agent_called = true;
    let pod = expect_pod(client::call_when_listening(&conf.agent_socket, req, AGENT_START_WAIT)?, "ADD")?;
    let applied = validate_pod_network(&pod)?;

    // Host end: real MTU, up.
    in_node(|h| async move {
        let link = netlink::get_link(&h, host)
            .await
            .map_err(nl(format!("cannot look up {host}")))?
            .ok_or_else(|| CniError::new(code::INTERNAL, format!("host veth {host} vanished")))?;
        netlink::configure_up(&h, link.index, None, pod.mtu).await.map_err(nl(format!("cannot bring {host} up")))
    })?;

    // Pod end: MAC, MTU, up; address; lo up; routes.
    let pod_ref = &pod;
    let applied_ref = &applied;
    in_pod(netns, netns_path, |h| async move {
        let pod = pod_ref;
        let link = netlink::get_link(&h, ifname)
            .await
            .map_err(nl(format!("cannot look up {ifname}")))?
            .ok_or_else(|| CniError::new(code::INTERNAL, format!("{ifname} vanished from {netns_path}")))?;
        let i = link.index;
        netlink::configure_up(&h, i, Some(applied_ref.mac), pod.mtu)
            .await
            .map_err(nl(format!("cannot set up {ifname}")))?;
        netlink::add_address(&h, i, pod.ip, pod.prefix_len)
            .await
            .map_err(nl(format!("cannot add {}/{} to {ifname}", pod.ip, pod.prefix_len)))?;
        netlink::set_up(&h, LOOPBACK_IFINDEX).await.map_err(nl("cannot bring lo up"))?;
        let (net, len) = applied_ref.cluster;
        netlink::add_onlink_route(&h, i, net, len)
            .await
            .map_err(nl(format!("cannot add the route to {}", pod.cluster_network)))?;
        netlink::add_default_route(&h, i, pod.gateway)
            .await
            .map_err(nl(format!("cannot add the default route via {}", pod.gateway)))
    })?;

    // The end of the pair that came up first gets its carrier when the other comes up,
    // and its transmit queue from the kernel's link watcher, asynchronously: until then
    // it drops what is sent through it (for the host end, everything the node sends the
    // pod, the gateway's ARP replies first). The pod starts once both ends run.
    in_node(|h| wait_running(h, host))?;
    in_pod(netns, netns_path, |h| wait_running(h, ifname))?;

    Ok(add_result(conf.cni_version, ifname, netns_path, &pod))
}

/// How long a new veth end may take to become operationally up.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until link `name` is operationally up.
async fn wait_running(h: Handle, name: &str) -> Result<(), CniError> {
    let start = std::time::Instant::now();
    loop {
        let link = netlink::get_link(&h, name).await.map_err(nl(format!("cannot look up {name}")))?;
        if link.is_some_and(|l| l.running) {
            return Ok(());
        }
        if start.elapsed() > RUNNING_TIMEOUT {
            return Err(CniError::new(code::INTERNAL, format!("{name} is not running after {RUNNING_TIMEOUT:?}")));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Undo a failed ADD, best effort: delete the host veth (which destroys the pair wherever its
/// other end is) and tell the agent to forget the attachment (DEL is idempotent).
fn rollback_add(conf: &NetConf, req_add: &Request, host: &str, progress: &AddProgress) {
    if progress.veth_created {
        let _ = in_node(|h| async move {
            let _ = netlink::delete_link_by_name(&h, host).await;
            Ok(())
        });
    }
    if progress.agent_called {
        let mut req = req_add.clone();
        req.command = Command::Del;
        req.host_veth = None;
        let _ = client::call_with_timeouts(&conf.agent_socket, &req, client::CONNECT_TIMEOUT, ROLLBACK_TIMEOUT);
    }
}

// ---------------------------------------------------------------------------------------------
// DEL

fn cmd_del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    // DEL must work with whatever is left: no CNI_NETNS, a vanished netns, odd CNI_ARGS.
    let args = env.cni_args().unwrap_or_default();

    let mut req = request(Command::Del);
    req.attachment = Some(Attachment { container_id: container_id.to_string(), ifname: ifname.to_string() });
    req.netns = env.optional_netns().map(str::to_string);
    req.pod_namespace = args.pod_namespace.or_else(|| conf.default_project.clone());
    req.pod_name = args.pod_name;
    let host = host_veth_name(container_id, ifname);
    let answer = match client::call_detailed(&conf.agent_socket, &req) {
        Err(failure) if failure.no_agent => return del_without_agent(conf, &req, &host),
        answer => answer.map_err(|failure| failure.error),
    };
    // The host veth goes in any case (kubelet retries DEL until the agent has answered).
    let veth = delete_host_veth(&host);
    match answer? {
        Response::Done | Response::Pod(_) | Response::Health(_) => {}
        Response::Error(e) => return Err(e),
    }
    veth.map(drop)
}

/// DEL with no agent running (stopped, crashed, restarting): remove what the plugin can
/// (the veth pair: the pod is cut off), record the deletion for the next agent (which
/// releases the address, the map entries, the link pin and the record before it
/// serves), and succeed, as the spec asks of a DEL whose resources are gone.
fn del_without_agent(conf: &NetConf, req: &Request, host: &str) -> Result<(), CniError> {
    let deleted = delete_host_veth(host)?;
    let attachment =
        req.attachment.clone().ok_or_else(|| CniError::new(code::INTERNAL, "DEL without an attachment"))?;
    let queue = del_queue::dir_for(&conf.agent_socket);
    let deletion = Deletion { attachment, host_veth_ifindex: deleted };
    let entry = del_queue::record(&queue, &deletion).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("no oxsdn node agent is running, and the deletion cannot be recorded in {}", queue.display()),
        )
        .with_details(e.to_string())
    })?;
    // An agent that started meanwhile may have read the queue before this entry came:
    // it gets the DEL itself (the entry then goes; a later agent would find it done).
    if let Ok(Response::Done) = client::call(&conf.agent_socket, req) {
        let _ = del_queue::remove(&entry);
    }
    Ok(())
}

/// Deletes the host veth `name` (and with it the pod's end) if it is a veth; returns its
/// ifindex if it was there.
fn delete_host_veth(name: &str) -> Result<Option<u32>, CniError> {
    in_node(|h| async move {
        let link = netlink::get_link(&h, name).await.map_err(nl(format!("cannot look up host veth {name}")))?;
        match link {
            Some(link) if link.veth => match netlink::delete_link(&h, link.index).await {
                Err(e) if !netlink::is_not_found(&e) => Err(nl(format!("cannot delete host veth {name}"))(e)),
                _ => Ok(Some(link.index)),
            },
            _ => Ok(None),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// CHECK

fn cmd_check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    if !conf.cni_version.supports_check() {
        return Err(command_needs("CHECK", CniVersion::V0_4_0, conf.cni_version));
    }
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_NETWORK_CONFIG, "CHECK needs prevResult in the network config"))?;
    let prev = parse_prev_result(prev)?;
    let container_id = env.container_id()?;
    let ifname = env.ifname()?;
    let netns_path = env.netns()?;
    let args = env.cni_args()?;

    let mut req = request(Command::Check);
    req.attachment = Some(Attachment { container_id: container_id.to_string(), ifname: ifname.to_string() });
    req.netns = Some(netns_path.to_string());
    req.pod_namespace = args.pod_namespace.clone().or_else(|| conf.default_project.clone());
    req.pod_name = args.pod_name.clone();
    let pod = expect_pod(client::call(&conf.agent_socket, &req)?, "CHECK")?;
    let applied = validate_pod_network(&pod)?;
    check_prev_result(&prev, ifname, netns_path, &pod)?;

    let netns = open_netns(netns_path)?;
    let wrong = |m: String| CniError::new(code::INTERNAL, m);
    let pod_ref = &pod;
    let mac = applied.mac;
    in_pod(netns.as_fd(), netns_path, |h| async move {
        let pod = pod_ref;
        let link = netlink::get_link(&h, ifname)
            .await
            .map_err(nl(format!("cannot look up {ifname}")))?
            .ok_or_else(|| wrong(format!("interface {ifname} does not exist in {netns_path}")))?;
        if !link.up {
            return Err(wrong(format!("interface {ifname} in {netns_path} is down")));
        }
        if link.mac.as_deref() != Some(&mac[..]) {
            let have = link.mac.as_deref().map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"));
            return Err(wrong(format!(
                "interface {ifname} has MAC {}, expected {}",
                have.unwrap_or_default(),
                pod.mac
            )));
        }
        if link.mtu != Some(pod.mtu) {
            return Err(wrong(format!("interface {ifname} has MTU {}, expected {}", link.mtu.unwrap_or(0), pod.mtu)));
        }
        let addrs = netlink::ipv4_addresses(&h, link.index)
            .await
            .map_err(nl(format!("cannot list the addresses of {ifname}")))?;
        if !addrs.contains(&(pod.ip, pod.prefix_len)) {
            return Err(wrong(format!("interface {ifname} does not have address {}/{}", pod.ip, pod.prefix_len)));
        }
        Ok(())
    })?;

    let host = host_veth_name(container_id, ifname);
    in_node(|h| {
        let host = &host;
        async move {
            let link = netlink::get_link(&h, host)
                .await
                .map_err(nl(format!("cannot look up {host}")))?
                .ok_or_else(|| wrong(format!("host veth {host} does not exist")))?;
            if !link.up {
                return Err(wrong(format!("host veth {host} is down")));
            }
            Ok(())
        }
    })
}

// ---------------------------------------------------------------------------------------------
// STATUS, GC

fn cmd_status(conf: &NetConf) -> Result<(), CniError> {
    if !conf.cni_version.supports_status_and_gc() {
        return Err(command_needs("STATUS", CniVersion::V1_1_0, conf.cni_version));
    }
    // An unreachable agent means the plugin cannot add pods: code 50, not 11.
    let r = client::call(&conf.agent_socket, &request(Command::Status))
        .map_err(|e| CniError { code: code::PLUGIN_NOT_AVAILABLE, ..e })?;
    expect_done(r, "STATUS")
}

fn cmd_gc(conf: &NetConf) -> Result<(), CniError> {
    if !conf.cni_version.supports_status_and_gc() {
        return Err(command_needs("GC", CniVersion::V1_1_0, conf.cni_version));
    }
    // Never read a missing list as "nothing is valid": that would release every pod.
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_NETWORK_CONFIG,
            format!("GC needs {} in the network config", config::VALID_ATTACHMENTS_KEY),
        )
    })?;
    let mut req = request(Command::Gc);
    req.valid_attachments = valid;
    expect_done(client::call(&conf.agent_socket, &req)?, "GC")
}

#[cfg(test)]
mod tests {
    //! No test here creates a namespace or an interface: commands are driven up to a failure
    //! that precedes any change, or (DEL, STATUS, GC) against a fake agent, where the only
    //! netlink traffic is DEL's lookup of a host veth that does not exist.
    use crate::{env::tests::env, result::tests::pod};

    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use crate::client::tests::TempSocket;

    fn temp_socket() -> TempSocket {
        crate::client::tests::temp_socket("plugin")
    }

    /// A fake agent answering `replies` in order, one per connection; returns the requests.
    fn fake_agent(replies: Vec<Response>) -> (TempSocket, JoinHandle<Vec<Request>>) {
        let path = temp_socket();
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let mut got = Vec::new();
            for reply in replies {
                let (mut s, _) = l.accept().unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                got.push(serde_json::from_slice(&buf).unwrap());
                s.write_all(&serde_json::to_vec(&reply).unwrap()).unwrap();
            }
            got
        });
        (path, h)
    }

    fn add_env(netns: &str) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", "ADD".into()),
            ("CNI_CONTAINERID", "0123456789abcdef".into()),
            ("CNI_NETNS", netns.into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-1".into()),
            ("CNI_PATH", "/opt/cni/bin".into()),
        ]
    }

    fn with(base: &[(&'static str, String)], over: &[(&'static str, &str)]) -> CniEnv {
        let mut m: HashMap<&str, String> = base.iter().cloned().collect();
        for (k, v) in over {
            m.insert(k, v.to_string());
        }
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    fn conf(version: &str, socket: &Path) -> Vec<u8> {
        json!({"cniVersion": version, "name": "oxsdn", "type": "oxsdn", "agentSocket": socket}).to_string().into_bytes()
    }

    fn err_code(o: &Outcome) -> u64 {
        assert_eq!(o.exit_code, 1, "{o:?}");
        o.stdout.as_ref().unwrap()["code"].as_u64().unwrap()
    }

    #[test]
    fn version_command() {
        let o = run(&env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(o.exit_code, 0);
        assert_eq!(
            o.stdout.unwrap(),
            json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
        );
        let o = run(&env(&[("CNI_COMMAND", "VERSION")]), br#"{"cniVersion":"0.3.1"}"#);
        assert_eq!(o.stdout.unwrap()["cniVersion"], "0.3.1");
        let o = run(&env(&[("CNI_COMMAND", "VERSION")]), b"\x00garbage");
        assert_eq!(o.exit_code, 0);
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        assert_eq!(err_code(&run(&env(&[]), b"{}")), 4);
        let o = run(&env(&[("CNI_COMMAND", "FROB")]), &conf("0.4.0", Path::new("/x")));
        assert_eq!(err_code(&o), 4);
        assert_eq!(o.stdout.unwrap()["cniVersion"], "0.4.0", "tagged with the config's version");
    }

    #[test]
    fn an_invocation_that_hangs_is_answered_at_the_deadline() {
        // A runtime that never closes stdin: the read never ends.
        let (stdin, _writer) = nix::unistd::pipe().unwrap();
        let start = std::time::Instant::now();
        let o = run_within(Duration::from_millis(300), env(&[("CNI_COMMAND", "ADD")]), std::fs::File::from(stdin));
        assert_eq!(err_code(&o), 11);
        assert!(o.stdout.unwrap()["msg"].as_str().unwrap().contains("did not finish within"));
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        // A prompt one is answered as usual, tagged with its config's version.
        let o = run_within(
            Duration::from_secs(10),
            env(&[("CNI_COMMAND", "FROB")]),
            std::io::Cursor::new(conf("0.4.0", Path::new("/x"))),
        );
        assert_eq!(err_code(&o), 4);
        assert_eq!(o.stdout.unwrap()["cniVersion"], "0.4.0");
    }

    #[test]
    fn error_json_shape() {
        let o = run(&env(&[("CNI_COMMAND", "ADD")]), b"not json");
        let v = o.stdout.unwrap();
        assert_eq!(v["code"], 6);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["msg"].is_string());
        assert!(v.as_object().unwrap().keys().all(|k| ["cniVersion", "code", "msg", "details"].contains(&k.as_str())));
    }

    #[test]
    fn config_errors_through_run() {
        let e = env(&[("CNI_COMMAND", "ADD")]);
        assert_eq!(err_code(&run(&e, b"{")), 6);
        assert_eq!(err_code(&run(&e, &vec![b' '; MAX_MESSAGE_BYTES + 1])), 6);
        assert_eq!(err_code(&run(&e, br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#)), 7);
        assert_eq!(err_code(&run(&e, br#"{"cniVersion":"1.0.0","type":"oxsdn"}"#)), 7);
        assert_eq!(err_code(&run(&e, br#"{"name":"n","type":"oxsdn"}"#)), 7);
        let o = run(&e, br#"{"cniVersion":"0.2.0","name":"n","type":"oxsdn"}"#);
        assert_eq!(err_code(&o), 1);
        assert_eq!(o.stdout.unwrap()["cniVersion"], "0.2.0");
    }

    #[test]
    fn commands_gated_by_version() {
        let s = temp_socket();
        for v in ["0.3.0", "0.3.1"] {
            let o = run(&env(&[("CNI_COMMAND", "CHECK")]), &conf(v, &s));
            assert_eq!(err_code(&o), 1);
            assert!(o.stdout.unwrap()["msg"].as_str().unwrap().contains("0.4.0"));
        }
        for cmd in ["STATUS", "GC"] {
            for v in ["0.3.1", "0.4.0", "1.0.0"] {
                assert_eq!(err_code(&run(&env(&[("CNI_COMMAND", cmd)]), &conf(v, &s))), 1, "{cmd} {v}");
            }
        }
    }

    #[test]
    fn add_env_errors_are_code_4() {
        let s = temp_socket();
        let base = add_env("/nonexistent/netns/x");
        let c = conf("1.0.0", &s);
        for over in [
            vec![("CNI_CONTAINERID", "")],
            vec![("CNI_CONTAINERID", "-bad")],
            vec![("CNI_IFNAME", "")],
            vec![("CNI_IFNAME", "way-too-long-ifname")],
            vec![("CNI_IFNAME", "a/b")],
            vec![("CNI_NETNS", "")],
            vec![("CNI_NETNS", "relative")],
            vec![("CNI_ARGS", "")],
            vec![("CNI_ARGS", "K8S_POD_NAME=x")],
            vec![("CNI_ARGS", "K8S_POD_NAMESPACE=Not_A_Label")],
            vec![("CNI_ARGS", "garbage")],
        ] {
            assert_eq!(err_code(&run(&with(&base, &over), &c)), 4, "{over:?}");
        }
        // A netns that does not exist, or is not a netns: code 4 as well.
        let o = run(&with(&base, &[]), &c);
        assert_eq!(err_code(&o), 4);
        assert!(o.stdout.unwrap()["msg"].as_str().unwrap().contains("/nonexistent/netns/x"));
        let dir = temp_socket();
        let file = dir.with_file_name("plain-file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(err_code(&run(&with(&base, &[("CNI_NETNS", file.to_str().unwrap())]), &c)), 4);
    }

    #[test]
    fn add_without_agent_fails_with_code_11_before_touching_the_network() {
        // /proc/self/ns/net is a real netns (this process's own); the absent agent socket stops
        // ADD before any netlink request, once an agent had time to start.
        let s = temp_socket();
        let start = std::time::Instant::now();
        let o = run(&with(&add_env("/proc/self/ns/net"), &[]), &conf("1.0.0", &s));
        assert!(start.elapsed() >= AGENT_START_WAIT);
        assert_eq!(err_code(&o), 11);
        let msg = o.stdout.unwrap()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains("not running or not ready") && msg.contains(s.to_str().unwrap()), "{msg}");
    }

    #[test]
    fn default_project_stands_in_for_a_missing_namespace_only() {
        // podman 4 sends a pod name and no namespace. /proc/self/ns/net (the node's own)
        // stops ADD right after the project is known, before any change.
        let s = temp_socket();
        let _listener = UnixListener::bind(&s).unwrap();
        let podman = with(&add_env("/proc/self/ns/net"), &[("CNI_ARGS", "K8S_POD_NAME=web")]);
        let with_default = json!({"cniVersion": "1.0.0", "name": "oxsdn", "type": "oxsdn",
            "agentSocket": &*s, "defaultProject": "oxsdn-standalone"})
        .to_string()
        .into_bytes();
        let msg = |o: Outcome| o.stdout.unwrap()["msg"].as_str().unwrap().to_string();
        let o = run(&podman, &with_default);
        assert_eq!(err_code(&o), 4);
        assert!(msg(o).contains("node's own network namespace"), "past the project");
        let o = run(&podman, &conf("1.0.0", &s));
        assert_eq!(err_code(&o), 4, "without defaultProject");
        assert!(msg(o).contains("K8S_POD_NAMESPACE"));
    }

    #[test]
    fn add_refuses_the_node_namespace() {
        let s = temp_socket();
        let _listener = UnixListener::bind(&s).unwrap();
        let o = run(&with(&add_env("/proc/self/ns/net"), &[]), &conf("1.1.0", &s));
        assert_eq!(err_code(&o), 4, "{o:?}");
        assert!(o.stdout.unwrap()["msg"].as_str().unwrap().contains("node's own network namespace"));
    }

    #[test]
    fn status() {
        let (s, h) = fake_agent(vec![Response::Done]);
        let o = run(&env(&[("CNI_COMMAND", "STATUS")]), &conf("1.1.0", &s));
        assert_eq!(o, Outcome { stdout: None, exit_code: 0 });
        assert_eq!(h.join().unwrap()[0].command, Command::Status);

        let o = run(&env(&[("CNI_COMMAND", "STATUS")]), &conf("1.1.0", &temp_socket()));
        assert_eq!(err_code(&o), 50);
        assert!(o.stdout.unwrap()["msg"].as_str().unwrap().contains("not running or not ready"));

        let (s, h) = fake_agent(vec![Response::Error(CniError::new(51, "degraded"))]);
        assert_eq!(err_code(&run(&env(&[("CNI_COMMAND", "STATUS")]), &conf("1.1.0", &s))), 51);
        h.join().unwrap();
    }

    #[test]
    fn gc() {
        let (s, h) = fake_agent(vec![Response::Done]);
        let c = json!({"cniVersion": "1.1.0", "name": "oxsdn", "type": "oxsdn", "agentSocket": &*s,
            "cni.dev/valid-attachments": [{"containerID": "aaa", "ifname": "eth0"}, {"containerID": "bbb", "ifname": "eth0"}]});
        let o = run(&env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]), c.to_string().as_bytes());
        assert_eq!(o, Outcome { stdout: None, exit_code: 0 });
        let req = &h.join().unwrap()[0];
        assert_eq!(req.command, Command::Gc);
        assert_eq!(
            req.valid_attachments,
            vec![
                Attachment { container_id: "aaa".into(), ifname: "eth0".into() },
                Attachment { container_id: "bbb".into(), ifname: "eth0".into() }
            ]
        );
        // No list: refused rather than read as "release everything".
        assert_eq!(err_code(&run(&env(&[("CNI_COMMAND", "GC")]), &conf("1.1.0", &s))), 7);
        // Agent down: try again later.
        let c = json!({"cniVersion": "1.1.0", "name": "oxsdn", "type": "oxsdn", "agentSocket": &*temp_socket(), "cni.dev/valid-attachments": []});
        assert_eq!(err_code(&run(&env(&[("CNI_COMMAND", "GC")]), c.to_string().as_bytes())), 11);
    }

    #[test]
    fn del() {
        let (s, h) = fake_agent(vec![Response::Done, Response::Done]);
        // Full environment.
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "oxsdn-unit-test-del"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/nonexistent/netns"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=demo;K8S_POD_NAME=p"),
        ]);
        let o = run(&e, &conf("0.4.0", &s));
        assert_eq!(o, Outcome { stdout: None, exit_code: 0 });
        // No CNI_NETNS, unparsable CNI_ARGS: still fine.
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "oxsdn-unit-test-del"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "junk"),
        ]);
        let o = run(&e, &conf("1.0.0", &s));
        assert_eq!(o, Outcome { stdout: None, exit_code: 0 });
        let reqs = h.join().unwrap();
        assert_eq!(reqs[0].command, Command::Del);
        assert_eq!(
            reqs[0].attachment,
            Some(Attachment { container_id: "oxsdn-unit-test-del".into(), ifname: "eth0".into() })
        );
        assert_eq!(reqs[0].netns.as_deref(), Some("/nonexistent/netns"));
        assert_eq!(reqs[0].pod_namespace.as_deref(), Some("demo"));
        assert_eq!(reqs[1].netns, None);
        assert_eq!(reqs[1].pod_namespace, None);

        // No agent: DEL succeeds and records the deletion for the next agent, once.
        let down = temp_socket();
        for _ in 0..2 {
            let o = run(&e, &conf("1.0.0", &down));
            assert_eq!(o, Outcome { stdout: None, exit_code: 0 });
        }
        let pending = del_queue::pending(&del_queue::dir_for(&down)).unwrap();
        assert_eq!(
            pending.entries.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
            [Deletion {
                attachment: Attachment { container_id: "oxsdn-unit-test-del".into(), ifname: "eth0".into() },
                host_veth_ifindex: None
            }]
        );
        // An agent that answers, but too late or not at all, is not a missing one: 11.
        let silent = temp_socket();
        let listener = UnixListener::bind(&silent).unwrap();
        let hung_up = std::thread::spawn(move || drop(listener.accept()));
        let o = run(&e, &conf("1.0.0", &silent));
        assert_eq!(err_code(&o), 11);
        hung_up.join().unwrap();
        assert!(!del_queue::dir_for(&silent).exists(), "recorded although an agent was there");
        // Agent error: passed through.
        let (s, h) = fake_agent(vec![Response::Error(CniError::new(102, "boom").with_details("d"))]);
        let o = run(&e, &conf("1.0.0", &s));
        assert_eq!(o.stdout.unwrap(), json!({"cniVersion": "1.0.0", "code": 102, "msg": "boom", "details": "d"}));
        h.join().unwrap();
        // The attachment identity is still required.
        assert_eq!(err_code(&run(&env(&[("CNI_COMMAND", "DEL"), ("CNI_IFNAME", "eth0")]), &conf("1.0.0", &s))), 4);
        assert_eq!(err_code(&run(&env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "x")]), &conf("1.0.0", &s))), 4);
    }

    #[test]
    fn check_validation() {
        let s = temp_socket();
        let base = vec![
            ("CNI_COMMAND", "CHECK".to_string()),
            ("CNI_CONTAINERID", "c1".into()),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_NETNS", "/nonexistent/netns".into()),
        ];
        // No prevResult: 7.
        assert_eq!(err_code(&run(&with(&base, &[]), &conf("1.0.0", &s))), 7);

        let prev = crate::result::add_result(CniVersion::V1_0_0, "eth0", "/nonexistent/netns", &pod());
        let c = |sock: &Path, prev: &Value| {
            json!({"cniVersion": "1.0.0", "name": "oxsdn", "type": "oxsdn", "agentSocket": sock, "prevResult": prev})
                .to_string()
                .into_bytes()
        };
        // Agent down: 11.
        assert_eq!(err_code(&run(&with(&base, &[]), &c(&s, &prev))), 11);
        // The agent expects another address than prevResult lists: an error, before the netns is looked at.
        let mut other = pod();
        other.ip = "10.128.2.9".parse().unwrap();
        let (s2, h) = fake_agent(vec![Response::Pod(other)]);
        let o = run(&with(&base, &[]), &c(&s2, &prev));
        assert_eq!(err_code(&o), u64::from(code::INTERNAL));
        assert!(o.stdout.unwrap()["msg"].as_str().unwrap().contains("10.128.2.9"));
        assert_eq!(h.join().unwrap()[0].command, Command::Check);
        // Agent agrees, netns is gone: code 4.
        let (s3, h) = fake_agent(vec![Response::Pod(pod())]);
        assert_eq!(err_code(&run(&with(&base, &[]), &c(&s3, &prev))), 4);
        h.join().unwrap();
        // Agent errors pass through; a non-pod answer is internal.
        let (s4, h) = fake_agent(vec![Response::Error(CniError::new(3, "unknown container")), Response::Done]);
        assert_eq!(err_code(&run(&with(&base, &[]), &c(&s4, &prev))), 3);
        assert_eq!(err_code(&run(&with(&base, &[]), &c(&s4, &prev))), u64::from(code::INTERNAL));
        h.join().unwrap();
    }

    #[test]
    fn pod_network_validation() {
        assert!(validate_pod_network(&pod()).is_ok());
        let mut cases = Vec::new();
        let mut p = pod();
        p.prefix_len = 0;
        cases.push(p);
        let mut p = pod();
        p.prefix_len = 33;
        cases.push(p);
        let mut p = pod();
        p.mtu = 10;
        cases.push(p);
        let mut p = pod();
        p.mac = "nope".into();
        cases.push(p);
        let mut p = pod();
        p.cluster_network = "10.128.0.0".into();
        cases.push(p);
        let mut p = pod();
        p.gateway = p.ip;
        cases.push(p);
        for p in cases {
            assert_eq!(validate_pod_network(&p).err().unwrap().code, code::INTERNAL, "{p:?}");
        }
    }

    /// xorshift64*: deterministic garbage without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn never_panics_on_garbage_stdin() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let s = temp_socket();
        let valid = conf("1.1.0", &s);
        let alphabet = br#"{}[]":,0123456789.-abcdefnrtulsoxdvCNIVersionametypeprevResultagentSocket \"#;
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for i in 0..300 {
            let n = (rng.next() % 300) as usize;
            inputs.push(if i % 2 == 0 {
                rng.bytes(n)
            } else {
                (0..n).map(|_| alphabet[(rng.next() as usize) % alphabet.len()]).collect()
            });
        }
        for cut in 0..valid.len() {
            inputs.push(valid[..cut].to_vec());
        }
        for _ in 0..200 {
            let mut m = valid.clone();
            let i = (rng.next() as usize) % m.len();
            m[i] = rng.next() as u8;
            inputs.push(m);
        }
        // ADD and CHECK stop at the nonexistent netns or the absent agent; VERSION, STATUS and
        // GC only talk to the (absent) agent. None of these paths can change the network.
        let cmds = ["ADD", "CHECK", "STATUS", "GC", "VERSION", "BOGUS"];
        for (i, input) in inputs.iter().enumerate() {
            let cmd = cmds[i % cmds.len()];
            let e = with(&add_env("/nonexistent/netns/fuzz"), &[("CNI_COMMAND", cmd)]);
            let o = run(&e, input);
            assert!(o.exit_code == 0 || o.exit_code == 1);
            if o.exit_code == 1 {
                let v = o.stdout.expect("errors are printed");
                assert!(v["code"].is_u64() && v["msg"].is_string() && v["cniVersion"].is_string(), "{v}");
            }
        }
        // Random bytes for DEL fail at decoding, before any request or netlink call.
        for input in inputs.iter().take(300).step_by(2) {
            let e = with(&add_env("/nonexistent/netns/fuzz"), &[("CNI_COMMAND", "DEL")]);
            if serde_json::from_slice::<Value>(input).is_err() {
                assert_eq!(err_code(&run(&e, input)), 6);
            }
        }
    }
}
