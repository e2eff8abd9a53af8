//! Release manifests: what a device maker signs for one release.
//!
//! A manifest binds the product, the hardware it runs on, a human version, a monotonic release
//! counter (anti-rollback), an expiry, the target image (BLAKE3 hash and length), and each artifact
//! that can produce it: its kind (full image or delta from a named base image), compression, length
//! and bao root (BLAKE3 of the artifact bytes, verified in 16 KiB chunk groups).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{
    hash::Hash,
    outboard::CHUNK_GROUP_LOG,
    root::TrustRoot,
    signed::{DocError, DocKind, SignatureError, Signed},
    time::Timestamp,
};

/// Bounds on manifest contents (all far above real use; they bound work on hostile input).
pub const MAX_ARTIFACTS: usize = 64;
/// Hardware ids per manifest.
pub const MAX_HARDWARE: usize = 64;
/// Length of a product, hardware id or version string.
pub const MAX_NAME_LEN: usize = 64;

/// The kind of an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// The whole target image.
    Full,
    /// A delta that turns the base image (by its BLAKE3 hash) into the target.
    Delta {
        /// Hash of the image the delta applies to.
        base: Hash,
    },
}

/// An artifact's kind without its data, as offers, reports and the API spell it: `full` or `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole target image.
    Full,
    /// A delta from a base image.
    Delta,
}

impl Kind {
    /// The manifest spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Delta => "delta",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an artifact's bytes are encoded on top of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd frames.
    Zstd,
    /// Stored as is.
    None,
}

impl Compression {
    /// The manifest spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::None => "none",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One artifact of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Full image or delta.
    pub kind: ArtifactKind,
    /// Encoding of the bytes.
    pub compression: Compression,
    /// Exact length in bytes of the artifact (what travels and what the bao root covers).
    pub length: u64,
    /// bao root hash = BLAKE3 of the artifact bytes.
    pub root: Hash,
}

impl Artifact {
    /// `full` or `delta`.
    pub fn kind_name(&self) -> Kind {
        match self.kind {
            ArtifactKind::Full => Kind::Full,
            ArtifactKind::Delta { .. } => Kind::Delta,
        }
    }
    /// The base image hash of a delta.
    pub fn base(&self) -> Option<Hash> {
        match self.kind {
            ArtifactKind::Full => None,
            ArtifactKind::Delta { base } => Some(base),
        }
    }
    /// File name of the artifact in a release directory (`artifacts/<hex>`).
    pub fn file_name(&self) -> String {
        self.root.to_hex()
    }
}

/// The image a release installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// BLAKE3 of the image.
    pub hash: Hash,
    /// Length in bytes.
    pub length: u64,
}

/// A release manifest (typed, validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Product name, e.g. `infusion-pump`.
    pub product: String,
    /// Hardware ids the image runs on.
    pub hardware: Vec<String>,
    /// Human version, e.g. `4.2.1`.
    pub version: String,
    /// Monotonic release counter; a device refuses any counter at or below its committed floor.
    pub counter: u64,
    /// When the release was built.
    pub created: Timestamp,
    /// After this instant devices refuse the manifest (freeze attacks).
    pub expires: Timestamp,
    /// The image.
    pub target: Target,
    /// Ways to get the image.
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetWire {
    hash: String,
    length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactWire {
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    compression: String,
    length: u64,
    root: String,
    chunk_group_log: u8,
}

/// Wire form of the manifest body; field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestWire {
    #[serde(rename = "type")]
    kind: String,
    format: u32,
    product: String,
    hardware: Vec<String>,
    version: String,
    counter: u64,
    created: String,
    expires: String,
    target: TargetWire,
    artifacts: Vec<ArtifactWire>,
}

/// A manifest that is well formed but not acceptable as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Document(#[from] DocError),
    #[error("release manifest: {0}")]
    Invalid(String),
    #[error("release manifest: unknown {what} {value:?} (this version supports {supported})")]
    UnknownAlgorithm {
        what: &'static str,
        value: String,
        supported: &'static str,
    },
    #[error("release manifest signatures: {0}")]
    Signatures(SignatureError),
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<SignatureError> for ManifestError {
    fn from(e: SignatureError) -> Self {
        Self::Signatures(e)
    }
}

