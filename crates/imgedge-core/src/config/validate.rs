//! Raw YAML → runtime config. Problems are collected, not returned at the first one, so
//! an operator fixes a file in one round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    RawBilling, RawConfig, RawFleet, RawLimits, RawLog, RawOrigin, RawShared, RawTenant, RawTenantLog, RawTransform,
    RawUsage,
};
use super::{
    Billing, Cache, Config, Credits, Fleet, Limits, Listen, Origin, Problem, Render, RequestLog, SharedStore, Tenant,
    TenantLog, Usage,
};
use crate::options::{self, Format, OriginRef, ParseContext};
use crate::signature::KeyPair;

const DEFAULT_MAX_SRC_BYTES: u64 = 50 << 20;
const DEFAULT_MAX_SRC_MEGAPIXELS: f64 = 50.0;
const DEFAULT_MAX_GRID_MEGAPIXELS: f64 = 100.0;
const DEFAULT_MAX_RESULT_DIMENSION: u32 = 8192;
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DEFAULT_ORIGIN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RENDER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_TTL: Duration = Duration::from_secs(31_536_000);
const DEFAULT_INFO_TTL: Duration = Duration::from_secs(86_400);
const DEFAULT_NOT_FOUND_TTL: Duration = Duration::from_secs(60);
const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(86_400);
/// Frames of one animation: the pixel limit bounds memory, this bounds encode time.
const MAX_FRAMES: u32 = 1000;

/// Deserialises, naming the YAML path (and tenant, when inside one) of every schema
/// problem. `Ok` holds the document without the parts that had problems, if any, and those
/// problems; the caller reports them with the semantic ones.
pub(super) fn parse(text: &str) -> (Option<RawConfig>, Vec<Problem>, Vec<String>) {
    let parsed = super::schema::parse::<RawConfig>(text);
    let problems =
        parsed.problems.into_iter().map(|p| Problem { tenant: tenant_of_path(text, &p.path), ..p }).collect();
    (parsed.raw, problems, parsed.removed)
}

/// Finds the tenant id for a path like `tenants[2].keys[0]` by a loose re-read.
fn tenant_of_path(text: &str, path: &str) -> Option<String> {
    let rest = path.strip_prefix("tenants[")?;
    let idx: usize = rest.split(']').next()?.parse().ok()?;
    let value: serde_yaml::Value = serde_yaml::from_str(text).ok()?;
    value.get("tenants")?.get(idx)?.get("id")?.as_str().map(str::to_owned)
}

pub(super) struct Collector {
    pub(super) problems: Vec<Problem>,
    tenant: Option<String>,
}

impl Collector {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), tenant: self.tenant.clone(), message: message.into() });
    }
}

