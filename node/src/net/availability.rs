//! Availability (`/wardswarm/have/1`): which verified chunk groups of which artifact a member holds.
//! One frame per stream, one-way, from admitted members only.
//!
//! Goals: peers learn what to ask whom for, cheaply; a lost frame heals at the next full refresh
//! ([`super::policy::HAVE_REFRESH`]). What to show whom is decided by [`super::policy::have_round`];
//! this file only carries frames. Non-goals: incremental updates (each HAVE is a full bitmap).

use std::sync::Arc;

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

/// An inbound HAVE.
pub(super) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(b) = member_frame(&s, &peer, &mut st, wire::MAX_HAVE_FRAME).await {
        match Have::from_bytes(&b) {
            Ok(have) => {
                let _ = s.internal.send(Internal::Have { peer, have }).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "bad HAVE"),
        }
    }
}
