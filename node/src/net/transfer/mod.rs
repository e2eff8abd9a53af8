//! Transfer (`/wardswarm/transfer/2`, and `/1` for peers without it): verified chunk groups,
//! bao-encoded, under the node's caps.
//!
//! The requester sends a GET (root, signed length, runs of groups); the responder answers with a
//! status byte and, for `ok`, the bao encoding of exactly those groups. The requester verifies every
//! group against the signed root before it is stored or offered to anyone ([`crate::store`]).
//!
//! On `transfer/2` a response ends in-band (chunks, then an empty one), and the stream carries the
//! next GET to the same peer: the requester keeps its idle streams to each peer in [`Links`]. A
//! stream per GET (`transfer/1`) cost each request a stream negotiation and close on both sides, and
//! 43 % of the live ward-50's requests are answered "limited" (`docs/performance.md`).
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

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use libp2p::{PeerId, Stream};

use super::{actor::Shared, caps::Cap, metrics::DirectionLabels};

/// Bytes move between a blocking bao encoder or decoder and the async stream in buffers of this size.
const PIPE_BUF: usize = 64 * 1024;
/// Buffers in flight per transfer, each way: with `PIPE_BUF`, at most 256 KiB per transfer (1 MiB on
/// the receiving side while its decoder is behind; `client::RECEIVE_BUF`).
const PIPE_DEPTH: usize = 4;

/// Receive buffers a node keeps between transfers, at most this many (with `client::RECEIVE_BUF`,
/// 4 MiB): more than the pipes of its usual few concurrent fetches hold at once.
const KEPT_BUFFERS: usize = 16;

/// Receive buffers kept between transfers. A buffer is zeroed once, to the longest it has been, and
/// then filled again by later transfers: a transfer that allocated and zeroed its own (a ward's is a
/// few groups) spent about 5 % of the pair benchmark's fetcher CPU in `memset` and in the page
/// faults of fresh memory (`docs/performance.md`). Bounded: [`KEPT_BUFFERS`] buffers, none larger
/// than `client::RECEIVE_BUF`; a buffer given back past either bound is freed.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    kept: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    /// A buffer of at least `len` initialised bytes (their contents are whatever was there).
    fn take(&self, len: usize) -> Vec<u8> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut b = kept.unwrap_or_else(|| Vec::with_capacity(client::RECEIVE_BUF.max(len)));
        if b.len() < len {
            b.resize(len, 0);
        }
        b
    }

    /// Keeps `b` for a later [`Buffers::take`], or frees it.
    fn give(&self, b: Vec<u8>) {
        if b.capacity() == 0 || b.capacity() > client::RECEIVE_BUF {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_BUFFERS {
            kept.push(b);
        }
    }
}

/// Responses of at most this many groups (128 KiB) are encoded, and verified on arrival, on the
/// transfer's own task instead of a blocking thread. In a ward most responses are this small (about
/// 3.5 groups each on the live ward-50), and for them handing the bytes to a blocking thread and back
/// (a thread wake-up each way per buffer, the join, the progress message) cost more than the work:
/// BLAKE3 of 128 KiB takes about 30 µs and the store writes go to the page cache. Larger responses
/// keep the pipe, so a fast peer's bytes are verified on another core while the next ones arrive.
/// A disk that blocks the store's write for long stalls this task's runtime worker for as long:
/// bounded by this size per call.
const INLINE_GROUPS: u64 = 8;

/// Whether a response for `get` is handled inline (see [`INLINE_GROUPS`]). Counts without walking
/// the runs: a GET is peer-controlled on the responder.
fn inline(get: &super::wire::Get) -> bool {
    get.runs
        .iter()
        .map(|r| r.end.saturating_sub(r.start))
        .try_fold(0u64, |n, len| n.checked_add(len))
        .is_some_and(|n| n <= INLINE_GROUPS)
}

/// The most bytes an `ok` response for `groups` groups (at most [`INLINE_GROUPS`]) can hold: the
/// groups, and for each the proof nodes on its path as 64-byte pairs (a tree over `u64` chunks is
/// under 64 levels deep, and scattered groups share none).
const fn max_encoded(groups: u64) -> usize {
    let groups = if groups > INLINE_GROUPS {
        INLINE_GROUPS
    } else if groups == 0 {
        1
    } else {
        groups
    };
    groups as usize * (crate::outboard::GROUP_BYTES as usize + 64 * 64)
}

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

