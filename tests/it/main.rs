//! The single integration-test binary: every test runs the real `imgedge` binary on
//! loopback against real origins.
#![allow(clippy::unwrap_used)]

mod harness;
mod pg;

mod cache;
mod cli;
mod clients;
mod deploy;
mod edge;
mod fallback;
mod fleet;
mod fleet_purge;
mod front;
mod grid;
mod hostile;
mod imgproxy;
mod info;
mod observe;
mod ops;
mod origins;
mod overload;
mod owner;
mod placeholders;
mod prometheus;
mod reload;
mod shared;
mod transform;
mod usage;
mod watermark;
