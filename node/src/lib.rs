//! Wardswarm's device-side library: formats, the chain of custody, and (in later modules) the verified
//! chunk store, the ward swarm and the device agent.
//!
//! Module map:
//!
//! | module | what it holds |
//! |---|---|
//! | [`hash`] | `Hash` (BLAKE3, `blake3:<hex>`), streaming hashing |
//! | [`time`] | `Timestamp`, RFC 3339 in whole seconds |
//! | [`keys`] | ed25519 keys (PKCS#8 PEM files, mode 0600) and `PublicKeyId` (`ed25519:<hex>`) |
//! | [`signed`] | the signed-document envelope: canonical bytes, size caps, threshold signatures |
//! | [`root`] | the trust root (roles root, release, membership; m-of-n; rotation) |
//! | [`manifest`] | release manifests and artifacts |
//! | [`outboard`] | bao outboards in 16 KiB chunk groups, artifact verification |
//! | [`release`] | release directories: build, verify, summarise |
//! | [`verify`] | the device's verification API: accept or refuse, with a typed reason |
//! | [`seeding`] | the gateway's super-seeding policy (what to show which device) |
//! | [`delta`] | binary deltas: create (bidiff + zstd), apply as a bounded stream |
//! | [`index`] | the origin's signed index of releases |
//! | [`store`] | the crash-consistent verified chunk store |
//! | [`net`] | the ward swarm (libp2p): admission, availability, transfer, reports |
//! | [`agent`] | the device agent: A/B slots, the pure update state machine, the audit log |
//! | [`device`] | starting a device: store, node, slots, agent and its boot loop |
//! | [`fsutil`] | crash-safe file writes |
//! | [`groups`] | `GroupSet`: bitmaps of chunk groups |
//! | [`membership`] | ward membership certificates |
//! | [`scheduler`] | the pure swarm scheduler (which groups to ask which peer for) |
//! | [`testkit`] | the seeded generator and fixtures for tests, benches and simulations |
//! | [`units`] | human-readable sizes, rates and cap schedules in config files |
//!
//! The trust model and formats are described in `docs/trust-model.md` and `docs/formats.md`.

pub mod agent;
pub mod delta;
pub mod device;
pub mod fsutil;
pub mod groups;
pub mod hash;
pub mod index;
pub mod keys;
pub mod manifest;
pub mod membership;
pub mod net;
pub mod outboard;
pub mod release;
pub mod revocation;
pub mod rollout;
pub mod root;
pub mod scheduler;
pub mod seeding;
pub mod signed;
pub mod store;
pub mod testkit;
pub mod time;
pub mod units;
pub mod verify;

pub use hash::Hash;
pub use keys::{PublicKeyId, SecretKey};
pub use time::Timestamp;
