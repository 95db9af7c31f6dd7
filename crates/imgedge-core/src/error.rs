//! The one place that maps failures to HTTP statuses, public messages and metric
//! categories. Everything else returns typed errors; `edge` and `render` turn them into
//! responses through [`Error::status`] and [`Error::public_message`].

use crate::options::OptionError;
use crate::signature::SignatureError;
use crate::transform::TransformError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown host")]
    UnknownTenant,
    /// A `Host` that is no valid authority (bad characters, port, brackets).
    #[error("bad Host header")]
    BadHost,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("URL expired")]
    Expired,
    #[error(transparent)]
    Options(#[from] OptionError),
    #[error("method not allowed")]
    Method,
    #[error("source not found")]
    SourceNotFound,
    #[error("source is larger than {0} bytes")]
    SourceTooBig(u64),
    #[error("origin error: {0}")]
    Origin(String),
    #[error("origin timed out")]
    OriginTimeout,
    /// An HTTP origin resolved to, or redirected to, an address or host it may not reach.
    #[error("source address not allowed")]
    SourceForbidden,
    #[error("too many requests")]
    RateLimited,
    #[error("too many renders in progress for this tenant")]
    TooManyRenders,
    /// The render queue is full: answered at once rather than waiting.
    #[error("server busy, retry later")]
    Overloaded,
    #[error("render timed out")]
    RenderTimeout,
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error("render failed: {0}")]
    Internal(String),
}

impl Error {
    /// HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::UnknownTenant | Error::SourceNotFound => 404,
            // imgproxy answers 404 for expired URLs, so CDNs treat them like missing objects
            Error::Expired => 404,
            Error::Signature(_) => 403,
            Error::Options(
                OptionError::SecurityOption(_) | OptionError::Forbidden(_) | OptionError::MetadataWithheld(_),
            ) => 403,
            Error::Options(_) | Error::BadHost => 400,
            Error::Method => 405,
            Error::SourceTooBig(_) => 413,
            Error::Origin(_) => 502,
            Error::OriginTimeout | Error::RenderTimeout => 504,
            Error::SourceForbidden => 403,
            Error::RateLimited | Error::TooManyRenders => 429,
            Error::Overloaded => 503,
            Error::Transform(t) => match t {
                TransformError::UnsupportedSource | TransformError::UnsupportedOutput(_) => 415,
                TransformError::SourceTooLarge { .. }
                | TransformError::ResultTooLarge(..)
                | TransformError::Decode(_) => 422,
                TransformError::Encode(_) => 500,
                TransformError::TimedOut => 504,
            },
            Error::Internal(_) => 500,
        }
    }

    /// Short text safe to show to clients: never origin internals or credentials.
    pub fn public_message(&self) -> String {
        match self {
            Error::Origin(_) => "origin error".to_owned(),
            Error::Internal(_) => "internal error".to_owned(),
            Error::Transform(TransformError::Encode(_)) => "cannot encode result".to_owned(),
            other => other.to_string(),
        }
    }

    /// Seconds a client should wait before retrying (`Retry-After`), for load shedding.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::RateLimited | Error::TooManyRenders | Error::Overloaded => Some(1),
            _ => None,
        }
    }

    /// Low-cardinality category for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::UnknownTenant => "unknown_tenant",
            Error::BadHost => "bad_host",
            Error::Signature(_) => "signature",
            Error::Expired => "expired",
            Error::Options(_) => "options",
            Error::Method => "method",
            Error::SourceNotFound => "not_found",
            Error::SourceTooBig(_) => "source_too_big",
            Error::Origin(_) => "origin",
            Error::OriginTimeout => "origin_timeout",
            Error::SourceForbidden => "source_forbidden",
            Error::RateLimited => "rate_limited",
            Error::TooManyRenders => "too_many_renders",
            Error::Overloaded => "overloaded",
            Error::RenderTimeout | Error::Transform(TransformError::TimedOut) => "render_timeout",
            Error::Transform(TransformError::Decode(_)) => "decode",
            Error::Transform(TransformError::Encode(_)) => "encode",
            Error::Transform(TransformError::UnsupportedSource)
            | Error::Transform(TransformError::UnsupportedOutput(_)) => "unsupported",
            Error::Transform(_) => "limits",
            Error::Internal(_) => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_imgproxy() {
        assert_eq!(Error::Expired.status(), 404);
        assert_eq!(Error::Signature(SignatureError::Invalid).status(), 403);
        assert_eq!(Error::Options(OptionError::UnknownOption("x".into())).status(), 400);
        assert_eq!(Error::Transform(TransformError::UnsupportedSource).status(), 415);
        assert_eq!(Error::OriginTimeout.status(), 504);
        assert_eq!(Error::RenderTimeout.status(), 504);
        assert_eq!(Error::BadHost.status(), 400);
        assert_eq!(Error::SourceForbidden.status(), 403);
        assert_eq!((Error::RateLimited.status(), Error::RateLimited.retry_after()), (429, Some(1)));
        assert_eq!((Error::Overloaded.status(), Error::Overloaded.retry_after()), (503, Some(1)));
        assert_eq!(Error::TooManyRenders.status(), 429);
        assert_eq!(Error::SourceTooBig(1).retry_after(), None);
        assert_eq!(Error::Origin("boom".into()).public_message(), "origin error");
    }
}
