//! What a device tells its gateway: its [`Report`], sent over `/wardswarm/report/1` whenever
//! something changes and every `report_interval` while nothing does.

use serde::{Deserialize, Serialize};

use super::{
    machine::{DeviceState, Outcome},
    slots::SlotId,
};
use crate::hash::Hash;

/// Fetch progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Verified chunk groups.
    pub have: u64,
    /// All chunk groups.
    pub total: u64,
}

/// What a device tells its gateway (JSON over `/wardswarm/report/1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Hardware id.
    pub hardware: String,
    /// Product.
    pub product: Option<String>,
    /// The committed release.
    pub version: String,
    /// Its counter.
    pub counter: u64,
    /// BLAKE3 of the committed image: the base a delta must apply to.
    pub image: Hash,
    /// The committed slot.
    pub slot: SlotId,
    /// The phase (`idle`, `fetching`, …).
    pub state: DeviceState,
    /// The release in progress.
    pub target: Option<String>,
    /// The artifact in progress (bao root): a delta, or the full image the device fell back to when
    /// the delta did not install. The gateway fetches what devices fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Hash>,
    /// Fetch progress of the artifact in progress.
    pub progress: Option<Progress>,
    /// How the last attempt ended.
    pub last: Option<Outcome>,
    /// Bytes (bao encoded) received from the gateway for the current or last artifact, since start.
    pub bytes_from_gateway: u64,
    /// Bytes received from peers.
    pub bytes_from_peers: u64,
    /// Audit log lines so far.
    pub audit_lines: u64,
    /// Its labels (rollouts select by them).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Why it may not go on (`in_use`, `window_closed`, `reboot_limit`, `awaiting_consent`;
    /// `None`: not gated). Never an error.
    #[serde(default)]
    pub gated: Option<String>,
    /// What the gate or window said, for people.
    #[serde(default)]
    pub gated_detail: Option<String>,
    /// Waiting on its rollout rather than a gate (`no_directive`, `not_yet`, `download_only`,
    /// `expired`).
    #[serde(default)]
    pub held: Option<String>,
    /// Milliseconds spent gated since the agent started.
    #[serde(default)]
    pub gated_ms: u64,
}
