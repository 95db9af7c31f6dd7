//! Configuration: `raw` is the YAML schema, `validate` turns it into the runtime types
//! below once, at start-up, reporting every problem with its file, YAML path and tenant.
//! Nothing at request time looks at raw config. No pingora, no tokio here.

mod fallback;
mod raw;
mod schema;
mod units;
mod validate;
mod watermark;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::options::{Format, OriginRef, ParseContext};
use crate::signature::KeyPair;
use crate::transform;
pub use watermark::{WatermarkConfig, DEFAULT_REVALIDATE};

pub use fallback::{Fallback, FallbackOn, FallbackStatus, DEFAULT_FALLBACK_TTL, MAX_FALLBACK_TTL};
pub use units::{parse_bytes, parse_duration};

/// Validated configuration.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    /// Pingora's `ServerConf` section, passed through to pingora.
    pub pingora: Option<serde_yaml::Value>,
    pub listen: Listen,
    pub render: Render,
    pub cache: Cache,
    /// Bearer token for the admin endpoints (purge); `None` disables them.
    pub admin_token: Option<String>,
    /// Unverified requests per second per client address (`limits.unverified_rate_per_address`);
    /// 0 = unlimited.
    pub unverified_rate_per_address: u32,
    pub usage: Usage,
    /// The request log (`log.requests`); `None` = off.
    pub request_log: Option<RequestLog>,
    /// Several nodes as one origin; `None` for a single node.
    pub fleet: Option<Fleet>,
    pub tenants: Vec<Arc<Tenant>>,
}

/// Default of `limits.unverified_rate_per_address`: far above what a browser with a few
/// stale URLs sends, far below a flood.
pub const DEFAULT_UNVERIFIED_RATE_PER_ADDRESS: u32 = 50;

/// `log.requests`: one JSON line per edge request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLog {
    /// `None` = standard output.
    pub path: Option<PathBuf>,
    /// Rotate to `{path}.1` past this many bytes; 0 = never.
    pub max_size: u64,
    /// `None` = the host name.
    pub node: Option<String>,
    /// Lines that may wait for the writer thread; past it new lines are dropped (counted).
    pub queue: usize,
}

/// Per-tenant request log settings (`tenants[].log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLog {
    /// Cache hits logged, per million (misses, errors and rejections are always logged).
    pub hit_sample_ppm: u32,
    /// Prefix lengths client addresses are truncated to.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

impl Default for TenantLog {
    fn default() -> Self {
        TenantLog { hit_sample_ppm: 1_000_000, ipv4_prefix: 32, ipv6_prefix: 128 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    pub edge: Vec<String>,
    pub ops: Option<String>,
    pub render_socket: PathBuf,
    /// Edge clients: a whole request head must arrive within this of its first byte.
    pub header_timeout: Duration,
    /// Edge clients: how long a connection may wait for the first byte of a request.
    pub idle_timeout: Duration,
    /// Edge clients: how long one write of an answer may wait for the client to read.
    pub send_timeout: Duration,
    /// Edge clients: when not 0, bytes per second an answer must be read at (a write of
    /// `n` bytes may take `n / min_send_rate` seconds, at least 1 s), instead of
    /// `send_timeout`.
    pub min_send_rate: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Render {
    /// Async I/O threads of the render service.
    pub threads: usize,
    /// CPU workers for decode/resize/encode.
    pub workers: usize,
    /// Renders that may wait for a worker; past `workers + queue` in flight, render
    /// answers 503 at once instead of piling up memory.
    pub queue: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    pub memory_bytes: usize,
    /// The disk tier; `None` = memory only.
    pub disk: Option<DiskCache>,
    pub max_object_bytes: usize,
    pub lock_timeout: Duration,
    /// The fleet's shared derivative store (`cache.shared`), if any.
    pub shared: Option<SharedStore>,
}

/// `cache.shared`: rendered answers in an S3-compatible bucket, read on a local miss
/// before rendering and written after a render.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedStore {
    /// Always an [`Origin::S3`]: the same client code as the tenants' buckets.
    pub store: Origin,
    /// Key prefix without slashes at either end; may be empty.
    pub prefix: String,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub max_writes: usize,
}

/// `fleet`: several nodes behaving as one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// This node's name.
    pub node: String,
    /// Every node (this one included) and the address of its fleet listener.
    pub peers: BTreeMap<String, std::net::SocketAddr>,
    /// Where this node's fleet listener binds.
    pub listen: std::net::SocketAddr,
    /// Authenticates hops between nodes (resolved, at least 32 bytes).
    pub secret: String,
    /// PostgreSQL connection string for fleet-wide purges (resolved).
    pub postgres: String,
    pub connect_timeout: Duration,
    pub peer_timeout: Duration,
    pub health_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskCache {
    pub path: PathBuf,
    pub size_bytes: usize,
    /// Unit of disk allocation and eviction; every object must fit in one block.
    pub block_size: usize,
}

/// Usage metering (`usage:`); the server's `usage` module.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// SQLite file: the spool, and the ledger when there is no PostgreSQL.
    pub spool: PathBuf,
    /// PostgreSQL connection string of the fleet ledger (secret already resolved).
    pub postgres: Option<String>,
    pub flush_interval: Duration,
    /// Most batches kept waiting for PostgreSQL before flushes are held in memory.
    pub spool_max_batches: u64,
}

/// Credits charged per request, in thousandths of a credit (exact sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credits {
    /// A successful request that was not a cache hit, per operation.
    pub transform: u64,
    pub info: u64,
    /// A successful cache hit.
    pub hit: u64,
    /// Any error answer (status 400 and above).
    pub error: u64,
    /// A successful `/grid` miss, per source composed.
    pub grid_source: u64,
}

