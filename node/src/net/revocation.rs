//! Where membership ends: a certificate that expires, or one revoked by a signed revocation list
//! ([`crate::revocation`]), ends its holder's admission at once and bars it from the next.
//!
//! Lists travel over `/wardswarm/revocations/1`, one signed list per stream, between admitted
//! members only. A node sends the list it holds to each member it admits, and a newer list to every
//! admitted member as soon as it adopts it: a revocation given to the gateway reaches each connected
//! device within one hop, and a device that was away gets it from the first member that admits it.
//! A node adopts a list only if it verifies against the trust root's membership role, names this
//! ward and has a higher serial than its own, so forwarding is flood-with-a-serial: each node sends a
//! given serial on once, and a replayed older list changes nothing.
//!
//! Goals: a revoked peer is refused by every node that has heard of the list, within seconds of the
//! gateway hearing of it; the list survives restarts (`Config::revocations_file`). Non-goals:
//! reaching a node no member can reach (a device cut off from the whole ward admits a revoked peer it
//! meets until it hears the list, the price of working without a live authority).

use std::sync::Arc;

use libp2p::{PeerId, Stream};

use super::{
    actor::{Actor, Internal, Shared},
    availability::member_frame,
    handle::{Event, NodeError},
    wire::Protocol,
};
use crate::{fsutil, revocation::RevocationList, signed::DocKind, time::Timestamp};

/// How long a peer whose admission ended with a notice stays connected, for the notice to leave.
pub(super) const PARTING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Lists a node currently holds: none yet, or the newest it verified.
pub(super) type Current = Option<Arc<RevocationList>>;

/// An inbound list from an admitted member.
pub(super) async fn inbound(s: Arc<Shared>, peer: PeerId, mut st: Stream) {
    if let Some(bytes) = member_frame(&s, &peer, &mut st, DocKind::Revocations.max_bytes()).await {
        let _ = s
            .internal
            .send(Internal::Revocations { from: peer, bytes })
            .await;
    }
}

/// The list kept in `Config::revocations_file`, if there is one that still verifies. One that does
/// not (written under an older trust root, or damaged) is set aside with a warning: the ward sends
/// its current list at the next admission, and ignoring the file is no worse than deleting it.
pub(super) fn load(s: &super::config::Config, root: &crate::root::TrustRoot) -> Current {
    let path = s.revocations_file.as_ref()?;
    let max = DocKind::Revocations.max_bytes() as u64;
    let bytes = match fsutil::read_capped(path, max) {
        Ok(Ok(b)) => b,
        Ok(Err(len)) => {
            tracing::warn!(path = %path.display(), len, "revocation list file is over the size cap: ignored");
            return None;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reading the revocation list failed: ignored until the ward sends one");
            return None;
        }
    };
    match RevocationList::parse_verified(&bytes, root, &s.ward) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            tracing::warn!(target: "wardswarm::security", path = %path.display(), error = %e, "kept revocation list does not verify: ignored until the ward sends one");
            None
        }
    }
}

/// Whether the list we hold revokes `peer`; the reason, if so.
pub(super) fn revoked(s: &Shared, peer: &PeerId) -> Option<String> {
    let cur = s.revocations.borrow();
    let l = cur.as_ref()?;
    l.revokes(&peer.to_string()).map(|e| {
        format!(
            "certificate of {} revoked by the ward's revocation list (serial {})",
            e.device, l.serial
        )
    })
}

/// Whether the list the actor holds names the actor's own node.
pub(super) fn revokes_us(a: &Actor) -> bool {
    a.revocations
        .borrow()
        .as_ref()
        .is_some_and(|l| l.revokes(&a.peer_id.to_string()).is_some())
}

