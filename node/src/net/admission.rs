//! Admission (`/wardswarm/admission/1`): zero-trust ward membership. Right after the noise handshake
//! the dialer sends its membership certificate and the listener answers with its own. Until a peer
//! is admitted it can use only identify, ping and admission: the other handlers refuse it, nothing is
//! sent to it, and the actor disconnects it after `admission_timeout`.
//!
//! Goals: a peer proves it belongs to this ward before it gets a byte of ward data; handlers that see
//! a member's first frames before its admission is recorded wait for it (bounded) instead of dropping
//! them. Non-goals: revocation (certificates expire).
//!
//! The admitted set has one owner, the actor: these tasks check certificates and report the verdict;
//! the actor records it in [`Members`], which handlers read through a `watch` channel and wait on.

use std::{collections::HashMap, io, sync::Arc};

use futures::AsyncWriteExt;
use libp2p::{PeerId, Stream};

use super::{
    actor::{Internal, Shared},
    streams::{open, timed},
    wire::{self, Protocol},
};
use crate::{
    membership::{Certificate, Role},
    time::Timestamp,
};

/// The admitted peers and their roles.
#[derive(Debug, Clone, Default)]
pub struct Members(HashMap<PeerId, Role>);

impl Members {
    /// The role of an admitted peer.
    pub fn role_of(&self, peer: &PeerId) -> Option<Role> {
        self.0.get(peer).copied()
    }
    /// Admitted peers, optionally only those with `role`.
    pub fn peers(&self, role: Option<Role>) -> Vec<PeerId> {
        self.0
            .iter()
            .filter(|(_, r)| role.is_none_or(|want| **r == want))
            .map(|(p, _)| *p)
            .collect()
    }
    /// Admitted peers with their roles, in peer id order (deterministic rounds).
    pub fn with_roles(&self) -> Vec<(PeerId, Role)> {
        let mut v: Vec<(PeerId, Role)> = self.0.iter().map(|(p, r)| (*p, *r)).collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// None admitted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(super) fn insert(&mut self, peer: PeerId, role: Role) -> bool {
        self.0.insert(peer, role).is_none()
    }
    pub(super) fn remove(&mut self, peer: &PeerId) -> bool {
        self.0.remove(peer).is_some()
    }
}

/// The metric label of a peer's role: `gateway` or `peer`.
pub(super) fn source_label(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Gateway) => "gateway",
        _ => "peer",
    }
}

/// Waits (bounded by `admission_timeout`, at most 5 s) until `peer` is admitted; `None` for a
/// non-member. A member's first frames race its admission on our side: it admitted us, answered
/// with its certificate and at once sent HAVE or ANNOUNCE while we were still checking its own.
pub(super) async fn admitted_role(s: &Shared, peer: &PeerId) -> Option<Role> {
    let mut rx = s.members.clone();
    let limit = s
        .cfg
        .admission_timeout
        .min(std::time::Duration::from_secs(5));
    tokio::select! {
        r = tokio::time::timeout(limit, rx.wait_for(|m| m.role_of(peer).is_some())) => {
            r.ok()?.ok().and_then(|m| m.role_of(peer))
        }
        _ = s.shutdown.cancelled() => None,
    }
}

fn check_cert(s: &Shared, peer: PeerId, bytes: &[u8]) -> Result<Certificate, String> {
    let c = Certificate::parse(bytes).map_err(|e| e.to_string())?;
    c.verify(&s.root, &peer.to_string(), &s.cfg.ward, Timestamp::now())
        .map_err(|e| e.to_string())?;
    Ok(c)
}

fn verdict(s: &Shared, peer: PeerId, r: io::Result<Vec<u8>>) -> Internal {
    match r {
        Ok(bytes) => match check_cert(s, peer, &bytes) {
            Ok(cert) => Internal::Admitted {
                peer,
                cert: Box::new(cert),
            },
            Err(reason) => Internal::Refused { peer, reason },
        },
        Err(e) => Internal::Refused {
            peer,
            reason: format!("admission exchange failed: {e}"),
        },
    }
}

/// We dialed `peer`: send our certificate, read and check theirs.
pub(super) async fn outbound(s: Arc<Shared>, mut control: libp2p_stream::Control, peer: PeerId) {
    let t = s.cfg.io_timeout;
    let r = async {
        let mut st = open(&mut control, peer, Protocol::Admission, t).await?;
        timed(t, wire::write_frame(&mut st, &s.cert)).await?;
        let theirs = timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await?;
        let _ = st.close().await;
        Ok::<_, io::Error>(theirs)
    }
    .await;
    let _ = s.internal.send(verdict(&s, peer, r)).await;
}

/// `peer` dialed us: read and check its certificate; once the actor has admitted it, answer with
/// ours, so the dialer's first requests find us ready.
pub(super) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let t = s.cfg.io_timeout;
    let r = timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await;
    let v = verdict(&s, peer, r);
    let admitted = matches!(v, Internal::Admitted { .. });
    if s.internal.send(v).await.is_err() || !admitted {
        return;
    }
    if admitted_role(&s, &peer).await.is_some() {
        let _ = timed(t, wire::write_frame(&mut st, &s.cert)).await;
        let _ = timed(t, st.close()).await;
    }
}