fn check_name(what: &str, s: &str) -> Result<(), ManifestError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid(format!(
            "{what} {s:?} must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . - _ +"
        )))
    }
}

fn parse_hash(field: &str, s: &str) -> Result<Hash, ManifestError> {
    s.parse().map_err(|e: crate::hash::IdParseError| match e {
        crate::hash::IdParseError::UnknownAlgorithm { alg, .. } => {
            ManifestError::UnknownAlgorithm {
                what: "hash algorithm",
                value: alg,
                supported: "blake3",
            }
        }
        other => ManifestError::Invalid(format!("{field}: {other}")),
    })
}

impl Manifest {
    /// Checks the rules that span fields.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_name("product", &self.product)?;
        check_name("version", &self.version)?;
        if self.hardware.is_empty() || self.hardware.len() > MAX_HARDWARE {
            return Err(ManifestError::Invalid(format!(
                "hardware must list 1 to {MAX_HARDWARE} ids"
            )));
        }
        let mut hw = BTreeSet::new();
        for h in &self.hardware {
            check_name("hardware id", h)?;
            if !hw.insert(h) {
                return Err(ManifestError::Invalid(format!(
                    "hardware id {h:?} is listed twice"
                )));
            }
        }
        if self.counter == 0 {
            return Err(ManifestError::Invalid(
                "release counter must be at least 1".into(),
            ));
        }
        if self.expires <= self.created {
            return Err(ManifestError::Invalid(
                "expires must be after created".into(),
            ));
        }
        if self.artifacts.is_empty() || self.artifacts.len() > MAX_ARTIFACTS {
            return Err(ManifestError::Invalid(format!(
                "a release has 1 to {MAX_ARTIFACTS} artifacts"
            )));
        }
        let mut roots = BTreeSet::new();
        let mut bases = BTreeSet::new();
        for a in &self.artifacts {
            if !roots.insert(a.root) {
                return Err(ManifestError::Invalid(format!(
                    "artifact {} is listed twice",
                    a.root
                )));
            }
            if !bases.insert(a.base()) {
                return Err(ManifestError::Invalid(match a.base() {
                    None => "more than one full artifact".into(),
                    Some(b) => format!("more than one delta from base {b}"),
                }));
            }
            if a.base() == Some(self.target.hash) {
                return Err(ManifestError::Invalid(
                    "a delta's base is the target itself".into(),
                ));
            }
        }
        Ok(())
    }

    /// The artifact with this bao root, if the release has it.
    pub fn artifact(&self, root: &Hash) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| &a.root == root)
    }

    /// The full-image artifact.
    pub fn full(&self) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.kind == ArtifactKind::Full)
    }

    /// The delta whose base is `base`.
    pub fn delta_from(&self, base: &Hash) -> Option<&Artifact> {
        self.artifacts
            .iter()
            .find(|a| a.base().as_ref() == Some(base))
    }

    fn to_wire(&self) -> ManifestWire {
        ManifestWire {
            kind: DocKind::Release.type_str().into(),
            format: DocKind::Release.format(),
            product: self.product.clone(),
            hardware: self.hardware.clone(),
            version: self.version.clone(),
            counter: self.counter,
            created: self.created.to_string(),
            expires: self.expires.to_string(),
            target: TargetWire {
                hash: self.target.hash.to_string(),
                length: self.target.length,
            },
            artifacts: self
                .artifacts
                .iter()
                .map(|a| ArtifactWire {
                    kind: a.kind_name().as_str().into(),
                    base: a.base().map(|b| b.to_string()),
                    compression: a.compression.as_str().into(),
                    length: a.length,
                    root: a.root.to_string(),
                    chunk_group_log: CHUNK_GROUP_LOG,
                })
                .collect(),
        }
    }

    fn from_wire(w: &ManifestWire) -> Result<Self, ManifestError> {
        if w.artifacts.len() > MAX_ARTIFACTS {
            return Err(ManifestError::Invalid(format!(
                "more than {MAX_ARTIFACTS} artifacts"
            )));
        }
        if w.hardware.len() > MAX_HARDWARE {
            return Err(ManifestError::Invalid(format!(
                "more than {MAX_HARDWARE} hardware ids"
            )));
        }
        let ts = |field: &str, s: &str| {
            s.parse::<Timestamp>()
                .map_err(|e| ManifestError::Invalid(format!("{field}: {e}")))
        };
        let mut artifacts = Vec::with_capacity(w.artifacts.len());
        for a in &w.artifacts {
            if a.chunk_group_log != CHUNK_GROUP_LOG {
                return Err(ManifestError::UnknownAlgorithm {
                    what: "bao chunk group size (log2 of chunks)",
                    value: a.chunk_group_log.to_string(),
                    supported: "4 (16 KiB groups)",
                });
            }
            let kind = match (a.kind.as_str(), &a.base) {
                ("full", None) => ArtifactKind::Full,
                ("delta", Some(b)) => ArtifactKind::Delta {
                    base: parse_hash("artifact base", b)?,
                },
                ("full", Some(_)) => {
                    return Err(ManifestError::Invalid("a full artifact has no base".into()))
                }
                ("delta", None) => {
                    return Err(ManifestError::Invalid(
                        "a delta artifact needs a base".into(),
                    ))
                }
                (other, _) => {
                    return Err(ManifestError::UnknownAlgorithm {
                        what: "artifact kind",
                        value: other.chars().take(32).collect(),
                        supported: "full, delta",
                    })
                }
            };
            let compression = match a.compression.as_str() {
                "zstd" => Compression::Zstd,
                "none" => Compression::None,
                other => {
                    return Err(ManifestError::UnknownAlgorithm {
                        what: "compression",
                        value: other.chars().take(32).collect(),
                        supported: "zstd, none",
                    })
                }
            };
            artifacts.push(Artifact {
                kind,
                compression,
                length: a.length,
                root: parse_hash("artifact root", &a.root)?,
            });
        }
        let m = Manifest {
            product: w.product.clone(),
            hardware: w.hardware.clone(),
            version: w.version.clone(),
            counter: w.counter,
            created: ts("created", &w.created)?,
            expires: ts("expires", &w.expires)?,
            target: Target {
                hash: parse_hash("target hash", &w.target.hash)?,
                length: w.target.length,
            },
            artifacts,
        };
        m.validate()?;
        Ok(m)
    }
}

