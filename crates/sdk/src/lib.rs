//! Flotilla's SDK: everything a service needs to run in a Flotilla system.
//!
//! A service is built with [`runtime::Service`]: it binds, registers with the control plane,
//! heartbeats, serves health checks and drains gracefully. The gateway uses the same
//! [`discovery`] and [`balance`] modules, so there is one implementation of each in the tree.

pub mod admission;
pub mod app;
pub mod auth;
pub mod balance;
pub mod client;
pub mod config;
pub mod contract;
pub mod data_dir;
pub mod discovery;
pub mod events;
pub mod grpc;
pub mod http;
pub mod mtls;
pub mod openapi;
pub mod resilience;
pub mod runtime;
pub mod saga;
pub mod seal;
pub mod store;
pub mod telemetry;

pub use flotilla_api as api;
pub use flotilla_api::Problem;

// The crates a service is written with, at the versions the SDK is built on, so that a service
// depends on `flotilla` alone and never on a second copy of any of them.
pub use axum;
pub use serde;
pub use serde_json;
pub use sqlx;
pub use tokio;
pub use tracing;
pub use uuid;
// Derives (`ToSchema`, `OpenApi`, `#[utoipa::path]`) expand to `utoipa::…`: a service brings
// this name into scope with `use flotilla::utoipa;` and needs no dependency of its own.
pub use utoipa;
