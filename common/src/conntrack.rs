//! The service connection tables (`CT_FORWARD`, `CT_REVERSE`) and their shares.
//!
//! Nothing is evicted: the tables are plain hash maps, so a flood can never push one
//! half of another connection out (an LRU did, and the connection broke). A new
//! connection needs room in the tables and in its owner's share: each project on the
//! node, the node's host and the tunnel own `CT_SHARES[owner]`, counted up by the
//! programs when they insert a connection and down by the agent's collector when it
//! removes one, at most `NodeConfig.ct_quota`. The collector removes connections idle
//! longer than their protocol's timeout, both halves at once.

use crate::MAX_PROJECT_SLOTS;

/// `ServiceConnection.flags` / `ServiceReply.flags`: a FIN or RST passed this way.
pub const CLOSING: u32 = 1;

/// `CT_SHARES` index of connections the node's host opens (through tun0).
pub const HOST_OWNER: u32 = MAX_PROJECT_SLOTS;
/// `CT_SHARES` index of connections arriving over the tunnel.
pub const TUNNEL_OWNER: u32 = MAX_PROJECT_SLOTS + 1;
/// Size of `CT_SHARES`: a share per project slot, the host's and the tunnel's.
pub const SHARES: u32 = MAX_PROJECT_SLOTS + 2;

/// `BPF_F_MMAPABLE`: the agent maps `CT_SHARES` into its memory and counts down
/// atomically, as the programs count up.
pub const MMAPABLE: u32 = 1 << 10;

/// Default `ct_quota`: an eighth of the tables per owner.
pub const DEFAULT_QUOTA: u32 = crate::MAX_CONNECTIONS / 8;
