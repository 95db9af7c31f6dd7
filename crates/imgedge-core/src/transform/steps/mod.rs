//! One small transformation per file. Each step takes the pipeline context and
//! either does its work or returns early when it has nothing to do; only
//! `pipeline.rs` decides the order. `effects`, `trim`, `smart` and `canvas` are the
//! pixel operations the steps call.

pub(crate) mod canvas;
pub(crate) mod crop;
pub(crate) mod effects;
pub(crate) mod extend;
pub(crate) mod filters;
pub(crate) mod flatten;
pub(crate) mod orient;
pub(crate) mod resize;
pub(crate) mod smart;
pub(crate) mod trim;
pub(crate) mod watermark;
