//! The device's verification API: accept a release manifest and its artifacts, or refuse them with a
//! typed reason.
//!
//! The order of checks is fixed so that a refusal is stable and the cheapest, most fundamental fault is
//! reported: trust root freshness, document form (size cap, canonical bytes, format, algorithms),
//! signatures under the release role, manifest expiry, product and hardware, then the anti-rollback
//! floor. A device installs nothing that fails any of them; a compromised gateway can delay updates but
//! cannot make a device accept a manifest the release keys did not sign.

use std::fs::File;

use crate::{
    hash::Hash,
    manifest::{Artifact, ManifestError, SignedManifest},
    outboard::{self, ArtifactError},
    root::{RootError, TrustRoot},
    time::Timestamp,
};

/// What the device knows about itself when it judges a release.
#[derive(Debug, Clone, Copy)]
pub struct DevicePolicy<'a> {
    /// The trust root the device holds.
    pub root: &'a TrustRoot,
    /// The product this device runs (`None` accepts any product name).
    pub product: Option<&'a str>,
    /// This device's hardware id.
    pub hardware: &'a str,
    /// The release counter of the committed image: the anti-rollback floor.
    pub committed_counter: u64,
    /// The current time.
    pub now: Timestamp,
}

/// Why a device refuses a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestRefusal {
    #[error("trust root: {0}")]
    Root(RootError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("release {version} expired at {expires} (stale metadata: a freeze attack or a late rollout)")]
    Expired { version: String, expires: Timestamp },
    #[error("release is for product {found:?}, this device runs {expected:?}")]
    WrongProduct { expected: String, found: String },
    #[error("release is for hardware {allowed:?}; this device is {device:?}")]
    WrongHardware {
        device: String,
        allowed: Vec<String>,
    },
    #[error("release counter {counter} is not above this device's committed floor {floor} (replay or downgrade)")]
    NotNewer { counter: u64, floor: u64 },
}

// By hand, not `#[from]`: the message already prints the cause, so it is not also a `source()`.
impl From<RootError> for ManifestRefusal {
    fn from(e: RootError) -> Self {
        Self::Root(e)
    }
}

/// Why a device refuses an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactRefusal {
    #[error("artifact {root} is not part of release {version} (mix-and-match of releases)")]
    NotInRelease { root: Hash, version: String },
    #[error("artifact {root}: {cause}")]
    Bytes { root: Hash, cause: ArtifactError },
}

/// A manifest the device has accepted.
#[derive(Debug, Clone)]
pub struct VerifiedManifest(SignedManifest);

impl VerifiedManifest {
    /// The accepted manifest.
    pub fn signed(&self) -> &SignedManifest {
        &self.0
    }
    /// The manifest contents.
    pub fn manifest(&self) -> &crate::manifest::Manifest {
        &self.0.manifest
    }
    /// The signed entry for an artifact root, refusing one this release does not list.
    pub fn artifact(&self, root: &Hash) -> Result<&Artifact, ArtifactRefusal> {
        self.0
            .manifest
            .artifact(root)
            .ok_or_else(|| ArtifactRefusal::NotInRelease {
                root: *root,
                version: self.0.manifest.version.clone(),
            })
    }
    /// Verifies an artifact's data and outboard files, naming the first bad chunk group.
    pub fn check_artifact_files(
        &self,
        root: &Hash,
        data: &File,
        ob: &File,
    ) -> Result<(), ArtifactRefusal> {
        let a = self.artifact(root)?;
        outboard::verify_files(data, ob, a).map_err(|source| ArtifactRefusal::Bytes {
            root: *root,
            cause: source,
        })
    }
    /// Verifies a stream of artifact bytes (exact length, BLAKE3 root).
    pub fn check_artifact_stream(
        &self,
        root: &Hash,
        data: impl std::io::Read,
    ) -> Result<(), ArtifactRefusal> {
        let a = self.artifact(root)?;
        outboard::verify_stream(data, a).map_err(|source| ArtifactRefusal::Bytes {
            root: *root,
            cause: source,
        })
    }
}

impl DevicePolicy<'_> {
    /// Accepts the manifest bytes or says why not.
    pub fn accept_manifest(&self, bytes: &[u8]) -> Result<VerifiedManifest, ManifestRefusal> {
        self.root.check_fresh(self.now)?;
        let sm = SignedManifest::parse(bytes)?;
        sm.check_signatures(self.root)?;
        let m = &sm.manifest;
        if self.now >= m.expires {
            return Err(ManifestRefusal::Expired {
                version: m.version.clone(),
                expires: m.expires,
            });
        }
        if let Some(p) = self.product {
            if p != m.product {
                return Err(ManifestRefusal::WrongProduct {
                    expected: p.into(),
                    found: m.product.clone(),
                });
            }
        }
        if !m.hardware.iter().any(|h| h == self.hardware) {
            return Err(ManifestRefusal::WrongHardware {
                device: self.hardware.into(),
                allowed: m.hardware.clone(),
            });
        }
        if m.counter <= self.committed_counter {
            return Err(ManifestRefusal::NotNewer {
                counter: m.counter,
                floor: self.committed_counter,
            });
        }
        Ok(VerifiedManifest(sm))
    }
}
