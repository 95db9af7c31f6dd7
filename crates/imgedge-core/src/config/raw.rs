//! The user-facing YAML schema. Strict: unknown keys are errors. These structs are only
//! read by `validate`, which turns them into the runtime types in `mod.rs`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{ByteSize, Duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Pingora's own `ServerConf` (threads, pid_file, upgrade_sock, grace periods...),
    /// handed to pingora as is.
    #[serde(default)]
    pub pingora: Option<serde_yaml::Value>,
    pub listen: RawListen,
    #[serde(default)]
    pub render: RawRender,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub usage: RawUsage,
    #[serde(default)]
    pub log: RawLog,
    /// Several nodes acting as one origin: owner routing and fleet-wide purges.
    pub fleet: Option<RawFleet>,
    /// Defaults for every tenant's limits.
    #[serde(default)]
    pub limits: RawLimits,
    pub tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub edge: Vec<String>,
    pub ops: Option<String>,
    pub render_socket: String,
    pub header_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub min_send_rate: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRender {
    pub threads: Option<usize>,
    pub workers: Option<usize>,
    pub queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub memory: Option<ByteSize>,
    pub disk: Option<RawDisk>,
    pub max_object: Option<ByteSize>,
    pub lock_timeout: Option<Duration>,
    /// The fleet's shared derivative store: rendered answers every node reads.
    pub shared: Option<RawShared>,
}

/// `cache.shared`: an S3-compatible bucket holding rendered answers for the whole fleet.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    /// Only `s3` (S3, R2, MinIO, GCS's S3 interface...).
    #[serde(rename = "type")]
    pub kind: String,
    pub bucket: String,
    /// Key prefix of every object (no leading or trailing slash needed).
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    #[serde(default)]
    pub virtual_hosted: bool,
    /// Plain value or `env:NAME`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// A read slower than this is a miss (render instead); default 300ms.
    pub read_timeout: Option<Duration>,
    /// A write slower than this is dropped; default 10s.
    pub write_timeout: Option<Duration>,
    /// Writes in flight at most; past it new writes are dropped (counted); default 64.
    pub max_writes: Option<usize>,
}

