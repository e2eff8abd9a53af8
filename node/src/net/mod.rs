//! The ward swarm: libp2p over TCP + noise + yamux, identify, ping, mDNS and bootstrap discovery,
//! admission by membership certificate, availability exchange, signed announcements and verified
//! multi-peer transfer under per-node caps.
//!
//! Goals: one copy of an artifact enters the ward and spreads device to device, verified at every hop,
//! never using more bandwidth than the node's caps. Non-goals: NAT traversal and relays (a ward is one
//! LAN), QUIC (later, behind a feature: it costs an extra C build).
//!
//! | module | what it owns |
//! |---|---|
//! | [`config`] | [`Config`]: defaults, `validate` |
//! | [`handle`] | [`Handle`] (commands over a bounded channel), [`Event`], [`NodeError`] |
//! | [`actor`] | the run loop that owns the `Swarm`, the admitted set and the outboxes; [`spawn`] |
//! | `fetch` | the actor's downloads: feeding the pure [`crate::scheduler`] and doing what it says |
//! | [`admission`] | `/wardswarm/admission/1`: certificates, [`admission::Members`] |
//! | [`availability`] | `/wardswarm/have/1`: inbound HAVE frames |
//! | [`announce`] | `/wardswarm/announce/1` and `/wardswarm/report/1` |
//! | [`exchange`] | `/wardswarm/peers/1`: where the other admitted members listen |
//! | [`revocation`] | `/wardswarm/revocations/1`: revocation lists; where admission ends (expiry, revocation) |
//! | [`transfer`] | `/wardswarm/transfer/2` and `/1`: the server and the client, with their pipes; the kept streams |
//! | [`policy`] | pure decisions shared with the simulations: serve or refuse, the HAVE round |
//! | [`streams`] | time limits, opening streams, each peer's bounded outbox |
//! | [`ip_limits`] | pending and established inbound connections per remote IP |
//! | [`transport`] | the libp2p behaviour, building the swarm (TCP, noise, yamux), dialing from a fresh port |
//! | [`wire`] | message formats as plain async functions, with size caps |
//! | [`caps`] | upload and download limiters (governor) and schedules |
//! | [`grid`] | the process-wide 10 ms grid that cap waits and periodic timers wake on |
//! | [`metrics`] | per-node Prometheus metrics |
//! | `faults` | deliberate misbehaviour (feature `test-faults` only) |

pub mod actor;
pub mod admission;
pub mod announce;
pub mod availability;
pub mod caps;
pub mod config;
pub mod exchange;
#[cfg(feature = "test-faults")]
pub mod faults;
mod fetch;
pub mod grid;
pub mod handle;
pub mod ip_limits;
pub mod metrics;
pub mod policy;
pub mod revocation;
pub mod streams;
pub mod transfer;
pub mod transport;
pub mod wire;

pub use actor::spawn;
pub use config::{Config, ConfigError};
#[cfg(feature = "test-faults")]
pub use faults::Fault;
pub use handle::{AnnounceError, Event, FetchReport, Handle, NodeError, TransportError};