pub(super) fn validate(raw: RawConfig, base: &Path, file: &Path) -> Result<Config, Vec<Problem>> {
    let _ = file;
    let mut c = Collector { problems: Vec::new(), tenant: None };

    if raw.listen.edge.is_empty() {
        c.push("listen.edge", "at least one address is required");
    }
    for (i, addr) in raw.listen.edge.iter().enumerate() {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            c.push(format!("listen.edge[{i}]"), format!("{addr:?} is not an IP:port address"));
        }
    }
    if let Some(ops) = &raw.listen.ops {
        if ops.parse::<std::net::SocketAddr>().is_err() {
            c.push("listen.ops", format!("{ops:?} is not an IP:port address"));
        }
    }
    if raw.listen.render_socket.is_empty() {
        c.push("listen.render_socket", "must not be empty");
    }
    let listen = Listen {
        edge: raw.listen.edge.clone(),
        ops: raw.listen.ops.clone(),
        render_socket: base.join(&raw.listen.render_socket),
        header_timeout: raw.listen.header_timeout.map_or(Duration::from_secs(10), |d| d.0),
        idle_timeout: raw.listen.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
        send_timeout: raw.listen.send_timeout.map_or(Duration::from_secs(30), |d| d.0),
        min_send_rate: raw.listen.min_send_rate.map_or(0, |b| b.0),
    };
    for (key, d) in [
        ("header_timeout", listen.header_timeout),
        ("idle_timeout", listen.idle_timeout),
        ("send_timeout", listen.send_timeout),
    ] {
        if d.is_zero() {
            c.push(format!("listen.{key}"), "must be greater than 0");
        }
    }

    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let render = Render {
        threads: raw.render.threads.unwrap_or(1).max(1),
        workers: match raw.render.workers {
            None | Some(0) => cores,
            Some(n) => n,
        },
        queue: 0,
    };
    // Default: 8 waiting per worker. A render is not cancelled when its client leaves, so a
    // burst of reconnecting clients briefly holds up to twice its concurrency in flight; 4 per
    // worker shed load at concurrency 8 on 2 cores. Memory stays bounded by max_src_bytes each.
    let render = Render { queue: raw.render.queue.unwrap_or(render.workers * 8), ..render };

    let max_object_bytes = raw.cache.max_object.map_or(16 << 20, |b| b.0) as usize;
    let disk = raw.cache.disk.as_ref().map(|d| super::DiskCache {
        path: base.join(&d.path),
        size_bytes: d.size.0 as usize,
        // by default one block holds the largest object plus its header
        block_size: d.block_size.map_or(max_object_bytes + (1 << 20), |b| b.0 as usize),
    });
    let cache = Cache {
        memory_bytes: raw.cache.memory.map_or(256 << 20, |b| b.0) as usize,
        disk,
        max_object_bytes,
        lock_timeout: raw.cache.lock_timeout.map_or(Duration::from_secs(30), |d| d.0),
        shared: raw.cache.shared.as_ref().and_then(|s| shared(&mut c, s)),
    };
    if cache.memory_bytes == 0 {
        c.push("cache.memory", "must be greater than 0");
    }
    if cache.max_object_bytes == 0 || cache.max_object_bytes > cache.memory_bytes {
        c.push("cache.max_object", "must be greater than 0 and at most cache.memory");
    }
    if let Some(d) = &cache.disk {
        // an entry plus its header must fit in one block; the engine needs a few blocks
        if d.block_size < cache.max_object_bytes + (64 << 10) {
            c.push("cache.disk.block_size", "must exceed cache.max_object by at least 64KiB");
        }
        if d.size_bytes < 4 * d.block_size {
            c.push("cache.disk.size", "must be at least 4 × cache.disk.block_size");
        }
    }
    let admin_token = raw.admin.token.as_deref().and_then(|t| secret(&mut c, "admin.token", t));
    if admin_token.as_deref().is_some_and(|t| t.len() < 16) {
        c.push("admin.token", "must be at least 16 characters");
    }

    let usage = usage(&mut c, &raw.usage, base);
    let request_log = request_log(&mut c, &raw.log, base);
    let fleet = raw.fleet.as_ref().and_then(|f| fleet(&mut c, f, &usage, &listen));

    let defaults = limits(&mut c, "limits", &raw.limits, None);

    if raw.tenants.is_empty() {
        c.push("tenants", "at least one tenant is required");
    }
    let mut ids = HashSet::new();
    let mut hosts: HashMap<String, String> = HashMap::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        c.tenant = Some(t.id.clone());
        let at = format!("tenants[{i}]");
        if !ids.insert(t.id.clone()) {
            c.push(format!("{at}.id"), "duplicate tenant id");
        }
        for (j, h) in t.hosts.iter().enumerate() {
            let h = h.to_ascii_lowercase();
            if let Some(other) = hosts.insert(h.clone(), t.id.clone()) {
                c.push(format!("{at}.hosts[{j}]"), format!("host {h:?} is already used by tenant {other:?}"));
            }
        }
        if let Some(tenant) = tenant(&mut c, &at, t, &defaults, base) {
            tenants.push(Arc::new(tenant));
        }
    }

    if c.problems.is_empty() {
        Ok(Config {
            file: file.to_path_buf(),
            pingora: raw.pingora,
            listen,
            render,
            cache,
            admin_token,
            unverified_rate_per_address: raw
                .limits
                .unverified_rate_per_address
                .unwrap_or(super::DEFAULT_UNVERIFIED_RATE_PER_ADDRESS),
            usage,
            request_log,
            fleet,
            tenants,
        })
    } else {
        Err(c.problems)
    }
}

fn limits(c: &mut Collector, at: &str, raw: &RawLimits, base: Option<&Limits>) -> Limits {
    let mp = raw
        .max_src_megapixels
        .unwrap_or_else(|| base.map_or(DEFAULT_MAX_SRC_MEGAPIXELS, |b| b.max_src_pixels as f64 / 1e6));
    if !(mp > 0.0 && mp <= 1000.0) {
        c.push(format!("{at}.max_src_megapixels"), "must be in (0, 1000]");
    }
    let grid_mp = raw
        .max_grid_megapixels
        .unwrap_or_else(|| base.map_or(DEFAULT_MAX_GRID_MEGAPIXELS, |b| b.max_grid_pixels as f64 / 1e6));
    if !(grid_mp > 0.0 && grid_mp <= 1000.0) {
        c.push(format!("{at}.max_grid_megapixels"), "must be in (0, 1000]");
    }
    let l = Limits {
        max_grid_pixels: (grid_mp * 1e6) as u64,
        max_src_bytes: raw
            .max_src_bytes
            .map_or_else(|| base.map_or(DEFAULT_MAX_SRC_BYTES, |b| b.max_src_bytes), |b| b.0),
        max_src_pixels: (mp * 1e6) as u64,
        max_result_dimension: raw
            .max_result_dimension
            .unwrap_or_else(|| base.map_or(DEFAULT_MAX_RESULT_DIMENSION, |b| b.max_result_dimension)),
        origin_connect_timeout: raw
            .origin_connect_timeout
            .map_or_else(|| base.map_or(DEFAULT_CONNECT_TIMEOUT, |b| b.origin_connect_timeout), |d| d.0),
        origin_timeout: raw
            .origin_timeout
            .map_or_else(|| base.map_or(DEFAULT_ORIGIN_TIMEOUT, |b| b.origin_timeout), |d| d.0),
        render_timeout: raw
            .render_timeout
            .map_or_else(|| base.map_or(DEFAULT_RENDER_TIMEOUT, |b| b.render_timeout), |d| d.0),
        rate_per_second: raw.rate_per_second.unwrap_or_else(|| base.map_or(0, |b| b.rate_per_second)),
        max_concurrent_renders: raw
            .max_concurrent_renders
            .unwrap_or_else(|| base.map_or(0, |b| b.max_concurrent_renders)),
    };
    if l.max_src_bytes == 0 {
        c.push(format!("{at}.max_src_bytes"), "must be greater than 0");
    }
    if l.max_result_dimension == 0 || l.max_result_dimension > 65_535 {
        c.push(format!("{at}.max_result_dimension"), "must be in 1..=65535");
    }
    if l.origin_timeout.is_zero() || l.origin_connect_timeout.is_zero() {
        c.push(format!("{at}.origin_timeout"), "timeouts must be greater than 0");
    }
    if l.render_timeout.is_zero() {
        c.push(format!("{at}.render_timeout"), "must be greater than 0");
    }
    l
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Resolves `env:NAME` to the variable's value; anything else is the literal value.
fn secret(c: &mut Collector, at: &str, value: &str) -> Option<String> {
    match value.strip_prefix("env:") {
        Some(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                c.push(at, format!("environment variable {var} is not set"));
                None
            }
        },
        None => Some(value.to_owned()),
    }
}

