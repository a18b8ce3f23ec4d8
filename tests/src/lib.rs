//! A sandboxed oxsdn cluster in network namespaces, for the end-to-end tests and the
//! demo: an underlay bridge, node namespaces each with its own agent process, pods
//! plugged in through the real CNI binary, and probes (ping, TCP, raw frames).
//!
//! Everything a run creates carries the run's prefix and is removed on drop, also when
//! a test panics; runs whose process died are swept at the next start.

pub mod bins;
pub mod cluster;
pub mod cni;
pub mod dns;
pub mod etcd;
pub mod flows;
pub mod frames;
pub mod fuzz_corpus;
pub mod inventory;
pub mod matrix;
pub mod netns;
pub mod netpol;
pub mod pki;
pub mod probe;
pub mod rule_text;
pub mod runtime;
pub mod runtime_cri;
pub mod runtime_podman;
pub mod scenario;

pub use cluster::{Node, PathPods, Pod, TestCluster};
