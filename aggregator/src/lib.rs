//! The connwatch aggregator: ingests collector reports into sled, evaluates findings
//! per connector and group, raises alerts, exports Prometheus metrics, and answers
//! operators over gRPC. `main.rs` is a thin shell
//! over [`server::run`], the operator [`cli`], the [`ca`] commands and the [`demo`].

pub mod admin;
pub mod alert;
pub mod auth;
pub mod backup;
pub mod ca;
pub mod cli;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod ingest;
pub mod listener;
pub mod metrics;
pub mod priority;
pub mod query;
pub mod remedy;
pub mod rollup;
pub mod rules;
pub mod server;
pub mod store;
pub mod version;