/// `fleet`: this node's name and its peers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// This node's name: one of `peers`. Plain or `env:NAME` (one file for every node).
    pub node: String,
    /// Every node of the fleet, this one included: name → address of its fleet listener.
    pub peers: BTreeMap<String, String>,
    /// Shared by every node: authenticates the internal hop. Plain or `env:NAME`.
    pub secret: String,
    /// Address this node's fleet listener binds; default its own `peers` address.
    pub listen: Option<String>,
    /// PostgreSQL of the fleet's purges; default `usage.postgres`. Plain or `env:NAME`.
    pub postgres: Option<String>,
    /// Connecting to a peer slower than this skips it; default 250ms.
    pub connect_timeout: Option<Duration>,
    /// A peer's answer slower than this (beyond the render timeout) skips it; default 2s.
    pub peer_timeout: Option<Duration>,
    /// Health check period; default 1s.
    pub health_interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    pub path: String,
    pub size: ByteSize,
    pub block_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token for the ops listener's admin endpoints; plain or `env:NAME`.
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    /// SQLite spool (and embedded ledger) file; default `imgedge-usage.db` beside the config.
    pub spool: Option<String>,
    /// PostgreSQL URL of the fleet ledger, plain or `env:NAME`.
    pub postgres: Option<String>,
    pub flush_interval: Option<Duration>,
    pub spool_max_batches: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// One JSON line per edge request; off when absent.
    pub requests: Option<RawRequestLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestLog {
    /// `stdout` or a file (reopened on SIGUSR1).
    pub path: String,
    /// Rotate the file to `{path}.1` past this size; 0 or absent = never.
    pub max_size: Option<ByteSize>,
    /// `node` field of every line; default the host name.
    pub node: Option<String>,
    /// Lines that may wait for the writer before new ones are dropped.
    pub queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantLog {
    /// Share of cache hits written to the request log, 0–1 (misses and errors always are).
    pub hit_sample: Option<f64>,
    /// Client addresses are logged truncated to these prefix lengths.
    pub ipv4_prefix: Option<u8>,
    pub ipv6_prefix: Option<u8>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_src_bytes: Option<ByteSize>,
    pub max_src_megapixels: Option<f64>,
    /// The sum over a `/grid` request's sources, in megapixels.
    pub max_grid_megapixels: Option<f64>,
    pub max_result_dimension: Option<u32>,
    pub origin_connect_timeout: Option<Duration>,
    pub origin_timeout: Option<Duration>,
    pub render_timeout: Option<Duration>,
    /// Requests per second per tenant; 0 = unlimited.
    pub rate_per_second: Option<u32>,
    /// Renders (misses) in flight per tenant; 0 = unlimited.
    pub max_concurrent_renders: Option<u32>,
    /// Top-level only: requests per second per client address that fail before their
    /// signature verified (unknown host, missing or bad signature); 0 = unlimited.
    pub unverified_rate_per_address: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    pub hosts: Vec<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    pub signature_size: Option<usize>,
    #[serde(default)]
    pub allow_unsigned: bool,
    pub origins: BTreeMap<String, RawOrigin>,
    pub default_origin: Option<String>,
    #[serde(default)]
    pub limits: RawLimits,
    pub quality: Option<u8>,
    #[serde(default)]
    pub transform: RawTransform,
    #[serde(default)]
    pub cache: RawTenantCache,
    #[serde(default)]
    pub info: RawTenantInfo,
    #[serde(default)]
    pub presets: BTreeMap<String, String>,
    #[serde(default)]
    pub billing: RawBilling,
    #[serde(default)]
    pub log: RawTenantLog,
    /// SHA-256 (hex) of the tenant's own token for `GET /usage` on the ops listener.
    pub usage_token_sha256: Option<String>,
    pub watermark: Option<super::watermark::RawWatermark>,
    /// An image served instead of some errors (see `config::fallback`).
    pub fallback: Option<RawFallback>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBilling {
    #[serde(default)]
    pub credits: RawCredits,
    #[serde(default)]
    pub per_tenant_metrics: bool,
}

/// Credits per request kind; at most three decimals.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredits {
    pub transform: Option<f64>,
    pub info: Option<f64>,
    pub hit: Option<f64>,
    pub error: Option<f64>,
    /// A `/grid` request, per source.
    pub grid_source: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Hex, or `env:NAME`.
    pub key: String,
    /// Hex, or `env:NAME`.
    pub salt: String,
}

/// `tenants[].transform`: output choices that are not in the URL.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransform {
    /// Formats picked from the request's `Accept` header when the URL names none, in
    /// order of preference (`avif`, `webp`).
    #[serde(default)]
    pub negotiate: Vec<String>,
    /// Frames of an animated source kept in the output; 1 = first frame only.
    pub max_frames: Option<u32>,
}

/// `tenants[].info`: what `/info` may answer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantInfo {
    /// Refuse `exif`, `iptc` and `xmp` (403): GPS positions and camera serials are
    /// personal data.
    #[serde(default)]
    pub withhold_metadata: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantCache {
    /// `false`: this tenant's requests bypass the cache and always render.
    pub enabled: Option<bool>,
    pub ttl: Option<Duration>,
    pub info_ttl: Option<Duration>,
    pub not_found_ttl: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    pub immutable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawOrigin {
    Local {
        root: String,
    },
    Http {
        base_url: String,
        /// Allow private, loopback, link-local and CGNAT addresses (off: SSRF guard).
        #[serde(default)]
        allow_private: bool,
    },
    S3 {
        bucket: String,
        region: Option<String>,
        endpoint: Option<String>,
        #[serde(default)]
        virtual_hosted: bool,
        /// Plain value or `env:NAME`.
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
    },
}

/// `tenants[].fallback`: the image answered instead of a missing, failing or unreadable
/// source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    /// A source on the tenant's own origins, written as after `plain/`.
    pub source: String,
    /// Which failures it replaces: `not_found`, `origin_error`, `bad_image` (default all).
    pub on: Option<Vec<String>>,
    /// Status of the answer: a number, or `original` (the error's); default 200.
    pub status: Option<RawFallbackStatus>,
    /// Freshness of the answer; default 60s.
    pub ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawFallbackStatus {
    Code(u16),
    Word(String),
}
