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
    /// `exif`, `iptc`, `xmp`: the source's metadata, decoded (see [`MetadataOptions`]).
    pub metadata: MetadataOptions,
    /// Opaque string that only changes the cache key.
    pub cachebuster: Option<String>,
    /// Facts computed from the pixels (a small decode).
    pub colors: ColorOptions,
}

/// The info options that need pixels: computed from the image fitted into 100×100
/// (`transform::colors::Sample`). All off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ColorOptions {
    /// `avg`/`average`: the alpha-weighted mean colour.
    pub average: bool,
    /// `dc`/`dominant_colors`: `Some(build_missed)`.
    pub dominant: Option<bool>,
    /// `p`/`palette`: that many colours (2..=256), `0` = off.
    pub palette: u16,
    /// `bh`/`blurhash`: x and y components (1..=9 each), `None` = off.
    pub blurhash: Option<(u8, u8)>,
    /// `th`/`thumbhash`/`thumb_hash`.
    pub thumbhash: bool,
}

impl ColorOptions {
    pub fn any(&self) -> bool {
        *self != ColorOptions::default()
    }

    /// Appends the non-default options, sorted by short name (avg, bh, dc, p, th), to a
    /// canonical info request. They follow the header options as one group, so that
    /// new header options need not be interleaved with them.
    fn write_canonical(&self, s: &mut String) {
        if self.average {
            s.push_str("/avg:1");
        }
        if let Some((x, y)) = self.blurhash {
            let _ = write!(s, "/bh:{x}:{y}");
        }
        if let Some(build_missed) = self.dominant {
            let _ = write!(s, "/dc:1:{}", u8::from(build_missed));
        }
        if self.palette != 0 {
            let _ = write!(s, "/p:{}", self.palette);
        }
        if self.thumbhash {
            s.push_str("/th:1");
        }
    }
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
            metadata: MetadataOptions::default(),
            cachebuster: None,
            colors: ColorOptions::default(),
        }
    }
}

/// The metadata options of an info request; all off by default. A tenant may withhold
/// them (`info.withhold_metadata`): GPS positions and camera serials are personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetadataOptions {
    pub exif: bool,
    pub iptc: bool,
    pub xmp: bool,
}

impl MetadataOptions {
    /// The first metadata option asked for, by name (for a refusal that names it).
    pub fn first_asked(&self) -> Option<&'static str> {
        [("exif", self.exif), ("iptc", self.iptc), ("xmp", self.xmp)].into_iter().find(|o| o.1).map(|o| o.0)
    }
}

impl InfoOptions {
    /// Whether the answer needs anything beyond the header and the bytes themselves:
    /// only the colour and placeholder options decode pixels.
    pub fn header_only(&self) -> bool {
        !self.colors.any()
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
        // alphabetical by short name: a, cb, chs, d, exif, f, iptc, pn, s, xmp
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
        if o.metadata.exif {
            s.push_str("/exif:1");
        }
        if o.format != d.format {
            let _ = write!(s, "/f:{}", u8::from(o.format));
        }
        if o.metadata.iptc {
            s.push_str("/iptc:1");
        }
        if o.frames != d.frames {
            let _ = write!(s, "/pn:{}", u8::from(o.frames));
        }
        if o.size != d.size {
            let _ = write!(s, "/s:{}", u8::from(o.size));
        }
        if o.metadata.xmp {
            s.push_str("/xmp:1");
        }
        o.colors.write_canonical(&mut s);
        // a transform with no options writes exactly `/plain/{origin}:{key}`
        s.push_str(&ImageRequest { options: Options::default(), source: self.source.clone() }.canonical());
        s
    }
}

#[cfg(test)]
mod color_tests {
    #![allow(clippy::unwrap_used)]
    use super::ColorOptions;
    use crate::options::parse_info_canonical;

    #[test]
    fn colour_options_have_one_canonical_spelling() {
        let c = "/info/a:1/chs:sha256/avg:1/bh:4:3/dc:1:1/p:5/th:1/plain/o:photo.jpg";
        let r = parse_info_canonical(c).unwrap();
        let want =
            ColorOptions { average: true, dominant: Some(true), palette: 5, blurhash: Some((4, 3)), thumbhash: true };
        assert_eq!(r.options.colors, want);
        assert_eq!(r.canonical(), c);
        assert!(!r.options.header_only());
        // another order or spelling is not canonical
        assert!(parse_info_canonical("/info/th:1/avg:1/plain/o:photo.jpg").is_err());
        assert!(parse_info_canonical("/info/thumbhash:1/plain/o:photo.jpg").is_err());
        let plain = parse_info_canonical("/info/plain/o:photo.jpg").unwrap();
        assert!(plain.options.header_only());
    }
}
