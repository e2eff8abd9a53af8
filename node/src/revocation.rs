//! Certificate revocation lists: removing a device from a ward before its certificate expires.
//!
//! A list (`wardswarm/revocations`) names the peer ids whose membership certificates a ward no longer
//! honours, and is signed by a threshold of the trust root's `membership` keys, the same keys that
//! issue certificates. Lists carry a `serial`: a node adopts a list only if it verifies, is for its
//! ward and has a higher serial than the one it holds, so a relay can neither forge a list nor roll
//! one back to reinstate a revoked peer. Each list is complete (it names every revoked peer, not only
//! the new ones), so a node that missed serials loses nothing by taking the newest.
//!
//! Why a list and not short-lived certificates renewed through the gateway: a list works while the
//! gateway is down or its WAN is cut, revokes at once (no wait for a certificate to lapse), and keeps
//! the signing keys offline, where the membership role's keys belong; renewal would put a membership
//! key on every gateway. The cost is that a node must hear of the list: the gateway and every member
//! pass it to each member they admit (see `net::revocation`), and each node keeps the newest on disk.
//!
//! Entries name peer ids, not device ids: a re-provisioned device has a new key, so revoking the
//! stolen key does not lock out its replacement. The device id is kept beside it for people.

use serde::{Deserialize, Serialize};

use crate::{
    keys::SecretKey,
    membership::{check_id, CertError},
    root::TrustRoot,
    signed::{DocError, DocKind, SignatureError, Signed},
    time::Timestamp,
};

/// Most peers one list revokes: many wards' worth of lost devices; the document cap holds them.
pub const MAX_ENTRIES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryWire {
    peer: String,
    device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListWire {
    #[serde(rename = "type")]
    kind: String,
    format: u32,
    ward: String,
    serial: u64,
    issued: String,
    revoked: Vec<EntryWire>,
}

/// Why a revocation list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Document(#[from] DocError),
    #[error("revocation list signatures: {0}")]
    Signatures(SignatureError),
    #[error("revocation list: {0}")]
    Invalid(String),
    #[error("revocation list is for ward {list:?}, this is ward {ours:?}")]
    WrongWard { list: String, ours: String },
}

impl From<SignatureError> for RevocationError {
    fn from(e: SignatureError) -> Self {
        Self::Signatures(e)
    }
}

impl From<CertError> for RevocationError {
    fn from(e: CertError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// One revoked peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revoked {
    /// Its libp2p peer id, as text.
    pub peer: String,
    /// The device id its certificate named (for people; not what is matched).
    pub device: String,
}

/// A parsed revocation list (signatures not yet checked).
#[derive(Debug, Clone)]
pub struct RevocationList {
    /// The ward.
    pub ward: String,
    /// Higher serials replace lower ones.
    pub serial: u64,
    /// When it was signed.
    pub issued: Timestamp,
    /// The revoked peers, in peer id order, each once.
    pub revoked: Vec<Revoked>,
    signed: Signed<ListWire>,
}

fn check_peer(s: &str) -> Result<(), RevocationError> {
    match s.parse::<libp2p::PeerId>() {
        Ok(p) if p.to_string() == s => Ok(()),
        _ => Err(RevocationError::Invalid(format!(
            "{s:?} is not a peer id in its canonical text form"
        ))),
    }
}

fn check_entries(revoked: &[Revoked]) -> Result<(), RevocationError> {
    if revoked.len() > MAX_ENTRIES {
        return Err(RevocationError::Invalid(format!(
            "{} entries, more than the limit of {MAX_ENTRIES}",
            revoked.len()
        )));
    }
    for e in revoked {
        check_peer(&e.peer)?;
        check_id("device", &e.device)?;
    }
    // One form: sorted by peer id, each peer once.
    if revoked.windows(2).any(|w| w[0].peer >= w[1].peer) {
        return Err(RevocationError::Invalid(
            "entries must be sorted by peer id, each peer once".into(),
        ));
    }
    Ok(())
}

impl RevocationList {
    /// Signs a list revoking `revoked` (sorted and de-duplicated here) with `keys` (membership keys).
    pub fn issue(
        ward: &str,
        serial: u64,
        issued: Timestamp,
        mut revoked: Vec<Revoked>,
        keys: &[SecretKey],
    ) -> Result<Self, RevocationError> {
        check_id("ward", ward)?;
        revoked.sort();
        revoked.dedup_by(|a, b| a.peer == b.peer);
        check_entries(&revoked)?;
        let wire = ListWire {
            kind: DocKind::Revocations.type_str().into(),
            format: DocKind::Revocations.format(),
            ward: ward.into(),
            serial,
            issued: issued.to_string(),
            revoked: revoked
                .iter()
                .map(|r| EntryWire {
                    peer: r.peer.clone(),
                    device: r.device.clone(),
                })
                .collect(),
        };
        let mut signed = Signed::new(DocKind::Revocations, wire)?;
        for k in keys {
            signed.sign(k);
        }
        Ok(Self {
            ward: ward.into(),
            serial,
            issued,
            revoked,
            signed,
        })
    }

