//! Ward membership certificates: who may join a ward's swarm.
//!
//! A certificate binds a device id, a ward id, a role (`device` or `gateway`) and the libp2p peer id
//! of the node's identity key, until an expiry, and is signed by a threshold of the trust root's
//! `membership` keys. Peers exchange certificates right after the noise handshake (which proves who holds
//! the peer id's key); a peer without a valid certificate for this ward gets no artifact data and no
//! announcements, and is disconnected.

use serde::{Deserialize, Serialize};

use crate::{
    keys::SecretKey,
    root::TrustRoot,
    signed::{DocError, DocKind, SignatureError, Signed},
    time::Timestamp,
};

/// The role of a ward member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A medical device running the agent.
    Device,
    /// The ward gateway (seeder).
    Gateway,
}

impl Role {
    /// Text form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Gateway => "gateway",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "device" => Ok(Self::Device),
            "gateway" => Ok(Self::Gateway),
            other => Err(format!(
                "unknown role {other:?}: expected device or gateway"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertWire {
    #[serde(rename = "type")]
    kind: String,
    format: u32,
    ward: String,
    device: String,
    role: String,
    peer: String,
    expires: String,
}

/// Why a certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error(transparent)]
    Document(#[from] DocError),
    #[error("membership certificate signatures: {0}")]
    Signatures(SignatureError),
    #[error("membership certificate: {0}")]
    Invalid(String),
    #[error("certificate is for peer {cert}, but the connection is from {actual}")]
    WrongPeer { cert: String, actual: String },
    #[error("certificate is for ward {cert:?}, this is ward {ours:?}")]
    WrongWard { cert: String, ours: String },
    #[error("certificate for {device} expired at {expires}")]
    Expired { device: String, expires: Timestamp },
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<SignatureError> for CertError {
    fn from(e: SignatureError) -> Self {
        Self::Signatures(e)
    }
}

/// A parsed membership certificate (signatures not yet checked).
#[derive(Debug, Clone)]
pub struct Certificate {
    /// The ward.
    pub ward: String,
    /// The device id (or gateway name).
    pub device: String,
    /// Device or gateway.
    pub role: Role,
    /// The libp2p peer id the certificate is for, as text.
    pub peer: String,
    /// Expiry.
    pub expires: Timestamp,
    signed: Signed<CertWire>,
}

pub(crate) fn check_id(what: &str, s: &str) -> Result<(), CertError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if ok {
        Ok(())
    } else {
        Err(CertError::Invalid(format!(
            "{what} {s:?} must be 1 to 128 characters of A-Z a-z 0-9 . - _ :"
        )))
    }
}

impl Certificate {
    /// Issues a certificate signed by `keys` (membership keys).
    pub fn issue(
        ward: &str,
        device: &str,
        role: Role,
        peer: &str,
        expires: Timestamp,
        keys: &[SecretKey],
    ) -> Result<Self, CertError> {
        check_id("ward", ward)?;
        check_id("device", device)?;
        check_id("peer", peer)?;
        let wire = CertWire {
            kind: DocKind::Membership.type_str().into(),
            format: DocKind::Membership.format(),
            ward: ward.into(),
            device: device.into(),
            role: role.as_str().into(),
            peer: peer.into(),
            expires: expires.to_string(),
        };
        let mut signed = Signed::new(DocKind::Membership, wire)?;
        for k in keys {
            signed.sign(k);
        }
        Ok(Self {
            ward: ward.into(),
            device: device.into(),
            role,
            peer: peer.into(),
            expires,
            signed,
        })
    }

    /// Parses (size cap, canonical form, format) without checking signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        let signed = Signed::<CertWire>::parse(DocKind::Membership, bytes)?;
        let w = &signed.body;
        check_id("ward", &w.ward)?;
        check_id("device", &w.device)?;
        check_id("peer", &w.peer)?;
        let role = w.role.parse().map_err(CertError::Invalid)?;
        let expires = w
            .expires
            .parse()
            .map_err(|e: crate::time::TimestampParseError| CertError::Invalid(e.to_string()))?;
        Ok(Self {
            ward: w.ward.clone(),
            device: w.device.clone(),
            role,
            peer: w.peer.clone(),
            expires,
            signed,
        })
    }

    /// Checks signatures (membership role), the peer it was presented by, the ward and expiry.
    pub fn verify(
        &self,
        root: &TrustRoot,
        actual_peer: &str,
        ward: &str,
        now: Timestamp,
    ) -> Result<(), CertError> {
        self.signed
            .check_signatures(&[root.membership.requirement("membership".into())])?;
        if self.peer != actual_peer {
            return Err(CertError::WrongPeer {
                cert: self.peer.clone(),
                actual: actual_peer.into(),
            });
        }
        if self.ward != ward {
            return Err(CertError::WrongWard {
                cert: self.ward.clone(),
                ours: ward.into(),
            });
        }
        if now >= self.expires {
            return Err(CertError::Expired {
                device: self.device.clone(),
                expires: self.expires,
            });
        }
        Ok(())
    }

    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.to_bytes()
    }
}
