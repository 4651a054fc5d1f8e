//! Code shared by the connwatch collector and aggregator: the identity model carried in
//! certificates, TLS set-up, the small PKI used to mint certificates, the findings
//! model, the catalogue of known connector log errors, report validation,
//! configuration and logging helpers. No sockets live here.

#![warn(missing_docs)]

pub mod config;
pub mod finding;
pub mod identity;
pub mod logging;
pub mod logsig;
pub mod manual;
pub mod pki;
pub mod render;
pub mod signals;
pub mod time;
pub mod tls;
pub mod validate;

pub use connwatch_proto::v1 as wire;
