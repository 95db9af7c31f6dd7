//! `tenants[].fallback`: an image of the tenant's own answered instead of the error when a
//! source is missing, its origin fails or it is not a readable image. Kept apart from the
//! rest of the tenant's validation: it only needs the tenant's origins.

use std::time::Duration;

use super::raw::{RawFallback, RawFallbackStatus};
use crate::error::Error;
use crate::options::{self, ParseContext, Source};
use crate::transform::TransformError;

pub const DEFAULT_FALLBACK_TTL: Duration = Duration::from_secs(60);
/// A fallback stands in for an error that may be fixed any moment: never cached long.
pub const MAX_FALLBACK_TTL: Duration = Duration::from_secs(3600);

/// The failures a fallback may replace, as named in `on:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackOn {
    /// The origin has no such object (404).
    NotFound,
    /// The origin failed or timed out (502, 504).
    OriginError,
    /// The bytes are no image imgedge reads, are corrupt, or are over the source limits
    /// (413, 415, 422).
    BadImage,
}

impl FallbackOn {
    const ALL: [FallbackOn; 3] = [FallbackOn::NotFound, FallbackOn::OriginError, FallbackOn::BadImage];

    pub fn name(self) -> &'static str {
        match self {
            FallbackOn::NotFound => "not_found",
            FallbackOn::OriginError => "origin_error",
            FallbackOn::BadImage => "bad_image",
        }
    }

    /// The class of `e`, if it is one a fallback may replace. A result too large for the
    /// request's options or a refused request is not: the fallback would fail the same way.
    pub fn of(e: &Error) -> Option<FallbackOn> {
        match e {
            Error::SourceNotFound => Some(FallbackOn::NotFound),
            Error::Origin(_) | Error::OriginTimeout => Some(FallbackOn::OriginError),
            Error::SourceTooBig(_)
            | Error::Transform(
                TransformError::UnsupportedSource | TransformError::Decode(_) | TransformError::SourceTooLarge { .. },
            ) => Some(FallbackOn::BadImage),
            _ => None,
        }
    }
}

/// The status a fallback is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackStatus {
    Code(u16),
    /// The status of the error it replaces.
    Original,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    pub source: Source,
    pub on: Vec<FallbackOn>,
    pub status: FallbackStatus,
    pub ttl: Duration,
}

impl Fallback {
    /// Whether this fallback replaces `e`.
    pub fn replaces(&self, e: &Error) -> bool {
        FallbackOn::of(e).is_some_and(|class| self.on.contains(&class))
    }

    /// The status of a fallback answered instead of `e`.
    pub fn status_for(&self, e: &Error) -> u16 {
        match self.status {
            FallbackStatus::Code(c) => c,
            FallbackStatus::Original => e.status(),
        }
    }
}

/// Validates `raw` against the tenant's origins; every problem as (path under `at`, message).
pub(super) fn validate(at: &str, raw: &RawFallback, ctx: &ParseContext<'_>) -> Result<Fallback, Vec<(String, String)>> {
    let mut problems = Vec::new();
    let source = options::parse_source(&raw.source, ctx)
        .map_err(|e| problems.push((format!("{at}.source"), format!("{:?}: {e}", raw.source))))
        .ok();
    let mut on = Vec::new();
    match &raw.on {
        None => on.extend(FallbackOn::ALL),
        Some(list) if list.is_empty() => problems.push((format!("{at}.on"), "at least one case is required".into())),
        Some(list) => {
            for (i, name) in list.iter().enumerate() {
                match FallbackOn::ALL.iter().find(|c| c.name() == name) {
                    Some(c) if !on.contains(c) => on.push(*c),
                    Some(_) => problems.push((format!("{at}.on[{i}]"), format!("{name:?} is listed twice"))),
                    None => problems.push((
                        format!("{at}.on[{i}]"),
                        format!("{name:?} is none of not_found, origin_error, bad_image"),
                    )),
                }
            }
        }
    }
    let status = match &raw.status {
        None => FallbackStatus::Code(200),
        Some(RawFallbackStatus::Word(w)) if w == "original" => FallbackStatus::Original,
        Some(RawFallbackStatus::Code(c)) if *c == 200 || (400..=599).contains(c) => FallbackStatus::Code(*c),
        Some(_) => {
            problems.push((format!("{at}.status"), "must be 200, a 4xx or 5xx status, or `original`".into()));
            FallbackStatus::Code(200)
        }
    };
    let ttl = raw.ttl.map_or(DEFAULT_FALLBACK_TTL, |d| d.0);
    if ttl < Duration::from_secs(1) || ttl > MAX_FALLBACK_TTL {
        problems.push((format!("{at}.ttl"), "must be in 1s..=1h (a fallback is never cached long)".into()));
    }
    match (source, problems.is_empty()) {
        (Some(source), true) => Ok(Fallback { source, on, status, ttl }),
        _ => Err(problems),
    }
}
