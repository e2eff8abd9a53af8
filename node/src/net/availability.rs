//! Availability: which verified chunk groups of which artifact a member holds. One-way, from admitted
//! members only. `/wardswarm/have/2` carries every HAVE frame to a peer on one long-lived stream (the
//! sender closes it after [`IDLE`] without frames); `/wardswarm/have/1`, one frame per stream, is kept
//! for peers that do not speak `have/2`. A stream per frame cost every HAVE a stream negotiation, two
//! upgrade timers and a connection idle timer on each side (`docs/performance.md`).
//!
//! Goals: peers learn what to ask whom for, cheaply; a lost frame heals at the next full refresh to
//! that peer, at once where the sender saw it lost ([`super::policy::Refresh`]). What to show whom is decided by [`super::policy::have_round`];
//! this file only carries frames. Non-goals: incremental updates (each HAVE is a full bitmap).

use std::{sync::Arc, time::Duration};

use libp2p::{PeerId, Stream};

use super::{
    actor::{Internal, Shared},
    admission::admitted_role,
    streams::timed,
    wire::{self, Have},
};

/// The one frame of a one-way stream from an admitted peer (`None` for a non-member or a bad frame).
pub(super) async fn member_frame(
    s: &Shared,
    peer: &PeerId,
    st: &mut Stream,
    max: usize,
) -> Option<Vec<u8>> {
    admitted_role(s, peer).await?;
    timed(s.cfg.io_timeout, wire::read_frame(st, max))
        .await
        .ok()
}

/// A sender closes its `have/2` stream after this long without a frame; a receiver gives up on one
/// silent for twice as long.
pub(super) const IDLE: Duration = Duration::from_secs(30);
// A settled ward's periodic refresh keeps the stream open rather than reopening it each time.
const _: () = assert!(super::policy::HAVE_REFRESH_MAX.as_secs() < IDLE.as_secs());

/// An inbound HAVE (`have/1`).
pub(super) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(b) = member_frame(&s, &peer, &mut st, wire::MAX_HAVE_FRAME).await {
        let _ = deliver(&s, peer, &b).await;
    }
}

/// Passes one HAVE frame to the actor; `false` if the frame is malformed.
async fn deliver(s: &Shared, peer: PeerId, b: &[u8]) -> bool {
    match Have::from_bytes(b) {
        Ok(have) => {
            let _ = s.internal.send(Internal::Have { peer, have }).await;
            true
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "bad HAVE");
            false
        }
    }
}

/// An inbound `have/2` stream (see [`member_frames`]).
pub(super) async fn inbound_stream(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let s2 = s.clone();
    member_frames(&s, peer, &mut st, wire::MAX_HAVE_FRAME, |b| {
        let s = s2.clone();
        async move { deliver(&s, peer, &b).await }
    })
    .await;
}

/// The frames of an inbound long-lived stream (`have/2`, `report/2`, `peers/2`), each passed to
/// `deliver`, until the sender closes it, falls silent for `2 × IDLE`, stops being a member, or sends
/// a frame that is too large or that `deliver` refuses (then the stream is dropped; the peer may open
/// another).
pub(super) async fn member_frames<F: std::future::Future<Output = bool>>(
    s: &Shared,
    peer: PeerId,
    st: &mut Stream,
    max: usize,
    mut deliver: impl FnMut(Vec<u8>) -> F,
) {
    if admitted_role(s, &peer).await.is_none() {
        return;
    }
    loop {
        let Ok(b) = timed(2 * IDLE, wire::read_frame(st, max)).await else {
            return;
        };
        // Revoked or banned meanwhile: what it says no longer counts.
        if s.members.borrow().role_of(&peer).is_none() || !deliver(b).await {
            return;
        }
    }
}