/// The actor's side.
impl Actor {
    /// Adopts `bytes` if it is a valid list for this ward with a higher serial than ours: keeps it,
    /// ends the admission of every peer it names, and sends it to the other admitted members.
    pub(super) fn adopt_revocations(
        &mut self,
        bytes: Vec<u8>,
        from: Option<PeerId>,
    ) -> Result<bool, NodeError> {
        let list =
            RevocationList::parse_verified(&bytes, &self.shared.root, &self.shared.cfg.ward)?;
        let held = self.revocations.borrow().as_ref().map(|l| l.serial);
        if held.is_some_and(|h| h >= list.serial) {
            return Ok(false);
        }
        let list = Arc::new(list);
        let serial = list.serial;
        self.revocations.send_replace(Some(list.clone()));
        tracing::info!(serial, revoked = list.revoked.len(), via = ?from, "revocation list adopted");
        if let Some(path) = self.shared.cfg.revocations_file.clone() {
            let b = bytes.clone();
            // Off the actor: it fsyncs. A failure keeps the list in memory and says so.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = fsutil::replace(&path, &b, 0o644) {
                    tracing::error!(path = %path.display(), error = %e, "keeping the revocation list on disk failed (it holds until restart); check the state directory");
                }
            });
        }
        let revokes_us = list.revokes(&self.peer_id.to_string()).is_some();
        if revokes_us && !self.revoked_self {
            tracing::error!(target: "wardswarm::security", serial, "this node's own certificate is revoked: the ward refuses it, and it stops redialing its bootstrap peers; re-provision it with a new key and certificate");
        }
        self.revoked_self = revokes_us;
        self.emit(Event::Revocations {
            serial,
            revoked: list.revoked.len(),
            from,
            revokes_us,
        });
        let named: Vec<(PeerId, String)> = self
            .peers
            .keys()
            .filter_map(|p| revoked(&self.shared, p).map(|r| (*p, r)))
            .collect();
        let body = Arc::new(bytes);
        for (peer, reason) in named {
            // It hears why before it goes: a revoked node stops redialing the ward.
            self.send_to(&peer, Protocol::Revocations, body.clone());
            self.end_admission(peer, reason, true);
        }
        let members = self.members.borrow().peers(None);
        for p in members.iter().filter(|p| Some(**p) != from) {
            self.send_to(p, Protocol::Revocations, body.clone());
        }
        Ok(true)
    }

    /// A list from an admitted member: adopted if newer; a list that does not verify is that
    /// member's fault, logged as a security event.
    pub(super) fn on_revocations(&mut self, from: PeerId, bytes: Vec<u8>) {
        if self.role_of(&from).is_none() {
            return;
        }
        if let Err(e) = self.adopt_revocations(bytes, Some(from)) {
            tracing::warn!(target: "wardswarm::security", peer = %from, error = %e, "revocation list from a member refused");
        }
    }

    /// Sends the list we hold to a member just admitted.
    pub(super) fn send_revocations_to(&self, peer: &PeerId) {
        let cur = self.revocations.borrow().clone();
        if let Some(l) = cur {
            self.send_to(peer, Protocol::Revocations, Arc::new(l.to_bytes()));
        }
    }

    /// Ends a member's admission: it leaves the admitted set at once (nothing more is served to it
    /// or taken from it) and is disconnected, after [`PARTING_GRACE`] if `notice` (its outbox
    /// drains meanwhile: the frames queued for it, such as the list that revokes it, still go).
    pub(super) fn end_admission(&mut self, peer: PeerId, reason: String, notice: bool) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.cert = None;
            s.outbox = None;
            if notice {
                s.parting = Some(std::time::Instant::now() + PARTING_GRACE);
            }
        }
        let was_member = self.members.send_if_modified(|m| m.remove(&peer));
        self.shared.metrics.admission_refused.inc();
        tracing::warn!(target: "wardswarm::security", %peer, %reason, "admission ended");
        self.emit(Event::PeerRefused { peer, reason });
        if was_member {
            self.shared.metrics.peers_admitted.dec();
            self.pex_dirty = true;
            // It is gone as a member even while its connection lingers (`PARTING_GRACE`).
            self.emit(Event::PeerLeft { peer });
        }
        self.downloads_peer_gone(peer);
        if !notice {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// A member whose certificate expires while connected is no member any more; if it
    /// reconnects, admission refuses the expired certificate.
    pub(super) fn expire_certificates(&mut self, now: Timestamp) {
        let expired: Vec<(PeerId, Timestamp)> = self
            .peers
            .iter()
            .filter_map(|(p, s)| s.cert.as_ref().map(|c| (*p, c.expires)))
            .filter(|(_, exp)| now >= *exp)
            .collect();
        for (peer, expires) in expired {
            self.end_admission(
                peer,
                format!("membership certificate expired at {expires}"),
                false,
            );
        }
    }
}
