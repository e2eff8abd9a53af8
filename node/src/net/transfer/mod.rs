//! Transfer (`/wardswarm/transfer/1`): verified chunk groups, bao-encoded, under the node's caps.
//!
//! The requester sends a GET (root, signed length, runs of groups); the responder answers with a
//! status byte and, for `ok`, the bao encoding of exactly those groups. The requester verifies every
//! group against the signed root before it is stored or offered to anyone ([`crate::store`]).
//!
//! Goals: one misbehaving peer costs time, never integrity; transfers use no more than the caps;
//! "limited, retry later" is kept apart from "forbidden" up to the scheduler. Non-goals: choosing
//! what to ask whom for (the [`crate::scheduler`]) and deciding whether to serve
//! ([`super::policy::serve`]).
//!
//! - [`server`]: answering a GET, the store's encoder feeding the stream through a pipe;
//! - [`client`]: one request to one peer, the stream feeding the store's verifying decoder.
//!
//! Bytes move between the blocking bao encoder/decoder and the async stream in [`PIPE_BUF`] buffers
//! (the receiver's grow to 256 KiB while its decoder is behind): one thread hand-off per 64 KiB or
//! more, not one per cap slice (that cost more CPU than BLAKE3 and
//! ChaCha20 together, measured in `docs/performance.md`).

pub(super) mod client;
pub(super) mod server;

use super::{actor::Shared, caps::Cap, metrics::DirectionLabels};

/// Bytes move between a blocking bao encoder or decoder and the async stream in buffers of this size.
const PIPE_BUF: usize = 64 * 1024;
/// Buffers in flight per transfer, each way: with `PIPE_BUF`, at most 256 KiB per transfer (1 MiB on
/// the receiving side while its decoder is behind; `client::RECEIVE_BUF`).
const PIPE_DEPTH: usize = 4;

/// Waits until `bytes` may pass `cap`, and counts the time held up as throttled in `direction`.
async fn pass_cap(s: &Shared, cap: &Cap, direction: &str, bytes: u64) {
    let waited = cap.acquire_bytes(bytes).await;
    if !waited.is_zero() {
        s.metrics
            .throttled_seconds
            .get_or_create(&DirectionLabels {
                direction: direction.into(),
            })
            .inc_by(waited.as_secs_f64());
    }
}
