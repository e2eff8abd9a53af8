//! What the gateway remembers: devices and releases (persisted in the database, see [`crate::db`]),
//! and the origin index it last verified. One lock for all of it, held briefly and never across an
//! await.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};
use wardswarm_node::{agent::runtime::Report, hash::Hash, Timestamp};

/// A device as the gateway knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Device id (from its membership certificate).
    pub id: String,
    /// Its peer id.
    pub peer: String,
    /// Its last report.
    pub report: Report,
    /// When the last report arrived.
    pub last_seen: Timestamp,
}

/// What the gateway decided about a release on the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseStatus {
    /// Signatures, expiry and the index entry check out: announced to the ward.
    Verified,
    /// Not announced; `reason` says why.
    Refused,
    /// The origin did not serve its manifest (network, HTTP status): nothing was judged; it is tried
    /// again at the next poll.
    Unavailable,
}

impl ReleaseStatus {
    /// The JSON spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A release as the gateway knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// Version.
    pub version: String,
    /// Counter.
    pub counter: u64,
    /// Path on the origin.
    pub path: String,
    /// Hash of the exact signed manifest.
    pub manifest: Hash,
    /// Verified or refused.
    pub status: ReleaseStatus,
    /// Why it was refused.
    pub reason: Option<String>,
    /// Hardware ids.
    pub hardware: Vec<String>,
    /// Expiry.
    pub expires: Option<Timestamp>,
    /// Refused for a transient reason (the origin did not answer): judged again at the next poll.
    #[serde(default)]
    pub retry: bool,
    /// The manifest bytes (verified releases only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// The validator of the last index response, for a conditional GET. Only an ETag is used:
/// Last-Modified has one-second resolution, and an index re-published within the same second would
/// be missed for good.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The index response's ETag.
    pub etag: Option<String>,
}

/// The origin index as last verified.
#[derive(Debug, Clone, Default)]
pub struct IndexState {
    /// For the next conditional GET.
    pub validators: Option<Validators>,
    /// When the verified index expires.
    pub expires: Option<Timestamp>,
}

/// Everything the gateway's tasks share about the ward and the origin.
#[derive(Debug, Default)]
pub struct Records {
    /// Devices by id.
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Releases by manifest hash.
    pub releases: BTreeMap<Hash, ReleaseRecord>,
    /// The origin's index.
    pub index: IndexState,
    /// Peer ids of devices connected now (not persisted: after a restart a device is online once
    /// it reports).
    pub connected: std::collections::HashSet<String>,
}

/// [`Records`] behind one lock.
#[derive(Debug, Default)]
pub struct State(Mutex<Records>);

impl State {
    /// From what the database held.
    pub fn new(records: Records) -> Self {
        Self(Mutex::new(records))
    }
    /// Locks the records (a panic elsewhere does not poison them for good).
    pub fn lock(&self) -> MutexGuard<'_, Records> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