fn hex_secret(c: &mut Collector, at: &str, value: &str) -> Option<Vec<u8>> {
    let v = secret(c, at, value)?;
    match hex::decode(v.trim()) {
        Ok(b) if !b.is_empty() => Some(b),
        Ok(_) => {
            c.push(at, "must not be empty");
            None
        }
        Err(_) => {
            c.push(at, "must be hex-encoded");
            None
        }
    }
}

fn tenant(c: &mut Collector, at: &str, t: &RawTenant, defaults: &Limits, base: &Path) -> Option<Tenant> {
    let before = c.problems.len();
    if !valid_name(&t.id) {
        c.push(format!("{at}.id"), "must be 1-64 characters of [A-Za-z0-9_-]");
    }
    if t.hosts.is_empty() {
        c.push(format!("{at}.hosts"), "at least one host is required");
    }
    for (j, h) in t.hosts.iter().enumerate() {
        if h.is_empty() || h.contains(['/', ' ', ':']) {
            c.push(format!("{at}.hosts[{j}]"), format!("{h:?} is not a host name (no scheme or port)"));
        }
    }

    let mut keys = Vec::new();
    for (j, k) in t.keys.iter().enumerate() {
        let key = hex_secret(c, &format!("{at}.keys[{j}].key"), &k.key);
        let salt = hex_secret(c, &format!("{at}.keys[{j}].salt"), &k.salt);
        if let (Some(key), Some(salt)) = (key, salt) {
            keys.push(KeyPair { key, salt });
        }
    }
    if t.keys.is_empty() && !t.allow_unsigned {
        c.push(format!("{at}.keys"), "at least one key/salt pair is required (or allow_unsigned: true)");
    }
    let signature_size = t.signature_size.unwrap_or(32);
    if !(1..=32).contains(&signature_size) {
        c.push(format!("{at}.signature_size"), "must be in 1..=32 bytes");
    }

    let mut origins = BTreeMap::new();
    let mut origin_refs = Vec::new();
    if t.origins.is_empty() {
        c.push(format!("{at}.origins"), "at least one origin is required");
    }
    for (name, o) in &t.origins {
        let oat = format!("{at}.origins.{name}");
        if !valid_name(name) {
            c.push(&oat, "origin names are 1-64 characters of [A-Za-z0-9_-]");
        }
        if let Some((origin, prefix)) = origin(c, &oat, o, base) {
            origin_refs.push(OriginRef { name: name.clone(), url_prefix: prefix });
            origins.insert(name.clone(), origin);
        }
    }
    let default_origin = match &t.default_origin {
        Some(d) if !t.origins.contains_key(d) => {
            c.push(format!("{at}.default_origin"), format!("no origin named {d:?}"));
            None
        }
        Some(d) => Some(d.clone()),
        // one origin needs no name in URLs
        None if t.origins.len() == 1 => t.origins.keys().next().cloned(),
        None => None,
    };

    let limits = limits(c, &format!("{at}.limits"), &t.limits, Some(defaults));
    if t.limits.unverified_rate_per_address.is_some() {
        // an unverified request is not known to be the tenant's: one limit for all
        c.push(format!("{at}.limits.unverified_rate_per_address"), "is only a top-level limit");
    }
    let quality = t.quality.unwrap_or(80);
    if !(1..=100).contains(&quality) {
        c.push(format!("{at}.quality"), "must be in 1..=100");
    }

    let (negotiate, max_frames) = transform(c, &format!("{at}.transform"), &t.transform);

    let presets: HashMap<String, String> = t.presets.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // presets are parsed once here so a typo fails the deploy, not the request
    let check_refs = [OriginRef { name: "check".into(), url_prefix: None }];
    let ctx =
        ParseContext { presets: &presets, origins: &check_refs, default_origin: Some("check"), watermark_force: None };
    for name in t.presets.keys() {
        if !valid_name(name) {
            c.push(format!("{at}.presets.{name}"), "preset names are 1-64 characters of [A-Za-z0-9_-]");
            continue;
        }
        if let Err(e) = options::parse(&format!("/pr:{name}/plain/check.jpg"), &ctx) {
            c.push(format!("{at}.presets.{name}"), e.to_string());
        }
    }

    let watermark = t.watermark.as_ref().and_then(|w| {
        let ctx = ParseContext {
            presets: &presets,
            origins: &origin_refs,
            default_origin: default_origin.as_deref(),
            watermark_force: None,
        };
        super::watermark::validate(c, &format!("{at}.watermark"), w, &ctx)
    });

    let cache_ttl = t.cache.ttl.map_or(DEFAULT_TTL, |d| d.0);
    let info_ttl = t.cache.info_ttl.map_or(DEFAULT_INFO_TTL, |d| d.0);
    let not_found_ttl = t.cache.not_found_ttl.map_or(DEFAULT_NOT_FOUND_TTL, |d| d.0);
    let stale_if_error = t.cache.stale_if_error.map_or(DEFAULT_STALE_IF_ERROR, |d| d.0);
    let billing = billing(c, &format!("{at}.billing"), &t.billing);
    let log = tenant_log(c, &format!("{at}.log"), &t.log);
    let usage_token_sha256 = t.usage_token_sha256.as_deref().and_then(|h| {
        let bytes = hex::decode(h.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        if bytes.is_none() {
            c.push(format!("{at}.usage_token_sha256"), "must be 64 hex digits (imgedge hash-token)");
        }
        bytes
    });

    let fallback = t.fallback.as_ref().and_then(|raw| {
        let ctx = ParseContext {
            presets: &presets,
            origins: &origin_refs,
            default_origin: default_origin.as_deref(),
            watermark_force: None,
        };
        super::fallback::validate(&format!("{at}.fallback"), raw, &ctx)
            .map_err(|problems| problems.into_iter().for_each(|(path, message)| c.push(path, message)))
            .ok()
    });

    if c.problems.len() > before {
        return None;
    }
    Some(Tenant {
        id: t.id.clone(),
        hosts: t.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        keys,
        signature_size,
        allow_unsigned: t.allow_unsigned,
        origins,
        default_origin,
        presets,
        limits,
        quality,
        negotiate,
        max_frames,
        cache_enabled: t.cache.enabled.unwrap_or(true),
        cache_ttl,
        info_ttl,
        not_found_ttl,
        stale_if_error,
        immutable: t.cache.immutable.unwrap_or(true),
        info_withhold_metadata: t.info.withhold_metadata,
        billing,
        log,
        usage_token_sha256,
        watermark,
        fallback,
        origin_refs,
    })
}

/// `negotiate` (only avif and webp, no repeats: the cache holds at most three variants
/// of a URL) and `max_frames`.
fn transform(c: &mut Collector, at: &str, raw: &RawTransform) -> (Vec<Format>, u32) {
    let mut negotiate = Vec::new();
    for (i, name) in raw.negotiate.iter().enumerate() {
        match Format::from_ext(name) {
            Some(f @ (Format::Avif | Format::Webp)) if !negotiate.contains(&f) => negotiate.push(f),
            Some(Format::Avif | Format::Webp) => {
                c.push(format!("{at}.negotiate[{i}]"), format!("{name:?} is repeated"))
            }
            _ => c.push(format!("{at}.negotiate[{i}]"), format!("{name:?} cannot be negotiated (avif or webp)")),
        }
    }
    let max_frames = raw.max_frames.unwrap_or(1);
    if !(1..=MAX_FRAMES).contains(&max_frames) {
        c.push(format!("{at}.max_frames"), format!("must be in 1..={MAX_FRAMES}"));
    }
    (negotiate, max_frames)
}

fn usage(c: &mut Collector, raw: &RawUsage, base: &Path) -> Usage {
    let u = Usage {
        spool: base.join(raw.spool.as_deref().unwrap_or("imgedge-usage.db")),
        postgres: raw.postgres.as_deref().and_then(|v| secret(c, "usage.postgres", v)),
        flush_interval: raw.flush_interval.map_or(Duration::from_secs(10), |d| d.0),
        spool_max_batches: raw.spool_max_batches.unwrap_or(100_000),
    };
    if raw.spool.as_deref().is_some_and(str::is_empty) {
        c.push("usage.spool", "must not be empty");
    }
    if let Some(url) = &u.postgres {
        // a URL, or libpq's key=value form; never echo it: it may hold a password
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://") || url.contains('=')) {
            c.push("usage.postgres", "must be a postgres:// URL or a key=value connection string");
        }
    }
    if u.flush_interval.is_zero() || u.flush_interval > Duration::from_secs(3600) {
        c.push("usage.flush_interval", "must be greater than 0 and at most 1h");
    }
    if u.spool_max_batches == 0 {
        c.push("usage.spool_max_batches", "must be greater than 0");
    }
    u
}