impl Default for Credits {
    fn default() -> Self {
        Credits { transform: 1000, info: 1000, hit: 0, error: 0, grid_source: 1000 }
    }
}

/// Per-tenant metering settings (`tenants[].billing`).
#[derive(Debug, Clone, Default)]
pub struct Billing {
    pub credits: Credits,
    /// Export this tenant's requests and bytes as Prometheus series with a `tenant` label.
    pub per_tenant_metrics: bool,
}

/// Per-tenant limits (global defaults from the top-level `limits:` section).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_src_bytes: u64,
    pub max_src_pixels: u64,
    /// The sum of a `/grid` request's source pixels.
    pub max_grid_pixels: u64,
    pub max_result_dimension: u32,
    pub origin_connect_timeout: Duration,
    pub origin_timeout: Duration,
    /// Queue wait plus transform time of one render.
    pub render_timeout: Duration,
    /// Requests per second per tenant; 0 = unlimited.
    pub rate_per_second: u32,
    /// Renders in flight per tenant; 0 = unlimited.
    pub max_concurrent_renders: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    Local {
        root: PathBuf,
    },
    Http {
        base_url: String,
        /// Private and loopback addresses allowed (an explicit operator choice).
        allow_private: bool,
    },
    S3 {
        bucket: String,
        region: String,
        endpoint: Option<String>,
        virtual_hosted: bool,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
        session_token: Option<String>,
    },
}

pub struct Tenant {
    pub id: String,
    pub hosts: Vec<String>,
    pub keys: Vec<KeyPair>,
    pub signature_size: usize,
    pub allow_unsigned: bool,
    pub origins: BTreeMap<String, Origin>,
    pub default_origin: Option<String>,
    pub presets: HashMap<String, String>,
    pub limits: Limits,
    pub quality: u8,
    /// Formats negotiated from `Accept` when the URL names none, in order of preference
    /// (only avif and webp); empty = no negotiation.
    pub negotiate: Vec<Format>,
    /// Frames of an animated source kept in the output (1 = still image).
    pub max_frames: u32,
    /// Whether responses are cached; `false` sends every request to render.
    pub cache_enabled: bool,
    /// Freshness of transformed images.
    pub cache_ttl: Duration,
    /// Freshness of `/info` answers (facts about a source may be re-checked sooner).
    pub info_ttl: Duration,
    /// Freshness of "source not found" answers.
    pub not_found_ttl: Duration,
    /// How long an expired image may still be served when render or the origin fails.
    pub stale_if_error: Duration,
    /// Whether image responses say `immutable` (signed URLs never change meaning).
    pub immutable: bool,
    /// `info.withhold_metadata`: `/info`'s `exif`, `iptc` and `xmp` are refused (403).
    pub info_withhold_metadata: bool,
    pub billing: Billing,
    pub log: TenantLog,
    /// SHA-256 of the tenant's read token for the usage API.
    pub usage_token_sha256: Option<[u8; 32]>,
    /// `watermark`: the tenant's watermark image and whether it is forced.
    pub watermark: Option<WatermarkConfig>,
    /// The image answered instead of some errors (`fallback:`).
    pub fallback: Option<Fallback>,
    origin_refs: Vec<OriginRef>,
}

impl fmt::Debug for Tenant {
    // keys and origin credentials stay out of logs
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("hosts", &self.hosts)
            .field("keys", &self.keys.len())
            .field("origins", &self.origins.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub fn parse_context(&self) -> ParseContext<'_> {
        ParseContext {
            presets: &self.presets,
            origins: &self.origin_refs,
            default_origin: self.default_origin.as_deref(),
            watermark_force: self.watermark.as_ref().and_then(|w| w.force.as_ref()),
        }
    }

    pub fn transform_settings(&self) -> transform::Settings {
        transform::Settings {
            default_quality: self.quality,
            max_src_pixels: self.limits.max_src_pixels,
            max_result_dim: self.limits.max_result_dimension,
            max_frames: self.max_frames,
            deadline: None,
            watermark: None,
        }
    }
}

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// YAML path, e.g. `tenants[0].origins.photos.bucket`.
    pub path: String,
    pub tenant: Option<String>,
    pub message: String,
}

/// Every problem found in one pass over a file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{}: {n} problem{}", self.file.display(), if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            write!(f, "  {}: {}", self.file.display(), p.path)?;
            if let Some(t) = &p.tenant {
                write!(f, " (tenant {t:?})")?;
            }
            writeln!(f, ": {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem { path: String::new(), tenant: None, message: e.to_string() }],
    })?;
    load_str(&text, file)
}

/// Validates config text; `file` names it in errors and anchors relative paths.
pub fn load_str(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let error = |problems| ConfigError { file: file.to_path_buf(), problems };
    let (raw, mut problems, removed) = validate::parse(text);
    let Some(raw) = raw else { return Err(error(problems)) };
    // a removed list element shifts the indices the semantic checks would name
    if removed.iter().any(|p| p.ends_with(']')) {
        return Err(error(problems));
    }
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    match validate::validate(raw, &base, file) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(error(problems)),
        Err(more) => {
            // what is under a removed node was reported already
            let under = |p: &Problem| removed.iter().any(|r| p.path == *r || p.path.starts_with(&format!("{r}.")));
            problems.extend(more.into_iter().filter(|p| !under(p)));
            Err(error(problems))
        }
    }
}
