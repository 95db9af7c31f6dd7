//! `/info` requests: which facts about a source are asked for. Parsed by
//! [`super::parse_info`]; [`InfoRequest::canonical`] is the cache key, ETag and billing
//! input, as [`super::ImageRequest::canonical`] is for a transform, and always starts with
//! [`INFO_PREFIX`] so the two never share a key.

use std::fmt::Write;

use super::{ImageRequest, Options, Source};

/// Prefix of every canonical info request (and of the public path before the signature).
pub const INFO_PREFIX: &str = "/info";

/// The facts an info request asks for. `size`, `format` and `dimensions` are on by
/// default (imgproxy Pro's defaults); the rest are opt-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoOptions {
    /// `s`/`size`: bytes of the original.
    pub size: bool,
    /// `f`/`format`: the format read from the magic bytes.
    pub format: bool,
    /// `d`/`dimensions`: width and height after EXIF orientation, and as stored.
    pub dimensions: bool,
    /// `a`/`alpha`: whether the image has an alpha channel (from the header).
    pub alpha: bool,
    /// `pn`/`pages_number`/`frames`: frames of an animated source.
    pub frames: bool,
    /// `chs:sha256`: SHA-256 of the original bytes as fetched.
    pub sha256: bool,
    /// Opaque string that only changes the cache key.
    pub cachebuster: Option<String>,
}

impl Default for InfoOptions {
    fn default() -> Self {
        InfoOptions {
            size: true,
            format: true,
            dimensions: true,
            alpha: false,
            frames: false,
            sha256: false,
            cachebuster: None,
        }
    }
}

impl InfoOptions {
    /// Whether the answer needs anything beyond the header and the bytes themselves.
    /// Every option so far is header-only: no pixel is decoded.
    pub fn header_only(&self) -> bool {
        true
    }
}

/// One parsed info request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub options: InfoOptions,
    pub source: Source,
}

impl InfoRequest {
    /// `/info` + non-default options sorted by short name + the source as a transform's
    /// canonical form writes it.
    pub fn canonical(&self) -> String {
        let o = &self.options;
        let mut s = String::from(INFO_PREFIX);
        let d = InfoOptions::default();
        // alphabetical by short name: a, cb, chs, d, f, pn, s
        if o.alpha != d.alpha {
            let _ = write!(s, "/a:{}", u8::from(o.alpha));
        }
        if let Some(cb) = &o.cachebuster {
            let _ = write!(s, "/cb:{cb}");
        }
        if o.sha256 {
            s.push_str("/chs:sha256");
        }
        if o.dimensions != d.dimensions {
            let _ = write!(s, "/d:{}", u8::from(o.dimensions));
        }
        if o.format != d.format {
            let _ = write!(s, "/f:{}", u8::from(o.format));
        }
        if o.frames != d.frames {
            let _ = write!(s, "/pn:{}", u8::from(o.frames));
        }
        if o.size != d.size {
            let _ = write!(s, "/s:{}", u8::from(o.size));
        }
        // a transform with no options writes exactly `/plain/{origin}:{key}`
        s.push_str(&ImageRequest { options: Options::default(), source: self.source.clone() }.canonical());
        s
    }
}
