//! The CNI plugin's library side: CNI errors and the wire protocol to the node agent (shared
//! with the agent, `oxsdn-dataplane`), the agent client, and the pieces of the `oxsdn` binary
//! (config and environment parsing, results, netns and netlink helpers).

pub mod client;
pub mod config;
pub mod del_queue;
pub mod env;
pub mod error;
pub mod fuzzing;
pub mod naming;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod protocol;
pub mod result;
pub mod runtime_config;
pub mod version;

pub use error::{code, CniError};
