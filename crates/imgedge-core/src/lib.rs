//! imgedge's pure core: everything that decides what a request means and what image it
//! produces, with no pingora, no tokio and no network (the compiler keeps it so: this
//! crate does not depend on them).
//!
//! - [`options`]: the typed request and its canonical form (imgproxy's URL grammar);
//! - [`signature`]: imgproxy-compatible HMAC signatures;
//! - [`negotiate`]: output format from `Accept`;
//! - [`transform`]: the image engine (`transform::run` does no I/O);
//! - [`config`]: YAML → validated runtime configuration, every problem at once;
//! - [`error`]: the one mapping from failures to statuses, messages and metric categories;
//! - [`ssrf`]: which addresses an HTTP origin may reach.

pub mod config;
pub mod error;
pub mod negotiate;
pub mod options;
pub mod signature;
pub mod ssrf;
pub mod transform;