    /// Parses (size cap, canonical form, format, entry rules) without checking signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, RevocationError> {
        let signed = Signed::<ListWire>::parse(DocKind::Revocations, bytes)?;
        let w = &signed.body;
        check_id("ward", &w.ward)?;
        let issued = w
            .issued
            .parse()
            .map_err(|e: crate::time::TimestampParseError| {
                RevocationError::Invalid(e.to_string())
            })?;
        let revoked: Vec<Revoked> = w
            .revoked
            .iter()
            .map(|e| Revoked {
                peer: e.peer.clone(),
                device: e.device.clone(),
            })
            .collect();
        check_entries(&revoked)?;
        Ok(Self {
            ward: w.ward.clone(),
            serial: w.serial,
            issued,
            revoked,
            signed,
        })
    }

    /// Checks the signatures (membership role) and the ward.
    pub fn verify(&self, root: &TrustRoot, ward: &str) -> Result<(), RevocationError> {
        self.signed
            .check_signatures(&[root.membership.requirement("membership".into())])?;
        if self.ward != ward {
            return Err(RevocationError::WrongWard {
                list: self.ward.clone(),
                ours: ward.into(),
            });
        }
        Ok(())
    }

    /// Parses and verifies in one step.
    pub fn parse_verified(
        bytes: &[u8],
        root: &TrustRoot,
        ward: &str,
    ) -> Result<Self, RevocationError> {
        let l = Self::parse(bytes)?;
        l.verify(root, ward)?;
        Ok(l)
    }

    /// The entry revoking `peer`, if any.
    pub fn revokes(&self, peer: &str) -> Option<&Revoked> {
        self.revoked
            .binary_search_by(|e| e.peer.as_str().cmp(peer))
            .ok()
            .map(|i| &self.revoked[i])
    }

    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestKeys;
    use std::time::Duration;

    fn peer(seed: u8) -> String {
        SecretKey::from_seed([seed; 32])
            .to_libp2p()
            .public()
            .to_peer_id()
            .to_string()
    }

    fn entry(seed: u8, device: &str) -> Revoked {
        Revoked {
            peer: peer(seed),
            device: device.into(),
        }
    }

    #[test]
    fn a_signed_list_round_trips_and_names_exactly_its_peers() {
        let k = TestKeys::default();
        let now = Timestamp::now();
        let root = k.root(now, Duration::from_secs(3600));
        let l = RevocationList::issue(
            "ward-3",
            7,
            now,
            vec![entry(9, "pump-2"), entry(8, "pump-1"), entry(9, "pump-2")],
            std::slice::from_ref(&k.membership),
        )
        .expect("issue");
        assert_eq!(l.revoked.len(), 2, "duplicates merged");
        let back = RevocationList::parse_verified(&l.to_bytes(), &root, "ward-3").expect("valid");
        assert_eq!(back.serial, 7);
        assert_eq!(
            back.revokes(&peer(8)).map(|e| e.device.as_str()),
            Some("pump-1")
        );
        assert!(back.revokes(&peer(10)).is_none());
        assert!(matches!(
            back.verify(&root, "ward-4"),
            Err(RevocationError::WrongWard { .. })
        ));
    }

    #[test]
    fn lists_signed_by_other_keys_or_edited_are_refused() {
        let k = TestKeys::default();
        let now = Timestamp::now();
        let root = k.root(now, Duration::from_secs(3600));
        // The release key is not a membership key.
        let l = RevocationList::issue(
            "w",
            1,
            now,
            vec![entry(8, "d")],
            std::slice::from_ref(&k.release),
        )
        .expect("issue");
        assert!(matches!(
            l.verify(&root, "w"),
            Err(RevocationError::Signatures(_))
        ));
        let good = RevocationList::issue(
            "w",
            1,
            now,
            vec![entry(8, "d")],
            std::slice::from_ref(&k.membership),
        )
        .expect("issue")
        .to_bytes();
        // Dropping an entry (to reinstate a peer) breaks the signature.
        let text = String::from_utf8(good.clone()).expect("utf8");
        let p = peer(8);
        let cut = text.replace(&format!("{{\"peer\":\"{p}\",\"device\":\"d\"}}"), "");
        assert_ne!(cut, text);
        let parsed = RevocationList::parse(cut.as_bytes()).expect("still well formed");
        assert!(parsed.verify(&root, "w").is_err(), "edited list verified");
        // Unsorted entries are not the canonical form.
        let two = RevocationList::issue(
            "w",
            1,
            now,
            vec![entry(8, "a"), entry(9, "b")],
            std::slice::from_ref(&k.membership),
        )
        .expect("issue");
        let (a, b) = (&two.revoked[0].peer, &two.revoked[1].peer);
        let swapped = String::from_utf8(two.to_bytes())
            .expect("utf8")
            .replace(a.as_str(), "@")
            .replace(b.as_str(), a)
            .replace('@', b);
        assert!(RevocationList::parse(swapped.as_bytes()).is_err());
        // Not a peer id.
        assert!(RevocationList::issue(
            "w",
            1,
            now,
            vec![Revoked {
                peer: "not-a-peer".into(),
                device: "d".into()
            }],
            std::slice::from_ref(&k.membership)
        )
        .is_err());
        // Some other kind of document.
        let cert = crate::membership::Certificate::issue(
            "w",
            "d",
            crate::membership::Role::Device,
            &p,
            now,
            &[k.membership],
        )
        .expect("cert");
        assert!(RevocationList::parse(&cert.to_bytes()).is_err());
    }
}