/// A responder drops a `transfer/2` stream on which no GET came for this long.
const SESSION_IDLE: Duration = Duration::from_secs(30);
/// A requester closes an idle `transfer/2` stream rather than use it after this long: well inside
/// `SESSION_IDLE`, so it seldom picks a stream the responder is closing.
const LINK_IDLE: Duration = Duration::from_secs(10);
/// Idle `transfer/2` streams kept per peer: the scheduler's requests in flight per peer (4 by
/// default) and some to spare. Past it a finished stream is closed.
const MAX_IDLE_LINKS: usize = 8;

/// The requester's idle `transfer/2` streams, by peer, and the peers that do not speak it. Streams
/// come back only after a complete response (never mid-response); a peer's are dropped when its last
/// connection closes ([`Links::forget`]).
#[derive(Debug, Default)]
pub(super) struct Links {
    peers: Mutex<HashMap<PeerId, PeerLinks>>,
}

#[derive(Debug, Default)]
struct PeerLinks {
    idle: Vec<(Stream, Instant)>,
    /// The peer refused `transfer/2`: it gets `transfer/1`, a stream per GET.
    v1_only: bool,
}

/// What [`Links::take`] found for a peer.
enum Link {
    /// An idle `transfer/2` stream.
    Idle(Stream),
    /// None idle: open a new `transfer/2` stream.
    Open,
    /// The peer does not speak `transfer/2`.
    V1Only,
}

impl Links {
    fn take(&self, peer: &PeerId) -> Link {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = peers.get_mut(peer) else {
            return Link::Open;
        };
        if p.v1_only {
            return Link::V1Only;
        }
        // The most recently used first; older ones past `LINK_IDLE` are dropped (closing them).
        while let Some((st, at)) = p.idle.pop() {
            if at.elapsed() < LINK_IDLE {
                return Link::Idle(st);
            }
        }
        Link::Open
    }

    /// Keeps a stream whose last response was complete, for the next GET to `peer`.
    fn put(&self, peer: PeerId, st: Stream) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let p = peers.entry(peer).or_default();
        if p.idle.len() < MAX_IDLE_LINKS {
            p.idle.push((st, Instant::now()));
        }
    }

    fn mark_v1_only(&self, peer: PeerId) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let p = peers.entry(peer).or_default();
        p.v1_only = true;
        p.idle.clear();
    }

    /// Drops what is known of `peer`: its last connection closed.
    pub(super) fn forget(&self, peer: &PeerId) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_filled_again_not_allocated_again() {
        let pool = Buffers::default();
        let mut b = pool.take(PIPE_BUF);
        assert_eq!(b.len(), PIPE_BUF);
        assert!(b.capacity() >= client::RECEIVE_BUF);
        b[7] = 42;
        let at = b.as_ptr();
        pool.give(b);
        // The same memory comes back, its bytes as they were (nothing zeroed again), and it grows to
        // what is asked.
        let b = pool.take(client::RECEIVE_BUF);
        assert_eq!(b.as_ptr(), at);
        assert_eq!(b[7], 42);
        assert_eq!(b.len(), client::RECEIVE_BUF);
        // A shorter buffer given back (a whole inline response) is lengthened on the next take.
        let mut short = b;
        short.truncate(100);
        pool.give(short);
        assert_eq!(pool.take(PIPE_BUF).len(), PIPE_BUF);
    }

    #[test]
    fn buffers_kept_are_bounded() {
        let pool = Buffers::default();
        let many: Vec<Vec<u8>> = (0..KEPT_BUFFERS + 5).map(|_| pool.take(PIPE_BUF)).collect();
        for b in many {
            pool.give(b);
        }
        assert_eq!(pool.kept.lock().expect("lock").len(), KEPT_BUFFERS);
        // One grown past the largest receive buffer is freed, not kept; so is an empty one.
        let pool = Buffers::default();
        pool.give(vec![0; client::RECEIVE_BUF + 1]);
        pool.give(Vec::new());
        assert!(pool.kept.lock().expect("lock").is_empty());
    }
}
