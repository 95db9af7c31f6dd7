//! One small transformation per file. Each step takes the pipeline context and
//! either does its work or returns early when it has nothing to do; only
//! `pipeline.rs` decides the order.

pub(crate) mod crop;
pub(crate) mod flatten;
pub(crate) mod orient;
pub(crate) mod resize;
