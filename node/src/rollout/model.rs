//! The written form of a rollout and the names of its states. JSON field and value names are the
//! API's (`docs/rollouts.md`); states follow hawkBit's `Rollout.RolloutStatus` and
//! `RolloutGroup.RolloutGroupStatus`, device statuses hawkBit's and Mender's action statuses, with
//! `gated` added: a device that may not install yet, which is never an error.

use serde::{Deserialize, Serialize};

use super::window::WindowSpec;

/// How a targeted device installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActionType {
    /// As soon as its group runs, its window is open and its gate allows.
    #[default]
    Forced,
    /// As `forced`, and also only with the device's consent, given through its local gate.
    Soft,
    /// Stage the bytes now; install on a later instruction.
    DownloadOnly,
}

/// Which devices a group takes, from the targets no earlier group took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case", deny_unknown_fields)]
pub enum Selector {
    /// These device ids.
    Devices { ids: Vec<String> },
    /// Devices of this product.
    Product { product: String },
    /// Devices of this hardware id.
    Hardware { hardware: String },
    /// Devices carrying every one of these labels (`labels = [...]` in the device's config).
    Labels { labels: Vec<String> },
    /// This percentage of the remaining targets (rounded up, at least one while any remain).
    Percent { percent: f64 },
    /// Every remaining target.
    Rest,
}

/// When a group counts as failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCondition {
    /// Errors at or above this percentage of the group's devices (default 20).
    #[serde(default)]
    pub percent: Option<u8>,
    /// Or at least this many errors.
    #[serde(default)]
    pub count: Option<u32>,
    /// No verdict before this many of the group's devices have ended (finished or error); default 1.
    #[serde(default = "one")]
    pub min_sample: u32,
}

fn one() -> u32 {
    1
}

impl Default for ErrorCondition {
    fn default() -> Self {
        Self {
            percent: Some(20),
            count: None,
            min_sample: 1,
        }
    }
}

/// What happens when a group reaches its success threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SuccessAction {
    /// Start the next group.
    #[default]
    NextGroup,
    /// Pause the rollout (a QA hold): an operator resumes it to start the next group.
    Pause,
}

/// One wave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Its name, unique in the rollout.
    pub name: String,
    /// Which devices it takes.
    pub select: Selector,
    /// Finished devices, in percent of the group, that make it a success (default 100).
    #[serde(default)]
    pub success_percent: Option<u8>,
    /// Then what (default `next_group`).
    #[serde(default)]
    pub success_action: SuccessAction,
    /// When it fails (default: the rollout's).
    #[serde(default)]
    pub error: Option<ErrorCondition>,
}

/// A rollout as an operator writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// A name for people.
    pub name: String,
    /// The release: its version, as the gateway's `/api/v1/releases` lists it.
    pub release: String,
    /// How devices install (default `forced`).
    #[serde(default)]
    pub action: ActionType,
    /// The waves, in order.
    pub groups: Vec<GroupSpec>,
    /// The default error condition of the groups.
    #[serde(default)]
    pub error: ErrorCondition,
    /// When devices may install (default: the ward's window, or any time).
    #[serde(default)]
    pub window: Option<WindowSpec>,
}

/// What the model knows of a device when it assigns groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its id (the certificate's device id).
    pub id: String,
    /// Its product.
    pub product: Option<String>,
    /// Its hardware id.
    pub hardware: String,
    /// Labels from its config.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A rollout's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Being set up (groups being assigned).
    Creating,
    /// Waiting for an approver other than its creator.
    WaitingForApproval,
    /// Denied; read-only.
    ApprovalDenied,
    /// Approved, not started.
    Ready,
    /// Groups are running.
    Running,
    /// Held: by an operator, at an error threshold, or at a QA hold.
    Paused,
    /// Stopped: devices not yet done were canceled.
    Stopped,
    /// Every group is done.
    Finished,
}

/// A group's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Waiting for the groups before it.
    Scheduled,
    /// Its devices may install.
    Running,
    /// Reached its success threshold.
    Finished,
    /// Reached its error threshold, or ended below its success threshold.
    Error,
}

/// Why a device waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateReason {
    /// Its clinical-use gate says the device is in use.
    InUse,
    /// Its maintenance window is closed.
    WindowClosed,
    /// Too many devices of the ward are rebooting.
    RebootLimit,
    /// A `soft` rollout waits for the device's consent.
    AwaitingConsent,
}

/// A targeted device's status in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Its group has not started.
    Scheduled,
    /// Fetching the artifact.
    Downloading,
    /// The artifact is complete and verified.
    Downloaded,
    /// May not install yet (see [`GateReason`]); never an error.
    Gated,
    /// Writing its inactive slot.
    Installing,
    /// Try-booting the new image.
    Rebooting,
    /// Committed and reported.
    Finished,
    /// Rolled back or failed.
    Error,
    /// The rollout was stopped before it finished.
    Canceled,
}

impl DeviceStatus {
    /// Every status, in order.
    pub const ALL: [Self; 9] = [
        Self::Scheduled,
        Self::Downloading,
        Self::Downloaded,
        Self::Gated,
        Self::Installing,
        Self::Rebooting,
        Self::Finished,
        Self::Error,
        Self::Canceled,
    ];
    /// The API's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Downloading => "downloading",
            Self::Downloaded => "downloaded",
            Self::Gated => "gated",
            Self::Installing => "installing",
            Self::Rebooting => "rebooting",
            Self::Finished => "finished",
            Self::Error => "error",
            Self::Canceled => "canceled",
        }
    }
    /// It has ended (nothing more happens to it in this rollout).
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Finished | Self::Error | Self::Canceled)
    }
    /// It has activated the new slot (set it to boot once) and is rebooting into it: a pause no
    /// longer holds it. A device still writing its inactive slot has not: a pause holds it before
    /// the reboot.
    pub const fn is_activated(self) -> bool {
        matches!(self, Self::Rebooting)
    }
}
