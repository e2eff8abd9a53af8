//! The origin's signed index of releases (`wardswarm/index`, format 1).
//!
//! An origin is a plain static file tree: one release directory per release (see [`crate::release`])
//! and `index.json` at the top, listing them. The index is signed by the trust root's `release` role,
//! carries a monotonically increasing `version` and an expiry, and names each release's manifest by
//! the BLAKE3 hash of its exact bytes. A gateway therefore refuses a stale index (freeze), an older
//! index than one it has seen (rollback), a manifest that is not the one the index names
//! (mix-and-match), and then checks every manifest's own signatures and expiry as a device would.
//!
//! ```text
//! {"signed":{"type":"wardswarm/index","format":1,"product":"infusion-pump","version":7,
//!   "created":"…","expires":"…","releases":[{"path":"releases/2.1.0","manifest":"blake3:…",
//!   "version":"2.1.0","counter":21,"hardware":["pump-v2"]}]},"signatures":[…]}
//! ```

use serde::{Deserialize, Serialize};

use crate::{
    hash::Hash,
    keys::SecretKey,
    manifest::{SignedManifest, MAX_HARDWARE, MAX_NAME_LEN},
    root::TrustRoot,
    signed::{DocError, DocKind, SignatureError, Signed},
    time::Timestamp,
};

/// Most releases one index lists.
pub const MAX_RELEASES: usize = 1024;
/// The index's file name at the top of an origin.
pub const INDEX_FILE: &str = "index.json";

/// One release the index lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The release directory, relative to the origin's top (`/`-separated, no `..`).
    pub path: String,
    /// BLAKE3 of the exact `manifest.json` bytes.
    pub manifest: Hash,
    /// The release version (informational; the manifest is authoritative).
    pub version: String,
    /// The release counter.
    pub counter: u64,
    /// Hardware ids.
    pub hardware: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexWire {
    #[serde(rename = "type")]
    kind: String,
    format: u32,
    product: String,
    version: u64,
    created: String,
    expires: String,
    releases: Vec<IndexEntry>,
}

/// Why an index is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Document(#[from] DocError),
    #[error("index signatures: {0}")]
    Signatures(SignatureError),
    #[error("index: {0}")]
    Invalid(String),
    #[error("index version {version} expired at {expires} (stale origin metadata: a freeze attack or an unmaintained origin)")]
    Expired { version: u64, expires: Timestamp },
    #[error("index version {found} is older than version {seen} already seen (rollback of origin metadata)")]
    Rollback { found: u64, seen: u64 },
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<SignatureError> for IndexError {
    fn from(e: SignatureError) -> Self {
        Self::Signatures(e)
    }
}

/// A parsed index.
#[derive(Debug, Clone)]
pub struct Index {
    /// The product.
    pub product: String,
    /// Monotonic index version.
    pub version: u64,
    /// When it was made.
    pub created: Timestamp,
    /// After this, the index is stale.
    pub expires: Timestamp,
    /// The releases.
    pub releases: Vec<IndexEntry>,
    signed: Signed<IndexWire>,
}

fn check_path(p: &str) -> Result<(), IndexError> {
    let ok = !p.is_empty()
        && p.len() <= 256
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(IndexError::Invalid(format!(
            "release path {p:?} must be a relative path of A-Z a-z 0-9 . - _ + / without . or .. parts"
        )))
    }
}

impl Index {
    /// Builds and signs an index over release manifests (each given with its path and exact bytes).
    pub fn build(
        product: &str,
        version: u64,
        created: Timestamp,
        expires: Timestamp,
        releases: &[(String, Vec<u8>)],
        keys: &[SecretKey],
    ) -> Result<Self, IndexError> {
        let mut entries = Vec::new();
        for (path, bytes) in releases {
            check_path(path)?;
            let sm = SignedManifest::parse(bytes)
                .map_err(|e| IndexError::Invalid(format!("{path}/manifest.json: {e}")))?;
            if sm.manifest.product != product {
                return Err(IndexError::Invalid(format!(
                    "{path} is a release of {:?}, the index is for {product:?}",
                    sm.manifest.product
                )));
            }
            entries.push(IndexEntry {
                path: path.clone(),
                manifest: Hash::of(bytes),
                version: sm.manifest.version.clone(),
                counter: sm.manifest.counter,
                hardware: sm.manifest.hardware.clone(),
            });
        }
        entries.sort_by(|a, b| a.counter.cmp(&b.counter).then(a.path.cmp(&b.path)));
        let wire = IndexWire {
            kind: DocKind::Index.type_str().into(),
            format: DocKind::Index.format(),
            product: product.into(),
            version,
            created: created.to_string(),
            expires: expires.to_string(),
            releases: entries,
        };
        let mut signed = Signed::new(DocKind::Index, wire)?;
        for k in keys {
            signed.sign(k);
        }
        Self::from_signed(signed)
    }

