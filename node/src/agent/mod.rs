//! The device agent: A/B slots ([`slots`]), the pure update state machine ([`machine`]), the
//! hash-chained audit log ([`audit`]), and the runtime that drives them from the ward swarm
//! ([`runtime`]), which writes the inactive slot through [`install`] and asks the clinical-use
//! [`gate`] before it installs, reboots or commits. See `docs/agent.md`.

pub mod audit;
pub mod config;
pub mod directed;
pub mod gate;
pub mod install;
pub mod machine;
pub mod report;
pub mod runtime;
pub mod slots;
pub mod status;
