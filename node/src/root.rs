//! The trust root: which keys may sign what, in the spirit of TUF and Uptane.
//!
//! A root document lists three roles, each a set of ed25519 keys and a threshold m-of-n:
//! `root` (signs root documents), `release` (signs release manifests) and `membership` (signs ward
//! membership certificates). Version 1 is signed by a threshold of its own root keys and is installed
//! on a device out of band (provisioning). Version N+1 is accepted only if a threshold of version N's
//! root keys **and** a threshold of its own root keys signed it, so neither a thief of the old keys
//! nor a holder of only new keys can rotate alone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{
    keys::{PublicKeyId, SecretKey},
    signed::{DocError, DocKind, RoleRequirement, SignatureError, Signed},
    time::Timestamp,
};

/// No role needs more keys than this; bounds signature work on hostile input.
pub const MAX_KEYS_PER_ROLE: usize = 32;

/// The three roles of the trust root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleName {
    /// Signs root documents (rotation).
    Root,
    /// Signs release manifests and the release index.
    Release,
    /// Signs ward membership certificates.
    Membership,
}

impl RoleName {
    /// All roles.
    pub const ALL: [RoleName; 3] = [RoleName::Root, RoleName::Release, RoleName::Membership];
    /// Lowercase name used on the command line and in documents.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Release => "release",
            Self::Membership => "membership",
        }
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RoleName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: expected root, release or membership"))
    }
}

/// Wire form of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleWire {
    keys: Vec<String>,
    threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesWire {
    root: RoleWire,
    release: RoleWire,
    membership: RoleWire,
}

/// Wire form of the root body (field order is the canonical order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootWire {
    #[serde(rename = "type")]
    kind: String,
    format: u32,
    version: u64,
    expires: String,
    roles: RolesWire,
}

/// A role: its keys (distinct, sorted) and threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The keys.
    pub keys: Vec<PublicKeyId>,
    /// How many distinct keys must sign.
    pub threshold: u32,
}

impl Role {
    /// A role, validated: 1 ≤ threshold ≤ number of keys, keys distinct, at most
    /// [`MAX_KEYS_PER_ROLE`].
    pub fn new(
        name: RoleName,
        mut keys: Vec<PublicKeyId>,
        threshold: u32,
    ) -> Result<Self, RootError> {
        let n = keys.len();
        keys.sort();
        keys.dedup();
        if keys.len() != n {
            return Err(RootError::InvalidRole {
                role: name,
                reason: "a key is listed twice".into(),
            });
        }
        if keys.is_empty() {
            return Err(RootError::InvalidRole {
                role: name,
                reason: "it has no keys".into(),
            });
        }
        if keys.len() > MAX_KEYS_PER_ROLE {
            return Err(RootError::InvalidRole {
                role: name,
                reason: format!(
                    "{} keys, more than the limit of {MAX_KEYS_PER_ROLE}",
                    keys.len()
                ),
            });
        }
        if threshold == 0 || threshold as usize > keys.len() {
            return Err(RootError::InvalidRole {
                role: name,
                reason: format!(
                    "threshold {threshold} must be between 1 and its {} key(s)",
                    keys.len()
                ),
            });
        }
        Ok(Self { keys, threshold })
    }

    fn to_wire(&self) -> RoleWire {
        RoleWire {
            keys: self.keys.iter().map(|k| k.to_string()).collect(),
            threshold: self.threshold,
        }
    }

    fn from_wire(name: RoleName, w: &RoleWire) -> Result<Self, RootError> {
        if w.keys.len() > MAX_KEYS_PER_ROLE {
            return Err(RootError::InvalidRole {
                role: name,
                reason: format!(
                    "{} keys, more than the limit of {MAX_KEYS_PER_ROLE}",
                    w.keys.len()
                ),
            });
        }
        let mut keys = Vec::with_capacity(w.keys.len());
        for k in &w.keys {
            keys.push(k.parse::<PublicKeyId>().map_err(|source| DocError::Id {
                kind: DocKind::Root.type_str(),
                cause: source,
            })?);
        }
        let role = Self::new(name, keys.clone(), w.threshold)?;
        if role.keys != keys {
            // Stored order must be the sorted order, so there is one canonical document.
            return Err(RootError::Document(DocError::NotCanonical {
                kind: DocKind::Root.type_str(),
            }));
        }
        Ok(role)
    }

