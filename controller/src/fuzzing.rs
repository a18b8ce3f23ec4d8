//! The checks the fuzz targets in `fuzz/` run on arbitrary input, one function per
//! target. They panic only on a bug: a decoder that panics, or one whose accepted input
//! does not survive a round trip. `cargo test` replays every file of `fuzz/corpus/<target>/`
//! through them (tests/fuzz_corpus.rs), so the corpus and every finding kept there are
//! regression tests without libFuzzer.

use serde::Serialize;

use crate::{
    cluster::{decode_config, decode_counter, decode_record, keys, Record},
    egress::EgressNetworkPolicyRecord,
    policy::{
        manifest::{parse, Object},
        NetworkPolicyRecord, PodAddress, PodMeta,
    },
    store::{file::State, KeyValue},
    HostSubnet, NetNamespace, Service,
};

/// What a target runs on one input.
pub type Check = fn(&[u8]);

/// Names of the targets, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Check)] =
    &[("store_file", store_file), ("store_record", store_record), ("manifest", manifest)];

/// A `FileStore` state file: as given (the checksum must hold), and the input as the body
/// of a file with a correct header, so that the fuzzer gets past the checksum. Whatever
/// decodes encodes to a file that decodes to the same state.
pub fn store_file(data: &[u8]) {
    for file in [data.to_vec(), State::with_header(data)] {
        if let Ok(state) = State::decode(&file) {
            assert_eq!(State::decode(&state.encode()), Ok(state), "state file round trip");
        }
    }
}

/// A cluster record: the first line of the input is the store key, the rest its value,
/// decoded as the key's kind is. Whatever decodes encodes to a value that decodes alike.
pub fn store_record(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(key) = std::str::from_utf8(&data[..split]) else { return };
    let kv =
        KeyValue { key: key.to_owned(), value: data.get(split + 1..).unwrap_or_default().to_vec(), mod_revision: 1 };
    if key == keys::CONFIG {
        if let Ok(config) = decode_config(&kv) {
            assert_eq!(decode_config(&reencoded(&kv, &config)).ok(), Some(config));
        }
    } else if key.starts_with("/oxsdn/counters/") {
        if let Ok(n) = decode_counter(Some(&kv)) {
            let again = KeyValue { value: n.to_string().into_bytes(), ..kv };
            assert_eq!(decode_counter(Some(&again)).ok(), Some(n));
        }
    } else {
        record_round_trip::<NetNamespace>(&kv);
        record_round_trip::<HostSubnet>(&kv);
        record_round_trip::<Service>(&kv);
        record_round_trip::<NetworkPolicyRecord>(&kv);
        record_round_trip::<PodMeta>(&kv);
        record_round_trip::<PodAddress>(&kv);
        record_round_trip::<EgressNetworkPolicyRecord>(&kv);
        record_round_trip::<crate::egress_ip::ProjectEgressIps>(&kv);
        record_round_trip::<crate::egress_ip::NodeEgress>(&kv);
    }
}

/// A manifest file (`oxsdnctl apply -f`). Whatever parses is a valid record, and a policy
/// or namespace printed as `get -o json` prints it parses back to the same object.
pub fn manifest(data: &[u8]) {
    let Ok(objects) = parse(data, None) else { return };
    for object in &objects {
        object.check().expect("a parsed object passes the operations' checks");
        let printed = match object {
            Object::NetworkPolicy { namespace, name, spec } => {
                let record =
                    NetworkPolicyRecord { namespace: namespace.clone(), name: name.clone(), id: 1, spec: spec.clone() };
                serde_json::to_vec(&record.to_object())
            }
            Object::Namespace { name, labels } => {
                let ns = NetNamespace {
                    name: name.clone(),
                    netid: 0,
                    id: 1,
                    labels: labels.clone(),
                    annotations: Default::default(),
                };
                serde_json::to_vec(&ns.to_namespace())
            }
            Object::EgressNetworkPolicy(policy) => serde_json::to_vec(&policy.to_object()),
            Object::Pod(_) | Object::NetNamespaceEgress(_) | Object::HostSubnetEgress(_) => continue,
        };
        let again = parse(&printed.expect("an object serialises"), None).expect("a printed object parses");
        assert_eq!(again.as_slice(), std::slice::from_ref(object), "printed and parsed again");
    }
}

fn reencoded(kv: &KeyValue, value: &impl Serialize) -> KeyValue {
    KeyValue { value: serde_json::to_vec(value).expect("a record serialises"), ..kv.clone() }
}

fn record_round_trip<R: Record + PartialEq + std::fmt::Debug>(kv: &KeyValue) {
    if let Ok(record) = decode_record::<R>(kv) {
        assert!(kv.key.starts_with(R::PREFIX));
        assert_eq!(decode_record::<R>(&reencoded(kv, &record)).ok(), Some(record), "{} round trip", R::KIND);
    }
}
