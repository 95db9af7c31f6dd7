//! Admission: everything that decides whether a request deserves any work, in order of
//! cost — method, tenant by `Host`, rate, signature, options, expiry — shared by pingora's
//! path and the hit path. No I/O.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pingora_limits::rate::Rate;

use super::Ctx;
use crate::cache::{self, EdgeCache};
use crate::config::Tenant;
use crate::error::Error;
use crate::metrics;
use crate::negotiate;
use crate::options;
use crate::signature;
use crate::tenants::Tenants;

/// What admission reads of a request: the same whether pingora parsed it or the hit path
/// ([`super::conn`]) did.
pub(crate) struct RequestParts<'a> {
    pub(crate) get_or_head: bool,
    pub(crate) host: Option<&'a str>,
    /// The path without the query.
    pub(crate) path: &'a str,
    pub(crate) accept: Option<&'a [u8]>,
}

/// What the edge's request handling shares with the hit path: tenants, cache, rate limits.
pub struct EdgeCore {
    /// The live tenant set (swapped by a reload).
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) cache: Arc<EdgeCache>,
    /// Requests per tenant in the current second, for `limits.rate_per_second`.
    rate: Rate,
}

impl EdgeCore {
    pub fn new(tenants: Arc<Tenants>, cache: Arc<EdgeCache>) -> Self {
        EdgeCore { tenants, cache, rate: Rate::new(std::time::Duration::from_secs(1)) }
    }

    /// Counts one request against the tenant's per-second limit; `true` when over it.
    pub(crate) fn over_rate(&self, tenant: &Tenant) -> bool {
        let max_rate = tenant.limits.rate_per_second;
        if max_rate > 0 && self.rate.observe(&tenant.id, 1) > max_rate as isize {
            metrics::limit_rejected("tenant_rate");
            return true;
        }
        false
    }

    /// Tenant, signature, options, expiry — everything that decides whether this request
    /// deserves any work, in order of cost. `count_rate: false` leaves the rate limit to the
    /// caller (the hit path counts only requests it answers itself).
    pub(crate) fn admit(&self, req: &RequestParts<'_>, ctx: &mut Ctx, count_rate: bool) -> Result<(), Error> {
        if !req.get_or_head {
            return Err(Error::Method);
        }
        let tenant = req.host.and_then(|h| self.tenants.load().resolve(h).cloned()).ok_or(Error::UnknownTenant)?;
        ctx.tenant = Some(tenant.clone());
        // before the signature, so a flood of bad signatures is limited too
        if count_rate && self.over_rate(&tenant) {
            return Err(Error::RateLimited);
        }
        let path = req.path;
        let (sig, rest) =
            signature::split_signed_path(path).ok_or(Error::Signature(signature::SignatureError::Missing))?;
        if !tenant.allow_unsigned {
            signature::verify(&tenant.keys, tenant.signature_size, sig, rest)?;
        }
        let mut parsed = options::parse(rest, &tenant.parse_context())?;
        ctx.expires = parsed.expires;
        if expired(parsed.expires, SystemTime::now()) {
            return Err(Error::Expired);
        }
        let opts = &parsed.request.options;
        // raw streams the source as is: no format to choose
        ctx.vary_accept = !tenant.negotiate.is_empty() && opts.format.is_none() && !opts.raw;
        if ctx.vary_accept {
            if let Some(f) = negotiate::best(req.accept, &tenant.negotiate) {
                // billed without the negotiated format: one unique transform per URL
                ctx.billing_canonical = Some(parsed.request.canonical());
                parsed.request.options.format = Some(f);
            }
        }
        ctx.format = parsed.request.options.format.map_or("src", |f| f.ext());
        ctx.canonical = parsed.request.canonical();
        ctx.source = cache::source_id(&parsed.request.source);
        Ok(())
    }
}

/// Whether a signed URL expiring at `expires` (seconds since the epoch) is past it at `now`.
pub(crate) fn expired(expires: Option<u64>, now: SystemTime) -> bool {
    expires.is_some_and(|exp| now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= exp)
}