    /// This role as a signature requirement.
    pub fn requirement(&self, name: String) -> RoleRequirement<'_> {
        RoleRequirement {
            name,
            keys: &self.keys,
            threshold: self.threshold,
        }
    }
}

/// Everything that can be wrong with a trust root or a rotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Document(#[from] DocError),
    #[error("root version {version}: {cause}")]
    Signatures { version: u64, cause: SignatureError },
    #[error("{role} role is invalid: {reason}")]
    InvalidRole { role: RoleName, reason: String },
    #[error(
        "trust root version {version} expired at {expires}; get a newer root from the device maker"
    )]
    Expired { version: u64, expires: Timestamp },
    #[error("root version {offered} cannot follow trusted version {trusted}: versions must go up by exactly one")]
    VersionNotNext { trusted: u64, offered: u64 },
    #[error("root version must be at least 1")]
    ZeroVersion,
    #[error("expiry {expires} is not a valid RFC 3339 time")]
    BadExpiry { expires: String },
}

/// A parsed trust root document whose self-signatures meet its own root threshold.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    /// Version number, starting at 1.
    pub version: u64,
    /// After this instant the root is stale and devices refuse to act on it.
    pub expires: Timestamp,
    /// Root role.
    pub root: Role,
    /// Release role.
    pub release: Role,
    /// Membership role.
    pub membership: Role,
    signed: Signed<RootWire>,
}

impl TrustRoot {
    /// A new, unsigned root document.
    pub fn new(
        version: u64,
        expires: Timestamp,
        root: Role,
        release: Role,
        membership: Role,
    ) -> Result<Self, RootError> {
        if version == 0 {
            return Err(RootError::ZeroVersion);
        }
        let wire = RootWire {
            kind: DocKind::Root.type_str().into(),
            format: DocKind::Root.format(),
            version,
            expires: expires.to_string(),
            roles: RolesWire {
                root: root.to_wire(),
                release: release.to_wire(),
                membership: membership.to_wire(),
            },
        };
        let signed = Signed::new(DocKind::Root, wire)?;
        Ok(Self {
            version,
            expires,
            root,
            release,
            membership,
            signed,
        })
    }

    /// A successor document (version + 1) with new roles and expiry, unsigned.
    pub fn successor(
        &self,
        expires: Timestamp,
        root: Role,
        release: Role,
        membership: Role,
    ) -> Result<Self, RootError> {
        Self::new(self.version + 1, expires, root, release, membership)
    }

    /// Parses a root document without checking any signature (for `root show` and `root sign`).
    pub fn parse_unverified(bytes: &[u8]) -> Result<Self, RootError> {
        let signed = Signed::<RootWire>::parse(DocKind::Root, bytes)?;
        let w = &signed.body;
        if w.version == 0 {
            return Err(RootError::ZeroVersion);
        }
        let expires = w.expires.parse().map_err(|_| RootError::BadExpiry {
            expires: w.expires.clone(),
        })?;
        let root = Role::from_wire(RoleName::Root, &w.roles.root)?;
        let release = Role::from_wire(RoleName::Release, &w.roles.release)?;
        let membership = Role::from_wire(RoleName::Membership, &w.roles.membership)?;
        Ok(Self {
            version: w.version,
            expires,
            root,
            release,
            membership,
            signed,
        })
    }