/// A parsed manifest with its signatures (not yet checked against a trust root).
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: Manifest,
    signed: Signed<ManifestWire>,
}

impl SignedManifest {
    /// Wraps and validates a manifest, unsigned so far.
    pub fn new(manifest: Manifest) -> Result<Self, ManifestError> {
        manifest.validate()?;
        let signed = Signed::new(DocKind::Release, manifest.to_wire())?;
        Ok(Self { manifest, signed })
    }
    /// Adds a signature.
    pub fn sign(&mut self, key: &crate::keys::SecretKey) {
        self.signed.sign(key);
    }
    /// Parses (size cap, canonical form, format, algorithms) without checking signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let signed = Signed::<ManifestWire>::parse(DocKind::Release, bytes)?;
        let manifest = Manifest::from_wire(&signed.body)?;
        Ok(Self { manifest, signed })
    }
    /// Checks the signatures against the trust root's release role.
    pub fn check_signatures(&self, root: &TrustRoot) -> Result<(), ManifestError> {
        self.signed
            .check_signatures(&[root.release.requirement("release".into())])?;
        Ok(())
    }
    /// The canonical file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.signed.to_bytes()
    }
    /// Who signed.
    pub fn signers(&self) -> Vec<crate::keys::PublicKeyId> {
        self.signed.signatures.iter().map(|s| s.key).collect()
    }
    /// Hash of the canonical file bytes; identifies this exact signed manifest, signatures and all.
    pub fn id(&self) -> Hash {
        Hash::of(&self.to_bytes())
    }
    /// Hash of the signed body: identifies the release whatever signatures travel with it. Anyone
    /// can drop a surplus signature (one above the threshold) and the document still verifies with
    /// other bytes; this id stays the same, so a device's list of failed releases and a node's list of
    /// known manifests cannot be sidestepped that way.
    pub fn release_id(&self) -> Hash {
        Hash::of(&self.signed.body_bytes)
    }
}
