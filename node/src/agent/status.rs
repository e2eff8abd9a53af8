//! The names a device's update takes in reports, the audit log, the gateway's API and metrics:
//! [`DeviceState`] (where it is) and [`UpdateResult`] (how an attempt ended), shared by the node,
//! the gateway, the simulations and the CLI so none compares them as strings.

use serde::{Deserialize, Serialize};

/// A device's update state as it reports it (`Report::state`, the audit log, the gateway's API and
/// metrics). The names are the JSON spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// The agent has not read its state yet.
    Starting,
    /// Running the committed slot; nothing pending.
    Idle,
    /// Fetching the artifact from the ward swarm.
    Fetching,
    /// Writing the image into the inactive slot and verifying it.
    Installing,
    /// Setting the new slot to boot once.
    Activating,
    /// The new slot boots once at the next reboot.
    Rebooting,
    /// Booted the new slot; health check running.
    HealthCheck,
    /// Making the new slot the committed one.
    Committing,
    /// Cancelling the try-boot and returning to the committed slot.
    RollingBack,
    /// A state this build does not know (a newer device agent).
    #[serde(other)]
    Unknown,
}

impl DeviceState {
    /// Every state a device of this build reports.
    pub const ALL: [Self; 9] = [
        Self::Starting,
        Self::Idle,
        Self::Fetching,
        Self::Installing,
        Self::Activating,
        Self::Rebooting,
        Self::HealthCheck,
        Self::Committing,
        Self::RollingBack,
    ];
    /// The JSON spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Idle => "idle",
            Self::Fetching => "fetching",
            Self::Installing => "installing",
            Self::Activating => "activating",
            Self::Rebooting => "rebooting",
            Self::HealthCheck => "health_check",
            Self::Committing => "committing",
            Self::RollingBack => "rolling_back",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an update attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    /// The new image is committed.
    Committed,
    /// The new image did not pass its boot or health check; the device runs the old one.
    RolledBack,
    /// The attempt stopped before activation (install or fetch failure).
    Failed,
    /// The rollout directing it ended for this device before it activated.
    Canceled,
}

impl UpdateResult {
    /// The JSON spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Committed => "committed",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

impl std::fmt::Display for UpdateResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
