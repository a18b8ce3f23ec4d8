//! The oxsdn node agent and dataplane control: everything that runs on a node.
//! `docs/architecture.md` maps the modules.

pub mod agent;
pub mod cni_server;
pub mod conntrack;
pub mod egress;
pub mod egress_firewall;
pub mod egress_ip;
pub mod entries;
pub mod flows;
pub mod health;
pub mod hostport;
pub mod ipam;
pub mod loader;
pub mod maps;
pub mod metrics;
pub mod mirror;
pub mod monitor;
pub mod multicast;
pub mod netdev;
pub mod pods;
pub mod policy;
pub mod prefilter;
pub mod test_run;
pub mod tracer;