    fn from_signed(signed: Signed<IndexWire>) -> Result<Self, IndexError> {
        let w = &signed.body;
        if w.releases.len() > MAX_RELEASES {
            return Err(IndexError::Invalid(format!(
                "{} releases is over the cap of {MAX_RELEASES}",
                w.releases.len()
            )));
        }
        if w.product.is_empty() || w.product.len() > MAX_NAME_LEN {
            return Err(IndexError::Invalid(
                "product name is empty or too long".into(),
            ));
        }
        for r in &w.releases {
            check_path(&r.path)?;
            if r.hardware.len() > MAX_HARDWARE {
                return Err(IndexError::Invalid(format!(
                    "{}: too many hardware ids",
                    r.path
                )));
            }
        }
        let ts = |s: &str| {
            s.parse::<Timestamp>()
                .map_err(|e| IndexError::Invalid(e.to_string()))
        };
        Ok(Self {
            product: w.product.clone(),
            version: w.version,
            created: ts(&w.created)?,
            expires: ts(&w.expires)?,
            releases: w.releases.clone(),
            signed,
        })
    }

    /// Parses (size cap, canonical form, format) without checking signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        Self::from_signed(Signed::parse(DocKind::Index, bytes)?)
    }

    /// Parses and verifies: release-role signatures, expiry, and not older than `seen` (if any).
    pub fn verify(
        bytes: &[u8],
        root: &TrustRoot,
        now: Timestamp,
        seen: Option<u64>,
    ) -> Result<Self, IndexError> {
        let ix = Self::parse(bytes)?;
        ix.signed
            .check_signatures(&[root.release.requirement("release".into())])?;
        if now >= ix.expires {
            return Err(IndexError::Expired {
                version: ix.version,
                expires: ix.expires,
            });
        }
        if let Some(seen) = seen {
            if ix.version < seen {
                return Err(IndexError::Rollback {
                    found: ix.version,
                    seen,
                });
            }
        }
        Ok(ix)
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

    #[test]
    fn paths_are_confined_to_the_origin() {
        for bad in ["", "/etc", "a/../b", "./a", "a//b", "a b", "a/.."] {
            assert!(check_path(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["releases/2.0.0", "r1", "pump/2.0.0+build.3"] {
            check_path(good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn an_index_signed_by_the_wrong_role_is_refused() {
        let k = TestKeys::default();
        let now = Timestamp::from_unix(1_800_000_000);
        let later = Timestamp::from_unix(1_900_000_000);
        let root = k.root(now, std::time::Duration::from_secs(400_000_000));
        let ok =
            Index::build("p", 3, now, later, &[], std::slice::from_ref(&k.release)).expect("build");
        let ix = Index::verify(&ok.to_bytes(), &root, now, Some(3)).expect("verifies");
        assert_eq!(ix.version, 3);
        assert!(matches!(
            Index::verify(&ok.to_bytes(), &root, now, Some(4)),
            Err(IndexError::Rollback { found: 3, seen: 4 })
        ));
        assert!(matches!(
            Index::verify(&ok.to_bytes(), &root, later, None),
            Err(IndexError::Expired { .. })
        ));
        let wrong = Index::build("p", 3, now, later, &[], std::slice::from_ref(&k.membership))
            .expect("build");
        assert!(matches!(
            Index::verify(&wrong.to_bytes(), &root, now, None),
            Err(IndexError::Signatures(_))
        ));
    }
}
