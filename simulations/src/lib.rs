//! Ward simulations: scenarios (TOML), three engines that share the real scheduler and super-seeding
//! code, reports (JSON) and pictures (SVG). Run as `wardswarm sim SCENARIO.toml [--engine ...]`;
//! documented in `docs/simulations.md`. A scenario may roll the release out in waves ([`rollout`]).
//!
//! | engine | what runs | scale |
//! |---|---|---|
//! | [`model`] | discrete-event simulation in virtual time over modelled links | thousands of devices |
//! | [`live`] | the real gateway, origin and device agents in one process on loopback | up to about 50 devices |
//! | [`netns`] | real `wardswarm` processes, one Linux network namespace each, `tc`-shaped links | a few dozen devices (root) |

pub mod live;
mod live_rollout;
pub mod model;
pub mod netns;
pub mod plot;
pub mod report;
pub mod rollout;
pub mod scenario;

pub use report::{build as build_report, Bound, Report, RunOutcome};
pub use scenario::Scenario;
