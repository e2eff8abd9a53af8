//! Announcements (`/wardswarm/announce/1`) and status reports (`/wardswarm/report/1`): one frame
//! per stream, one-way, from admitted members only.
//!
//! Goals: a signed release manifest floods the ward (every node verifies it before it passes it
//! on, see `Actor::accept_manifest`); a device's status reaches its gateway. Non-goals: delivery
//! guarantees (manifests are re-sent to newcomers, reports are periodic).

use std::sync::Arc;

use libp2p::{PeerId, Stream};

use super::{
    actor::{Internal, Shared},
    availability::member_frame,
    wire,
};

/// An inbound ANNOUNCE: a signed manifest, verified by the actor.
pub(super) async fn inbound_announce(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(bytes) = member_frame(&s, &peer, &mut st, wire::MAX_ANNOUNCE_FRAME).await {
        let _ = s.internal.send(Internal::Announce { peer, bytes }).await;
    }
}

/// An inbound REPORT: a device's status, passed on to the application.
pub(super) async fn inbound_report(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(body) = member_frame(&s, &peer, &mut st, wire::MAX_REPORT_FRAME).await {
        let _ = s.internal.send(Internal::Report { peer, body }).await;
    }
}

/// An inbound `report/2` stream: reports one after another (see
/// [`super::availability::member_frames`]).
pub(super) async fn inbound_report_stream(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let internal = s.internal.clone();
    super::availability::member_frames(&s, peer, &mut st, wire::MAX_REPORT_FRAME, |body| {
        let internal = internal.clone();
        async move { internal.send(Internal::Report { peer, body }).await.is_ok() }
    })
    .await;
}

/// An inbound rollout directive from an admitted member (the actor refuses one that is not from the
/// ward's gateway).
pub(super) async fn inbound_directive(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let max = crate::rollout::directive::MAX_DIRECTIVE_FRAME;
    if let Some(body) = member_frame(&s, &peer, &mut st, max).await {
        let _ = s.internal.send(Internal::Directive { peer, body }).await;
    }
}