fn request_log(c: &mut Collector, raw: &RawLog, base: &Path) -> Option<RequestLog> {
    let r = raw.requests.as_ref()?;
    if r.path.is_empty() {
        c.push("log.requests.path", "must be `stdout` or a file");
    }
    if r.node.as_deref().is_some_and(|n| n.is_empty() || n.len() > 255) {
        c.push("log.requests.node", "must be 1-255 characters");
    }
    let queue = r.queue.unwrap_or(65_536);
    if queue == 0 {
        c.push("log.requests.queue", "must be greater than 0");
    }
    Some(RequestLog {
        path: (r.path != "stdout").then(|| base.join(&r.path)),
        max_size: r.max_size.map_or(0, |b| b.0),
        node: r.node.clone(),
        queue,
    })
}

fn tenant_log(c: &mut Collector, at: &str, raw: &RawTenantLog) -> TenantLog {
    let d = TenantLog::default();
    let sample = raw.hit_sample.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample) {
        c.push(format!("{at}.hit_sample"), "must be in 0..=1");
    }
    let v4 = raw.ipv4_prefix.unwrap_or(d.ipv4_prefix);
    if v4 > 32 {
        c.push(format!("{at}.ipv4_prefix"), "must be in 0..=32");
    }
    let v6 = raw.ipv6_prefix.unwrap_or(d.ipv6_prefix);
    if v6 > 128 {
        c.push(format!("{at}.ipv6_prefix"), "must be in 0..=128");
    }
    TenantLog { hit_sample_ppm: (sample.clamp(0.0, 1.0) * 1e6).round() as u32, ipv4_prefix: v4, ipv6_prefix: v6 }
}

