//! The checks the fuzz targets in `fuzz/` run on arbitrary input, one function per
//! target. They panic only on a bug: a parser that panics, or one whose accepted input
//! does not survive a round trip. `cargo test` replays every file of `fuzz/corpus/<target>/`
//! through them (tests/fuzz_corpus.rs), so the corpus and every finding kept there are
//! regression tests without libFuzzer.

use std::net::Ipv4Addr;

use crate::{
    code,
    config::{decode_object, parse_netconf, requested_version},
    env::{parse_cni_args, validate_container_id, validate_ifname, validate_netns_path, CniArgs, CniCommand, CniEnv},
    protocol::{PodNetwork, Request, Response},
    result::{check_prev_result, parse_ipv4_cidr, parse_prev_result, version_result},
    version::CniVersion,
};

/// What a target runs on one input.
pub type Check = fn(&[u8]);

/// Names of the targets, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Check)] =
    &[("netconf", netconf), ("cni_env", cni_env), ("agent_protocol", agent_protocol), ("prev_result", prev_result)];

/// The network config on stdin: `parse_netconf`, `requested_version` and VERSION's answer.
pub fn netconf(data: &[u8]) {
    let requested = requested_version(data);
    let _ = version_result(requested.as_deref());
    match parse_netconf(data) {
        Ok(conf) => {
            assert_eq!(
                requested.as_deref().and_then(CniVersion::parse),
                Some(conf.cni_version),
                "an accepted config's version is the one VERSION reads"
            );
            assert!(conf.agent_socket.is_absolute());
            if let Some(prev) = &conf.prev_result {
                let _ = parse_prev_result(prev);
            }
        }
        Err(e) => {
            assert!(
                [code::INCOMPATIBLE_VERSION, code::DECODE_FAILURE, code::INVALID_NETWORK_CONFIG]
                    .contains(&e.error.code),
                "config error with code {}",
                e.error.code
            );
            serde_json::to_vec(&e.error).expect("a CNI error serialises");
        }
    }
}

/// The CNI environment: every variable set to the input, and `CNI_ARGS` round-tripped.
pub fn cni_env(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = CniCommand::parse(Some(s));
    let _ = validate_container_id(s);
    let _ = validate_ifname(s);
    let _ = validate_netns_path(s);
    let env = CniEnv::from_lookup(|_| Some(s.to_string()));
    let _ = (env.command(), env.container_id(), env.ifname(), env.netns(), env.optional_netns());
    if let Ok(args) = env.cni_args() {
        assert_eq!(parse_cni_args(&join_cni_args(&args)).as_ref(), Ok(&args), "CNI_ARGS round trip");
    }
}

fn join_cni_args(args: &CniArgs) -> String {
    args.pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")
}

/// The plugin-agent messages: whatever decodes encodes back to the same message.
pub fn agent_protocol(data: &[u8]) {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let again = serde_json::to_vec(&request).expect("a request serialises");
        assert_eq!(serde_json::from_slice::<Request>(&again).ok(), Some(request));
    }
    if let Ok(response) = serde_json::from_slice::<Response>(data) {
        let again = serde_json::to_vec(&response).expect("a response serialises");
        assert_eq!(serde_json::from_slice::<Response>(&again).ok(), Some(response));
    }
}

/// CHECK's `prevResult`, compared with a fixed pod; and the CIDR parser it uses.
pub fn prev_result(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some((ip, len)) = parse_ipv4_cidr(s) {
            assert_eq!(format!("{ip}/{len}"), s, "an accepted CIDR is canonical");
        }
    }
    let Ok(object) = decode_object(data) else { return };
    if let Ok(prev) = parse_prev_result(&object) {
        let pod = PodNetwork {
            ip: Ipv4Addr::new(10, 128, 0, 5),
            prefix_len: 23,
            gateway: Ipv4Addr::new(10, 128, 0, 1),
            mac: "0a:58:0a:80:00:05".into(),
            mtu: 1450,
            cluster_network: "10.128.0.0/14".into(),
            project: "red".into(),
            vnid: 10,
        };
        let _ = check_prev_result(&prev, "eth0", "/var/run/netns/pod", &pod);
    }
}
