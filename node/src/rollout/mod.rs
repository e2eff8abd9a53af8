//! Rollouts the hospital controls *(pure)*: a release, the target devices in ordered groups
//! (waves), success and error thresholds per group, four-eyes approval, and the per-device statuses
//! the gateway and the device report. The states are named as in hawkBit (`docs/rollouts.md`).
//!
//! | module | owns |
//! |---|---|
//! | [`model`] | the written form: [`RolloutSpec`], groups, selectors, conditions, action types; the states and statuses |
//! | [`machine`] | [`Rollout`]: group assignment, approval, start, pause, resume, stop, thresholds |
//! | [`window`] | maintenance windows: cron start times in an IANA zone, and a duration |
//! | [`ward`] | the gateway's side: which directive each device holds, and the ward's reboot slots |
//! | [`directive`] | what the gateway tells a device it may do, and the device's decision at each step |
//!
//! Nothing here reads a clock, the network or a disk: the gateway's database and API drive it, and
//! the simulations run thousands of devices through it.

pub mod directive;
pub mod machine;
pub mod model;
pub mod ward;
pub mod window;

pub use directive::{Directive, InstallMode};
pub use machine::{Rollout, RolloutError};
pub use model::{
    ActionType, DeviceInfo, DeviceStatus, ErrorCondition, GateReason, GroupSpec, GroupState,
    RolloutSpec, RolloutState, Selector, SuccessAction,
};
pub use ward::{DeviceNow, WardPolicy};
pub use window::{Window, WindowError, WindowSpec};
