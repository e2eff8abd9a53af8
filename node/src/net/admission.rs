//! Admission (`/wardswarm/admission/1`): zero-trust ward membership. Right after the noise handshake
//! the two sides exchange membership certificates. Until a peer is admitted it can use only
//! identify, ping and admission: the other handlers refuse it, nothing is sent to it, and the actor
//! disconnects it after `admission_timeout`.
//!
//! Who reveals first: a certificate names the ward, the device and its role, so a node hands it only
//! to a proven member or to a peer id it has reason to trust ("vouched": a configured bootstrap peer,
//! a member named in an admitted member's peer list, or a peer admitted before). Like TLS, where the
//! server proves itself before the client shows its certificate:
//!
//! - the dialer trusts the listener's peer id: it sends its certificate; the listener checks it and
//!   answers with its own;
//! - otherwise the dialer sends an empty frame ("you first"); a listener that trusts the dialer's peer
//!   id sends its certificate, the dialer checks it and answers with its own; a listener that does not
//!   closes the stream, and neither side learned anything.
//!
//! A dial to a wrong bootstrap address or a spoofed mDNS answer therefore gives away nothing, and a
//! non-member dialer gets identify and ping only.
//!
//! Goals: a peer proves it belongs to this ward before it gets a byte of ward data; handlers that see
//! a member's first frames before its admission is recorded wait for it (bounded) instead of dropping
//! them. A certificate whose peer id the ward's revocation list names is refused like an expired one
//! (see `net::revocation`).
//!
//! The admitted set has one owner, the actor: these tasks check certificates and report the verdict;
//! the actor records it in [`Members`], which handlers read through a `watch` channel and wait on.

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::Arc,
};

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

/// Peer ids a node remembers as vouched for at most: a ward's members many times over.
const MAX_VOUCHED: usize = 4096;

/// The admitted peers and their roles, and the peer ids vouched for.
#[derive(Debug, Clone, Default)]
pub struct Members(HashMap<PeerId, Role>, HashSet<PeerId>);

impl Members {
    /// `peer` is admitted, or vouched for: we may show it our certificate first.
    pub fn vouches(&self, peer: &PeerId) -> bool {
        self.0.contains_key(peer) || self.1.contains(peer)
    }
    pub(super) fn vouch(&mut self, peer: PeerId) -> bool {
        self.1.len() < MAX_VOUCHED && self.1.insert(peer)
    }
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
        self.vouch(peer);
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
    if let Some(reason) = super::revocation::revoked(s, &peer) {
        return Err(reason);
    }
    Ok(c)
}

/// We may show `peer` our certificate first: it is vouched for and not revoked.
fn trusted(s: &Shared, peer: &PeerId) -> bool {
    s.members.borrow().vouches(peer) && super::revocation::revoked(s, peer).is_none()
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

/// The other side closed instead of proving membership first, and we do not know it.
fn not_vouched() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "neither side knows the other as a member, so neither shows its certificate first",
    )
}

/// We dialed `peer`. If we trust its peer id, send our certificate and check its answer; else ask it
/// to go first, check its certificate, and only then send ours.
pub(super) async fn outbound(s: Arc<Shared>, mut control: libp2p_stream::Control, peer: PeerId) {
    let t = s.cfg.io_timeout;
    let first = trusted(&s, &peer);
    let mut st = match open(&s, &mut control, peer, Protocol::Admission, t).await {
        Ok(st) => st,
        Err(e) => {
            let _ = s.internal.send(verdict(&s, peer, Err(e))).await;
            return;
        }
    };
    let v = if first {
        let r = async {
            timed(t, wire::write_frame(&mut st, &s.cert)).await?;
            timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await
        }
        .await;
        verdict(&s, peer, r)
    } else {
        let r = async {
            timed(t, wire::write_frame(&mut st, &[])).await?;
            match timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(not_vouched()),
                other => other,
            }
        }
        .await;
        let v = verdict(&s, peer, r);
        if matches!(v, Internal::Admitted { .. }) {
            // It proved membership: now it may see ours.
            if let Err(e) = timed(t, wire::write_frame(&mut st, &s.cert)).await {
                tracing::debug!(%peer, error = %e, "sending our certificate failed");
            }
        }
        v
    };
    let _ = timed(t, st.close()).await;
    let _ = s.internal.send(v).await;
}

/// `peer` dialed us. If it sent its certificate, check it and, once the actor has admitted it, answer
/// with ours, so the dialer's first requests find us ready. If it asked us to go first, do so only if
/// we trust its peer id, then check the certificate it answers with.
pub(super) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    let t = s.cfg.io_timeout;
    let r = timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await;
    if r.as_ref().is_ok_and(|b| b.is_empty()) {
        let v = if trusted(&s, &peer) {
            let theirs = async {
                timed(t, wire::write_frame(&mut st, &s.cert)).await?;
                timed(t, wire::read_frame(&mut st, wire::MAX_CERT_FRAME)).await
            }
            .await;
            verdict(&s, peer, theirs)
        } else {
            Internal::Refused {
                peer,
                reason:
                    "it asked us to show our certificate first, and we do not know it as a member"
                        .into(),
            }
        };
        let _ = timed(t, st.close()).await;
        let _ = s.internal.send(v).await;
        return;
    }
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
