//! `oxsdn-kube`: the cluster component that keeps oxsdn's store equal to the Kubernetes
//! API (see `translate`), elected leader on a Lease (see `lease`) so that two replicas
//! are safe.

pub mod lease;
pub mod openshift;
pub mod run;
pub mod translate;
