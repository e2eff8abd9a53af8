//! The ward gateway (seeder) and the development origin server.
//!
//! | module | what it holds |
//! |---|---|
//! | [`gateway`] | poll the origin, verify, plan, download once by HTTP range under the WAN cap, seed, collect reports |
//! | [`api`] | `GET /api/v1/devices`, `GET /api/v1/releases`, `GET /metrics`; the rollout and token routes |
//! | [`control`] | API tokens and roles, rollouts in the database, the gateway's audit log |
//! | [`openapi`] | the API's OpenAPI document, from the table of its routes |
//! | [`db`] | the gateway's embedded database (redb) |
//! | [`origin`] | `index.json` publishing and a static origin with range support |
//!
//! See `docs/gateway.md`.

pub mod api;
pub mod control;
pub mod db;
pub mod gateway;
pub mod openapi;
pub mod origin;

pub use gateway::{Gateway, GatewayConfig, GatewayError};
