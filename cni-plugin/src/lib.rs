//! The CNI plugin's library side: CNI errors and the wire protocol to the node agent,
//! shared with the agent (`oxsdn-dataplane`).

pub mod error;
pub mod protocol;

pub use error::{code, CniError};
