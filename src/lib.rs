//! imgedge: a multi-tenant image-transformation CDN origin on Pingora.
//!
//! Pure core (no pingora, no tokio): [`options`], [`signature`], [`transform`], [`config`].
//! Services: [`edge`] (proxy + cache), [`render`] (origin fetch + transform on a Unix
//! socket), [`ops`] (health and metrics), assembled by [`server`]. README.md §
//! Architecture has the codemap.

pub mod body_file;
pub mod cache;
pub mod config;
pub mod edge;
pub mod error;
pub mod hits;
pub mod metrics;
pub mod negotiate;
pub mod ops;
pub mod options;
pub mod origin;
pub mod render;
pub mod server;
pub mod signature;
pub mod ssrf;
pub mod transform;
pub mod usage;