/// Credits are kept in thousandths; more decimals would not add up exactly.
fn billing(c: &mut Collector, at: &str, raw: &RawBilling) -> Billing {
    let d = Credits::default();
    let mut milli = |name: &str, v: Option<f64>, default: u64| match v {
        None => default,
        Some(v) if v.is_finite() && (0.0..=1e9).contains(&v) && ((v * 1000.0).round() - v * 1000.0).abs() < 1e-6 => {
            (v * 1000.0).round() as u64
        }
        Some(_) => {
            c.push(format!("{at}.credits.{name}"), "must be a number in 0..=1e9 with at most 3 decimals");
            default
        }
    };
    let r = &raw.credits;
    Billing {
        credits: Credits {
            transform: milli("transform", r.transform, d.transform),
            info: milli("info", r.info, d.info),
            hit: milli("hit", r.hit, d.hit),
            error: milli("error", r.error, d.error),
            grid_source: milli("grid_source", r.grid_source, d.grid_source),
        },
        per_tenant_metrics: raw.per_tenant_metrics,
    }
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && s.len() > "https://".len()
}

fn origin(c: &mut Collector, at: &str, o: &RawOrigin, base: &Path) -> Option<(Origin, Option<String>)> {
    match o {
        RawOrigin::Local { root } => {
            let root = base.join(root);
            if !root.is_dir() {
                c.push(format!("{at}.root"), format!("{} is not a directory", root.display()));
                return None;
            }
            Some((Origin::Local { root }, None))
        }
        RawOrigin::Http { base_url, allow_private } => {
            if !is_http_url(base_url) {
                c.push(format!("{at}.base_url"), "must be an http:// or https:// URL");
                return None;
            }
            // IP literals never reach the DNS guard, so they are checked here once
            if let Some(ip) = crate::ssrf::literal_host(base_url) {
                if !allow_private && !crate::ssrf::is_public(ip) {
                    c.push(
                        format!("{at}.base_url"),
                        format!("{ip} is a private, loopback or link-local address (set allow_private: true)"),
                    );
                    return None;
                }
            }
            // the trailing slash keeps `https://a.com@evil.com` from matching the prefix
            let mut url = base_url.clone();
            if !url.ends_with('/') {
                url.push('/');
            }
            Some((Origin::Http { base_url: url.clone(), allow_private: *allow_private }, Some(url)))
        }
        RawOrigin::S3 { bucket, region, endpoint, virtual_hosted, access_key_id, secret_access_key, session_token } => {
            let s3 = S3Fields {
                bucket,
                region,
                endpoint,
                virtual_hosted: *virtual_hosted,
                access_key_id,
                secret_access_key,
                session_token,
            };
            Some((s3_origin(c, at, &s3)?, Some(format!("s3://{bucket}/"))))
        }
    }
}

/// The fields an S3 bucket is described by, in an origin and in `cache.shared`.
struct S3Fields<'a> {
    bucket: &'a str,
    region: &'a Option<String>,
    endpoint: &'a Option<String>,
    virtual_hosted: bool,
    access_key_id: &'a Option<String>,
    secret_access_key: &'a Option<String>,
    session_token: &'a Option<String>,
}

