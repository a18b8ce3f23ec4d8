//! The oxsdn node agent and dataplane control: everything that runs on a node.

pub mod agent;
pub mod cni_server;
pub mod egress;
pub mod flows;
pub mod ipam;
pub mod maps;
pub mod netdev;
pub mod nodes;
pub mod pipeline;
pub mod pods;
pub mod projects;
pub mod services;
pub mod sync;
pub mod test_run;
pub mod trace;
