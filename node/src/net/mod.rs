//! The ward swarm: libp2p over TCP + noise + yamux, identify, ping, mDNS and bootstrap discovery,
//! admission by membership certificate, availability exchange, signed announcements and verified
//! multi-peer transfer under per-node caps.
//!
//! Goals: one copy of an artifact enters the ward and spreads device to device, verified at every hop,
//! never using more bandwidth than the node's caps. Non-goals: NAT traversal and relays (a ward is one
//! LAN), QUIC (later, behind a feature: it costs an extra C build).
//!
//! - [`wire`]: message formats as plain async functions, with size caps.
//! - [`caps`]: upload and download limiters (governor) and schedules.
//! - [`metrics`]: per-node Prometheus metrics.
//! - [`node`]: the actor that owns the `Swarm` and drives [`crate::scheduler`], and its [`node::Handle`].

pub mod caps;
pub mod metrics;
pub mod node;
pub mod wire;

pub use node::{Config, Event, FetchReport, Handle, NodeError};