    /// Parses a root and checks that a threshold of its own root keys signed it. This is how a device
    /// takes its provisioned root; it does not check expiry (see [`TrustRoot::check_fresh`]).
    pub fn parse_self_signed(bytes: &[u8]) -> Result<Self, RootError> {
        let r = Self::parse_unverified(bytes)?;
        r.check_self_signed()?;
        Ok(r)
    }

    /// Checks the root's signatures against its own root role only.
    pub fn check_self_signed(&self) -> Result<(), RootError> {
        self.signed
            .check_signatures(&[self.root.requirement("root".into())])
            .map_err(|source| RootError::Signatures {
                version: self.version,
                cause: source,
            })
    }

    /// Accepts `bytes` as the next root: version exactly one higher, signed by a threshold of this
    /// root's root keys and by a threshold of the new root's own root keys, and by no one else.
    pub fn verify_successor(&self, bytes: &[u8]) -> Result<TrustRoot, RootError> {
        let next = Self::parse_unverified(bytes)?;
        if next.version != self.version.saturating_add(1) {
            return Err(RootError::VersionNotNext {
                trusted: self.version,
                offered: next.version,
            });
        }
        next.signed
            .check_signatures(&[
                self.root
                    .requirement(format!("root of version {}", self.version)),
                next.root
                    .requirement(format!("root of version {}", next.version)),
            ])
            .map_err(|source| RootError::Signatures {
                version: next.version,
                cause: source,
            })?;
        Ok(next)
    }

    /// Refuses a root past its expiry (a freeze attack keeps a device on stale metadata).
    pub fn check_fresh(&self, now: Timestamp) -> Result<(), RootError> {
        if now >= self.expires {
            return Err(RootError::Expired {
                version: self.version,
                expires: self.expires,
            });
        }
        Ok(())
    }

    /// A role by name.
    pub fn role(&self, name: RoleName) -> &Role {
        match name {
            RoleName::Root => &self.root,
            RoleName::Release => &self.release,
            RoleName::Membership => &self.membership,
        }
    }

    /// Adds a signature. Only root keys of this version (or of `previous`, for a rotation) may sign.
    pub fn sign(&mut self, key: &SecretKey, previous: Option<&TrustRoot>) -> Result<(), RootError> {
        let id = key.public_id();
        let allowed =
            self.root.keys.contains(&id) || previous.is_some_and(|p| p.root.keys.contains(&id));
        if !allowed {
            return Err(RootError::Signatures {
                version: self.version,
                cause: SignatureError::SignerNotInRole {
                    key: id,
                    roles: "root".into(),
                },
            });
        }
        self.signed.sign(key);
        Ok(())
    }

    /// Signature counts toward this version's root threshold (and the previous version's).
    pub fn signature_status(&self, previous: Option<&TrustRoot>) -> Vec<(String, usize, u32)> {
        let count = |role: &Role| {
            self.signed
                .signatures
                .iter()
                .filter(|s| role.keys.contains(&s.key))
                .count()
        };
        let mut v = vec![(
            format!("root keys of version {}", self.version),
            count(&self.root),
            self.root.threshold,
        )];
        if let Some(p) = previous {
            v.push((
                format!("root keys of version {}", p.version),
                count(&p.root),
                p.root.threshold,
            ));
        }
        v
    }

    /// Who signed.
    pub fn signers(&self) -> Vec<PublicKeyId> {
        self.signed.signatures.iter().map(|s| s.key).collect()
    }

    /// The canonical file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.to_bytes()
    }

    /// A stable fingerprint of the signed body, for display.
    pub fn fingerprint(&self) -> crate::hash::Hash {
        crate::hash::Hash::of(&self.signed.body_bytes)
    }
}

/// Keys with no duplicates, in order; helper for building roles from repeated CLI flags.
pub fn distinct(keys: impl IntoIterator<Item = PublicKeyId>) -> Vec<PublicKeyId> {
    let mut seen = BTreeSet::new();
    keys.into_iter().filter(|k| seen.insert(*k)).collect()
}
