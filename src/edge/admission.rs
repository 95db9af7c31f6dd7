//! Admission: everything that decides whether a request deserves any work, in order of
//! cost — method, tenant by `Host` ([`host`]), signature, rate, options, expiry — shared
//! by pingora's path and the hit path. No I/O.
//!
//! Only a request whose signature verified is the tenant's: it alone is counted against the
//! tenant's rate and in its usage. The others (unknown host, missing or bad signature) are
//! counted apart and limited per client address, so knowing a tenant's hostname is not
//! enough to exhaust its limits or inflate its bill.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use pingora_limits::rate::Rate;

use super::{host, Ctx};
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
    /// The `Host` header's value (or the absolute-form target's authority).
    pub(crate) host: Option<&'a [u8]>,
    /// The path without the query.
    pub(crate) path: &'a str,
    pub(crate) accept: Option<&'a [u8]>,
    /// The client's address, for the limit on unverified requests (`None` on a Unix socket).
    pub(crate) client: Option<IpAddr>,
}

/// What the edge's request handling shares with the hit path: tenants, cache, rate limits.
pub struct EdgeCore {
    /// The live tenant set (swapped by a reload).
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) cache: Arc<EdgeCache>,
    /// Verified requests per tenant in the current second, for `limits.rate_per_second`.
    rate: Rate,
    /// Unverified requests per client address in the current second.
    unverified: Rate,
}

impl EdgeCore {
    pub fn new(tenants: Arc<Tenants>, cache: Arc<EdgeCache>) -> Self {
        let second = std::time::Duration::from_secs(1);
        EdgeCore { tenants, cache, rate: Rate::new(second), unverified: Rate::new(second) }
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

    /// Whether the tenant has used its whole rate this second, without counting a request:
    /// the hit path leaves such a request to pingora, which counts it once and refuses it.
    pub(crate) fn at_rate(&self, tenant: &Tenant) -> bool {
        let max_rate = tenant.limits.rate_per_second;
        max_rate > 0 && self.rate.observe(&tenant.id, 0) >= max_rate as isize
    }

    /// Counts an unverified request of `client`; `true` when the address is over its limit.
    fn over_unverified_rate(&self, client: Option<IpAddr>) -> bool {
        let max = self.tenants.load().unverified_rate_per_address;
        let Some(ip) = client else { return false };
        if max > 0 && self.unverified.observe(&ip, 1) > max as isize {
            metrics::limit_rejected("unverified_address");
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
        let verified = self.verify(req, ctx);
        if let Err(e) = verified {
            // over its address's limit, an unverified client gets 429 instead of the refusal
            return Err(if count_rate && self.over_unverified_rate(req.client) { Error::RateLimited } else { e });
        }
        let Some(tenant) = ctx.tenant.clone() else { return Err(Error::UnknownTenant) };
        if count_rate && self.over_rate(&tenant) {
            return Err(Error::RateLimited);
        }
        let (path, kind) = signed_path(req.path);
        let rest = signature::split_signed_path(path).map_or("", |(_, rest)| rest);
        if kind == Kind::Grid {
            let parsed = options::parse_grid(rest, &tenant.parse_context())?;
            ctx.expires = parsed.expires;
            if expired(parsed.expires, SystemTime::now()) {
                return Err(Error::Expired);
            }
            // at most MAX_GRID_SOURCES, checked by the parser
            ctx.grid = Some(parsed.request.sources.len() as u8);
            ctx.format = parsed.request.output_format().ext();
            ctx.canonical = parsed.request.canonical();
            return Ok(());
        }
        if kind == Kind::Info {
            // before parsing: a refused `/info` URL is still an info request in the usage
            ctx.info = true;
            let parsed = options::parse_info(rest, &tenant.parse_context())?;
            let metadata = parsed.request.options.metadata.first_asked();
            if let Some(name) = metadata.filter(|_| tenant.info_withhold_metadata) {
                return Err(options::OptionError::MetadataWithheld(name).into());
            }
            ctx.expires = parsed.expires;
            if expired(parsed.expires, SystemTime::now()) {
                return Err(Error::Expired);
            }
            ctx.format = cache::INFO_FORMAT;
            ctx.canonical = parsed.request.canonical();
            // under the source's generation, so a purge of the source hides it too
            ctx.source = cache::source_id(&parsed.request.source);
            return Ok(());
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
        let wm = &parsed.request.options.watermark;
        if wm.enabled() {
            let src =
                wm.source.clone().or_else(|| tenant.watermark.as_ref().map(|w| w.source.clone())).ok_or_else(|| {
                    options::OptionError::InvalidArgs {
                        name: "wm".into(),
                        reason: "no watermark image: the tenant has no watermark.source (wmu names one)".into(),
                    }
                })?;
            let revalidate = watermark_revalidate(&tenant);
            ctx.watermark_id = self.tenants.watermarks.fresh(&tenant.id, &src, revalidate).map(|l| l.id);
            ctx.watermark = Some(src);
        }
        ctx.canonical = parsed.request.canonical();
        ctx.source = cache::source_id(&parsed.request.source);
        Ok(())
    }

    /// Tenant by `Host` and the signature: sets `ctx.tenant`, and `ctx.unverified` to the
    /// reason when the request is not the tenant's.
    fn verify(&self, req: &RequestParts<'_>, ctx: &mut Ctx) -> Result<(), Error> {
        // a Host that is no authority names no tenant: refused (400), counted as unknown
        let name = match req.host.map(host::name) {
            Some(None) => {
                ctx.unverified = Some("unknown_host");
                return Err(Error::BadHost);
            }
            name => name.flatten(),
        };
        let Some(tenant) = name.and_then(|n| self.tenants.load().resolve(n).cloned()) else {
            ctx.unverified = Some("unknown_host");
            return Err(Error::UnknownTenant);
        };
        ctx.tenant = Some(tenant.clone());
        let checked = match signature::split_signed_path(signed_path(req.path).0) {
            None => Err(signature::SignatureError::Missing),
            Some(_) if tenant.allow_unsigned => Ok(()),
            Some((sig, rest)) => signature::verify(&tenant.keys, tenant.signature_size, sig, rest),
        };
        checked.map_err(|e| {
            ctx.unverified = Some(match e {
                signature::SignatureError::Missing => "missing_signature",
                signature::SignatureError::Invalid => "bad_signature",
            });
            Error::Signature(e)
        })
    }
}

/// How long a watermark's identity is trusted (`wmu` images too).
pub(crate) fn watermark_revalidate(tenant: &Tenant) -> std::time::Duration {
    tenant.watermark.as_ref().map_or(crate::config::DEFAULT_REVALIDATE, |w| w.revalidate)
}

/// What a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transform,
    Info,
    Grid,
}

/// The signed part of a request path and its kind: for `/info/{signature}/…` and
/// `/grid/{signature}/…` the signature covers what follows it, as for a transform.
fn signed_path(path: &str) -> (&str, Kind) {
    if let Some(p) = path.strip_prefix(options::INFO_PREFIX).filter(|p| p.starts_with('/')) {
        return (p, Kind::Info);
    }
    match path.strip_prefix(options::GRID_PREFIX).filter(|p| p.starts_with('/')) {
        Some(p) => (p, Kind::Grid),
        None => (path, Kind::Transform),
    }
}

/// Whether a signed URL expiring at `expires` (seconds since the epoch) is past it at `now`.
pub(crate) fn expired(expires: Option<u64>, now: SystemTime) -> bool {
    expires.is_some_and(|exp| now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= exp)
}