fn s3_origin(c: &mut Collector, at: &str, s: &S3Fields<'_>) -> Option<Origin> {
    let before = c.problems.len();
    if s.bucket.is_empty() {
        c.push(format!("{at}.bucket"), "must not be empty");
    }
    if let Some(e) = s.endpoint {
        if !is_http_url(e) {
            c.push(format!("{at}.endpoint"), "must be an http:// or https:// URL");
        }
    }
    let mut get = |name: &str, v: &Option<String>| v.as_deref().and_then(|v| secret(c, &format!("{at}.{name}"), v));
    let access_key_id = get("access_key_id", s.access_key_id);
    let secret_access_key = get("secret_access_key", s.secret_access_key);
    let session_token = get("session_token", s.session_token);
    if access_key_id.is_some() != secret_access_key.is_some() {
        c.push(at, "access_key_id and secret_access_key go together");
    }
    if c.problems.len() > before {
        return None;
    }
    Some(Origin::S3 {
        bucket: s.bucket.to_owned(),
        region: s.region.clone().unwrap_or_else(|| "us-east-1".to_owned()),
        endpoint: s.endpoint.clone(),
        virtual_hosted: s.virtual_hosted,
        access_key_id,
        secret_access_key,
        session_token,
    })
}

fn shared(c: &mut Collector, s: &RawShared) -> Option<SharedStore> {
    let at = "cache.shared";
    if s.kind != "s3" {
        c.push(format!("{at}.type"), format!("{:?} is not a shared store type (s3)", s.kind));
        return None;
    }
    let prefix = s.prefix.as_deref().unwrap_or("").trim_matches('/').to_owned();
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        c.push(format!("{at}.prefix"), "must be a plain key prefix (no empty, . or .. segments)");
    }
    let read_timeout = s.read_timeout.map_or(Duration::from_millis(300), |d| d.0);
    let write_timeout = s.write_timeout.map_or(Duration::from_secs(10), |d| d.0);
    if read_timeout.is_zero() || write_timeout.is_zero() {
        c.push(at, "read_timeout and write_timeout must be greater than 0");
    }
    let max_writes = s.max_writes.unwrap_or(64);
    if max_writes == 0 {
        c.push(format!("{at}.max_writes"), "must be greater than 0");
    }
    let fields = S3Fields {
        bucket: &s.bucket,
        region: &s.region,
        endpoint: &s.endpoint,
        virtual_hosted: s.virtual_hosted,
        access_key_id: &s.access_key_id,
        secret_access_key: &s.secret_access_key,
        session_token: &s.session_token,
    };
    let store = s3_origin(c, at, &fields)?;
    Some(SharedStore { store, prefix, read_timeout, write_timeout, max_writes })
}

