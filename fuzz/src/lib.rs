//! The pure core of imgedge, compiled from the main crate's own sources: the URL parser,
//! signatures and the image engine import neither pingora nor tokio (README §
//! Invariants), so the fuzzers build them without the server's dependency tree (pingora,
//! object_store, TLS), which would multiply the sanitizer build time.
#![allow(dead_code)]

#[path = "../../src/options/mod.rs"]
pub mod options;
#[path = "../../src/signature.rs"]
pub mod signature;
#[path = "../../src/transform/mod.rs"]
pub mod transform;
