//! The device agent: A/B slots ([`slots`]), the pure update state machine ([`machine`]), the
//! hash-chained audit log ([`audit`]), and the runtime that drives them from the ward swarm
//! ([`runtime`]). See `docs/agent.md`.

pub mod audit;
pub mod machine;
pub mod runtime;
pub mod slots;
