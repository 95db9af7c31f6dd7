//! imgedge: a multi-tenant image-transformation CDN origin on Pingora.
//!
//! The pure core — URL options, signatures, negotiation, the image engine, config and the
//! error table — is the `imgedge-core` crate, re-exported here under its module names. This
//! crate is the server around it: [`edge`] (the public listener: admission, the hit path,
//! the proxy), [`cache`] (storage tiers, the front of ready hits, generations), [`render`]
//! (origin fetch and transform on a Unix socket), [`ops`] (health, metrics, purge),
//! [`fleet`] (several nodes as one origin: owner routing, purges through PostgreSQL),
//! [`usage`] (metering), [`reqlog`] (the request log), [`answer`] (every error answer), [`tenants`] (the live tenant
//! set), [`reload`] (signals: config reload, self-started upgrade) and [`server`] (assembly).
//! README.md § Architecture has the code map.

pub use imgedge_core::{config, error, negotiate, options, signature, ssrf, transform};

pub mod answer;
pub mod cache;
pub mod edge;
pub mod fleet;
pub mod metrics;
pub mod ops;
pub mod reload;
pub mod render;
pub mod reqlog;
pub mod server;
pub mod tenants;
pub mod usage;
