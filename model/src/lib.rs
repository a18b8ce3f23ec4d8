//! Profile A of OpenShift SDN (`ovs-multitenant`, 3.11) written once more as a plain
//! function over a frame and a snapshot of a node's state: the specification
//! (`openshift-sdn-spec.md` §3, §5) and oxsdn's documented decisions (docs/design.md) as
//! code, with no kernel. The differential test runs the same frames through the loaded
//! eBPF programs and compares. See docs/model.md for what it covers.

pub mod generate;
pub mod packet;
pub mod pipeline;
pub mod policy;
pub mod state;

pub use pipeline::{pipeline, Delivery, Ingress, Out, Verdict};
pub use state::State;