fn fleet(c: &mut Collector, f: &RawFleet, usage: &Usage, listen: &Listen) -> Option<Fleet> {
    let before = c.problems.len();
    // `env:NAME` lets every node of a fleet share one file
    let node = secret(c, "fleet.node", &f.node).unwrap_or_default();
    if !valid_name(&node) {
        c.push("fleet.node", "must be 1-64 letters, digits, - or _");
    }
    let mut peers = BTreeMap::new();
    for (name, addr) in &f.peers {
        if !valid_name(name) {
            c.push(format!("fleet.peers.{name}"), "a node name is 1-64 letters, digits, - or _");
        }
        match addr.parse::<std::net::SocketAddr>() {
            Ok(a) => {
                peers.insert(name.clone(), a);
            }
            Err(_) => c.push(format!("fleet.peers.{name}"), format!("{addr:?} is not an IP:port address")),
        }
    }
    if !f.peers.contains_key(&node) {
        c.push("fleet.peers", format!("must name this node ({node:?}) too"));
    }
    let hop_secret = secret(c, "fleet.secret", &f.secret);
    if hop_secret.as_ref().is_some_and(|s| s.len() < 32) {
        c.push("fleet.secret", "must be at least 32 characters");
    }
    let postgres = match &f.postgres {
        Some(v) => secret(c, "fleet.postgres", v),
        None => usage.postgres.clone(),
    };
    if postgres.is_none() && f.postgres.is_none() {
        c.push("fleet", "purges reach every node through PostgreSQL: set fleet.postgres or usage.postgres");
    }
    let listen_addr = match &f.listen {
        Some(a) => a.parse::<std::net::SocketAddr>().ok().or_else(|| {
            c.push("fleet.listen", format!("{a:?} is not an IP:port address"));
            None
        }),
        None => peers.get(&node).copied(),
    };
    if let Some(a) = listen_addr {
        let a = a.to_string();
        if listen.edge.contains(&a) || listen.ops.as_ref() == Some(&a) {
            c.push("fleet.listen", format!("{a} is already the edge or ops listener"));
        }
    }
    let connect_timeout = f.connect_timeout.map_or(Duration::from_millis(250), |d| d.0);
    let peer_timeout = f.peer_timeout.map_or(Duration::from_secs(2), |d| d.0);
    let health_interval = f.health_interval.map_or(Duration::from_secs(1), |d| d.0);
    for (key, d) in
        [("connect_timeout", connect_timeout), ("peer_timeout", peer_timeout), ("health_interval", health_interval)]
    {
        if d.is_zero() {
            c.push(format!("fleet.{key}"), "must be greater than 0");
        }
    }
    if c.problems.len() > before {
        return None;
    }
    Some(Fleet {
        node,
        peers,
        listen: listen_addr?,
        secret: hop_secret?,
        postgres: postgres?,
        connect_timeout,
        peer_timeout,
        health_interval,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::load_str;
    use std::path::Path;

    const GOOD: &str = r#"
listen: {edge: ["127.0.0.1:8080"], ops: "127.0.0.1:9180", render_socket: render.sock}
tenants:
  - id: acme
    hosts: [img.acme.test]
    keys: [{key: "736563726574", salt: "68656c6c6f"}]
    origins:
      web: {type: http, base_url: "https://static.acme.test"}
    presets: {thumb: "rs:fill:100:100"}
"#;

    #[test]
    fn good_config_loads() {
        let c = load_str(GOOD, Path::new("/tmp/x.yaml")).unwrap();
        let t = &c.tenants[0];
        assert_eq!(t.default_origin.as_deref(), Some("web"));
        assert_eq!(t.signature_size, 32);
        assert_eq!(c.listen.render_socket, Path::new("/tmp/render.sock"));
        let l = &c.listen;
        assert_eq!((l.header_timeout.as_secs(), l.idle_timeout.as_secs(), l.send_timeout.as_secs()), (10, 60, 30));
        assert_eq!(l.min_send_rate, 0);
        let tuned = GOOD.replace(
            "render_socket: render.sock}",
            "render_socket: render.sock, header_timeout: 2s, idle_timeout: 5s, send_timeout: 3s, min_send_rate: 64KiB}",
        );
        let l = load_str(&tuned, Path::new("/tmp/x.yaml")).unwrap().listen;
        assert_eq!((l.header_timeout.as_secs(), l.idle_timeout.as_secs(), l.send_timeout.as_secs()), (2, 5, 3));
        assert_eq!(l.min_send_rate, 64 * 1024);
        let zero = GOOD.replace("render_socket: render.sock}", "render_socket: render.sock, header_timeout: 0s}");
        let problems = load_str(&zero, Path::new("/tmp/x.yaml")).unwrap_err();
        assert!(format!("{problems:?}").contains("listen.header_timeout"), "{problems:?}");
    }

    #[test]
    fn overload_limits_default_and_inherit() {
        let c = load_str(GOOD, Path::new("/tmp/x.yaml")).unwrap();
        assert_eq!(c.render.queue, c.render.workers * 8);
        let l = &c.tenants[0].limits;
        assert_eq!((l.rate_per_second, l.max_concurrent_renders), (0, 0));
        assert_eq!(l.render_timeout, std::time::Duration::from_secs(10));
        let text = GOOD
            .replace(
                "tenants:",
                "render: {workers: 2, queue: 3}\nlimits: {rate_per_second: 50, render_timeout: 2s}\ntenants:",
            )
            .replace("presets:", "limits: {max_concurrent_renders: 4}\n    presets:");
        let c = load_str(&text, Path::new("/tmp/x.yaml")).unwrap();
        assert_eq!((c.render.workers, c.render.queue), (2, 3));
        let l = &c.tenants[0].limits;
        assert_eq!((l.rate_per_second, l.max_concurrent_renders), (50, 4));
        assert_eq!(l.render_timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn the_unverified_limit_is_top_level_only() {
        let c = load_str(GOOD, Path::new("/tmp/x.yaml")).unwrap();
        assert_eq!(c.unverified_rate_per_address, super::super::DEFAULT_UNVERIFIED_RATE_PER_ADDRESS);
        let top = GOOD.replace("tenants:", "limits: {unverified_rate_per_address: 0}\ntenants:");
        assert_eq!(load_str(&top, Path::new("/tmp/x.yaml")).unwrap().unverified_rate_per_address, 0);
        let per_tenant = GOOD.replace("presets:", "limits: {unverified_rate_per_address: 5}\n    presets:");
        let problems = load_str(&per_tenant, Path::new("/tmp/x.yaml")).unwrap_err();
        assert!(
            problems.problems.iter().any(|p| p.path == "tenants[0].limits.unverified_rate_per_address"),
            "{problems:?}"
        );
    }

    #[test]
    fn transform_and_cache_switch() {
        let c = load_str(GOOD, Path::new("/tmp/x.yaml")).unwrap();
        let t = &c.tenants[0];
        assert!(t.negotiate.is_empty());
        assert_eq!((t.max_frames, t.transform_settings().max_frames, t.cache_enabled), (1, 1, true));
        let text = GOOD.replace(
            "presets:",
            "transform: {negotiate: [avif, WebP], max_frames: 50}\n    cache: {enabled: false}\n    presets:",
        );
        let c = load_str(&text, Path::new("/tmp/x.yaml")).unwrap();
        let t = &c.tenants[0];
        assert_eq!(t.negotiate, [crate::options::Format::Avif, crate::options::Format::Webp]);
        assert_eq!((t.max_frames, t.transform_settings().max_frames, t.cache_enabled), (50, 50, false));

        let bad = GOOD.replace("presets:", "transform: {negotiate: [webp, png, webp], max_frames: 0}\n    presets:");
        let e = load_str(&bad, Path::new("x.yaml")).unwrap_err();
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tenants[0].transform.negotiate[1]",
                "tenants[0].transform.negotiate[2]",
                "tenants[0].transform.max_frames"
            ]
        );
        assert!(e.problems.iter().all(|p| p.tenant.as_deref() == Some("acme")));
        let too_many = GOOD.replace("presets:", "transform: {max_frames: 1001}\n    presets:");
        assert!(load_str(&too_many, Path::new("x.yaml")).is_err());
    }

    #[test]
    fn private_http_origins_need_allow_private() {
        let private = GOOD.replace("https://static.acme.test", "http://10.0.0.8:9000/img");
        let e = load_str(&private, Path::new("x.yaml")).unwrap_err();
        assert_eq!(e.problems[0].path, "tenants[0].origins.web.base_url");
        let allowed = private.replace("/img\"}", "/img\", allow_private: true}");
        assert!(load_str(&allowed, Path::new("/tmp/x.yaml")).is_ok());
    }

    #[test]
    fn unknown_key_names_path_and_tenant() {
        let bad = GOOD.replace("presets:", "presetz:");
        let e = load_str(&bad, Path::new("x.yaml")).unwrap_err();
        let p = &e.problems[0];
        assert_eq!(p.path, "tenants[0].presetz");
        assert_eq!(p.tenant.as_deref(), Some("acme"));
        assert!(p.message.contains("unknown field `presetz`"), "{}", p.message);
        assert!(e.to_string().contains("x.yaml"));
    }

    #[test]
    fn all_problems_in_one_pass() {
        let bad = r#"
listen: {edge: ["nope"], render_socket: r.sock}
tenants:
  - id: a
    hosts: [a.test]
    keys: [{key: "zz", salt: "env:IMGEDGE_TEST_UNSET_VAR"}]
    origins: {w: {type: http, base_url: "ftp://x"}}
    default_origin: other
    quality: 0
    presets: {p: "bogus:1"}
  - id: b
    hosts: [A.test]
    origins: {w: {type: local, root: /definitely/not/here}}
"#;
        let e = load_str(bad, Path::new("bad.yaml")).unwrap_err();
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "listen.edge[0]",
            "tenants[0].keys[0].key",
            "tenants[0].keys[0].salt",
            "tenants[0].origins.w.base_url",
            "tenants[0].default_origin",
            "tenants[0].quality",
            "tenants[0].presets.p",
            "tenants[1].hosts[0]",
            "tenants[1].keys",
            "tenants[1].origins.w.root",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
        let b = e.problems.iter().find(|p| p.path == "tenants[1].keys").unwrap();
        assert_eq!(b.tenant.as_deref(), Some("b"));
    }

    const FLEET_TENANT: &str = r#"
tenants:
  - id: a
    hosts: [a.test]
    allow_unsigned: true
    origins: {w: {type: http, base_url: "https://static.a.test"}}
"#;

    #[test]
    fn a_fleet_and_its_shared_store_load() {
        let text = format!(
            r#"
listen: {{edge: ["127.0.0.1:8080"], render_socket: r.sock}}
usage: {{postgres: "postgres://u@127.0.0.1/db"}}
cache:
  shared: {{type: s3, bucket: derived, prefix: /imgedge/v1/, endpoint: "http://127.0.0.1:9000",
           access_key_id: k, secret_access_key: s, read_timeout: 200ms}}
fleet:
  node: b
  secret: "0123456789abcdef0123456789abcdef"
  peers: {{a: "127.0.0.1:9101", b: "127.0.0.1:9102", c: "127.0.0.1:9103"}}
{FLEET_TENANT}"#
        );
        let config = load_str(&text, Path::new("f.yaml")).unwrap();
        let fleet = config.fleet.unwrap();
        assert_eq!(fleet.listen.to_string(), "127.0.0.1:9102", "defaults to its own peers entry");
        assert_eq!(fleet.postgres, "postgres://u@127.0.0.1/db", "defaults to the usage ledger");
        assert_eq!(fleet.peers.len(), 3);
        let shared = config.cache.shared.unwrap();
        assert_eq!(shared.prefix, "imgedge/v1");
        assert_eq!(shared.read_timeout, std::time::Duration::from_millis(200));
        assert!(matches!(shared.store, super::Origin::S3 { ref bucket, .. } if bucket == "derived"));
    }

    #[test]
    fn fleet_problems_are_named() {
        let text = format!(
            r#"
listen: {{edge: ["127.0.0.1:8080"], render_socket: r.sock}}
cache:
  shared: {{type: gcs, bucket: derived}}
fleet:
  node: z
  secret: short
  listen: "127.0.0.1:8080"
  peers: {{a: "127.0.0.1:9101", "b c": "nowhere"}}
{FLEET_TENANT}"#
        );
        let e = load_str(&text, Path::new("f.yaml")).unwrap_err();
        let paths: Vec<_> = e.problems.iter().map(|p| p.path.as_str()).collect();
        for want in ["cache.shared.type", "fleet.peers", "fleet.peers.b c", "fleet.secret", "fleet", "fleet.listen"] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }
}
