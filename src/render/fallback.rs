//! The tenant's fallback image (`fallback:` in its config): answered, transformed with the
//! request's options, instead of an error it replaces (source not found, origin error,
//! unreadable image), as imgproxy's fallback image is.
//!
//! The answer says what it is — `X-Imgedge-Fallback: 1`, a short `max-age`, never
//! `immutable` or `stale-if-error` — so that once the origin has the image again, the next
//! request after that short lifetime renders the real one. It is counted as the error it
//! replaces (metrics here, usage at the edge), never as a transform. A fallback that fails
//! itself leaves the original error.

use std::time::Duration;

use http::StatusCode;

use super::{Output, Render};
use crate::error::Error;
use crate::options::ImageRequest;
use crate::tenants::TenantRuntime;

/// What render needs to answer a fallback image.
pub(super) struct Answered {
    pub status: StatusCode,
    pub ttl: Duration,
    /// The metric category of the error it replaces.
    pub replaced: &'static str,
}

impl Answered {
    pub fn cache_control(&self) -> String {
        format!("public, max-age={}", self.ttl.as_secs())
    }
}

impl Render {
    /// The fallback image for `req`, which failed with `e`, and its ETag; `None` when the
    /// tenant has none for this error or it cannot be made (then `e` is answered).
    pub(super) async fn fallback(&self, rt: &TenantRuntime, req: &ImageRequest, e: &Error) -> Option<(Output, String)> {
        let fb = rt.tenant.fallback.as_ref().filter(|f| f.replaces(e))?;
        let status = StatusCode::from_u16(fb.status_for(e)).ok()?;
        // the failed attempt's slot was released; the fallback is a render of its own
        let admitted = self.admit(rt).ok()?;
        let mut origin_us = None;
        // its own ETag: never the real image's, and a new fallback file changes it
        let etag_key = format!("{}\0fallback", req.canonical());
        match self.produce(rt, &req.options, &fb.source, &etag_key, admitted, &mut origin_us).await {
            Ok((mut out, etag)) => {
                if e.status() >= 500 {
                    tracing::warn!(tenant = %rt.tenant.id, request = %req.canonical(), error = %e,
                        "render failed, answered with the fallback image");
                }
                out.fallback = Some(Answered { status, ttl: fb.ttl, replaced: e.category() });
                Some((out, etag))
            }
            Err(fe) => {
                tracing::warn!(tenant = %rt.tenant.id, request = %req.canonical(), error = %e, fallback_error = %fe,
                    "the fallback image failed too");
                None
            }
        }
    }
}
