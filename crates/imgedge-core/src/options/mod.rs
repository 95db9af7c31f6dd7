//! The typed image request: what a URL means, independent of how it was spelled.
//!
//! `parse` turns the part of an imgproxy-style URL after the signature into an
//! [`ImageRequest`]; [`ImageRequest::canonical`] turns it back into one stable string
//! (options sorted, defaults elided) so that `parse_canonical(&r.canonical()) == r`.
//! The canonical string is the cache key, ETag and billing input, and the request line
//! the edge sends to the render service. No pingora, no tokio here.

mod canonical;
pub mod grid;
pub mod info;
mod parse;
#[cfg(test)]
mod tests;
mod watermark;

pub use grid::{parse_grid, parse_grid_canonical, GridOptions, GridRequest, ParsedGrid, GRID_PREFIX};
pub use info::{InfoOptions, InfoRequest, MetadataOptions, INFO_PREFIX};
pub use parse::{
    parse, parse_canonical, parse_info, parse_info_canonical, parse_source, round_float, OriginRef, ParseContext,
    ParsedInfo, ParsedPath,
};
pub use watermark::{ForcedWatermark, Watermark, WatermarkPosition};

use std::fmt;

/// How the image is fitted into the requested box (imgproxy `resizing_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizingType {
    /// Keep aspect ratio, fit inside the box.
    #[default]
    Fit,
    /// Keep aspect ratio, cover the box, crop the overflow by gravity.
    Fill,
    /// Like fill, but never upscale: the box shrinks to the image keeping its aspect ratio.
    FillDown,
    /// Ignore aspect ratio, stretch to the box.
    Force,
    /// Fill when source and box have the same orientation, fit otherwise.
    Auto,
}

impl ResizingType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fit => "fit",
            Self::Fill => "fill",
            Self::FillDown => "fill-down",
            Self::Force => "force",
            Self::Auto => "auto",
        }
    }
}

/// Gravity used to anchor crops and extensions (imgproxy `gravity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GravityType {
    #[default]
    Center,
    North,
    South,
    East,
    West,
    NorthEast,
    NorthWest,
    SouthEast,
    SouthWest,
    /// `fp:x:y`: keep the point (`x_offset`, `y_offset`), fractions 0..=1 of the
    /// image, as close to the centre of the result as possible.
    FocusPoint,
    /// `sm`: content-aware crop position (only meaningful for crops).
    Smart,
}

impl GravityType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Center => "ce",
            Self::North => "no",
            Self::South => "so",
            Self::East => "ea",
            Self::West => "we",
            Self::NorthEast => "noea",
            Self::NorthWest => "nowe",
            Self::SouthEast => "soea",
            Self::SouthWest => "sowe",
            Self::FocusPoint => "fp",
            Self::Smart => "sm",
        }
    }
}

/// Gravity with optional offsets (pixels when >= 1, fraction of the size when < 1).
/// For [`GravityType::FocusPoint`] the offsets are the point's coordinates (0..=1);
/// [`GravityType::Smart`] has none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gravity {
    pub kind: GravityType,
    pub x_offset: f64,
    pub y_offset: f64,
}

/// `c`/`crop`: cut a region out of the source before resizing. Sizes are pixels when
/// >= 1, fractions of the source when < 1, and 0 means the whole source dimension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub width: f64,
    pub height: f64,
    /// `None` = the request's `gravity` (imgproxy's behaviour).
    pub gravity: Option<Gravity>,
}

/// `ex`/`extend` and `exar`/`extend_aspect_ratio`: grow the canvas to the requested
/// size (or aspect ratio) instead of leaving the result smaller.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Extend {
    pub enabled: bool,
    /// `None` = centre.
    pub gravity: Option<Gravity>,
}

/// `t`/`trim`: remove a uniform border.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    /// Colour distance (0..=255) still counted as border.
    pub threshold: f64,
    /// Border colour; `None` = the colour of the top-left pixel.
    pub color: Option<Rgb>,
    /// Trim the same amount from left and right.
    pub equal_hor: bool,
    /// Trim the same amount from top and bottom.
    pub equal_ver: bool,
}

/// `pd`/`padding`, in CSS order; applied after everything else, scaled by `dpr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    pub left: u32,
}

impl Padding {
    pub fn is_zero(&self) -> bool {
        *self == Padding::default()
    }
}

/// An opaque colour (`bg`, `trim` colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `rrggbb`, the canonical spelling.
    pub fn hex(self) -> String {
        format!("{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// `plh`/`placeholder`: what the image is replaced with (see `transform::placeholder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// The BlurHash with these x and y components (1..=9), drawn back.
    BlurHash(u8, u8),
    /// The ThumbHash, drawn back.
    ThumbHash,
    /// A flat image of the dominant colour.
    Color,
}

/// `jpgo`/`jpeg_options` (imgproxy Pro's names; the subset libjpeg-turbo does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JpegOptions {
    pub progressive: bool,
    /// 4:4:4 instead of 4:2:0 chroma.
    pub no_subsample: bool,
}

/// Image formats: every format the engine reads, and the subset it writes
/// ([`Format::can_encode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
    /// Read only.
    Bmp,
    /// Read only.
    Tiff,
    /// Read only.
    Ico,
}

impl Format {
    /// Every format, in canonical order.
    pub const ALL: [Format; 8] =
        [Format::Jpeg, Format::Png, Format::Webp, Format::Avif, Format::Gif, Format::Bmp, Format::Tiff, Format::Ico];

    /// Parses an extension or `format` argument (`jpg`, `jpeg`, `png`, `webp`, ...).
    pub fn from_ext(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::Webp),
            "avif" => Some(Format::Avif),
            "gif" => Some(Format::Gif),
            "bmp" => Some(Format::Bmp),
            "tif" | "tiff" => Some(Format::Tiff),
            "ico" => Some(Format::Ico),
            _ => None,
        }
    }

    /// Canonical extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Avif => "avif",
            Format::Gif => "gif",
            Format::Bmp => "bmp",
            Format::Tiff => "tiff",
            Format::Ico => "ico",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Avif => "image/avif",
            Format::Gif => "image/gif",
            Format::Bmp => "image/bmp",
            Format::Tiff => "image/tiff",
            Format::Ico => "image/x-icon",
        }
    }

    /// Whether the transform engine can write this format.
    pub fn can_encode(self) -> bool {
        matches!(self, Format::Jpeg | Format::Png | Format::Webp | Format::Avif | Format::Gif)
    }

    /// Whether the format can carry an alpha channel.
    pub fn has_alpha(self) -> bool {
        !matches!(self, Format::Jpeg)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ext())
    }
}

/// Processing options. Every field's default is the no-op (or imgproxy's default),
/// and defaults are elided from the canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    // --- geometry
    pub resizing_type: ResizingType,
    /// Target width in pixels; 0 = derive from height / keep source.
    pub width: u32,
    /// Target height in pixels; 0 = derive from width / keep source.
    pub height: u32,
    /// `mw`/`min-width`: the result is at least this wide (0 = off).
    pub min_width: u32,
    /// `mh`/`min-height`: the result is at least this tall (0 = off).
    pub min_height: u32,
    /// `z`/`zoom`: multipliers applied after the size is computed, > 0.
    pub zoom_x: f64,
    pub zoom_y: f64,
    /// Device pixel ratio multiplier for width, height and padding, > 0.
    pub dpr: f64,
    pub enlarge: bool,
    pub extend: Extend,
    pub extend_aspect_ratio: Extend,
    pub gravity: Gravity,
    pub crop: Option<Crop>,
    pub trim: Option<Trim>,
    pub padding: Padding,
    /// `rot`: 0, 90, 180 or 270 degrees clockwise, after EXIF orientation.
    pub rotate: u16,
    /// `fl`/`flip`: mirror horizontally / vertically, after rotation.
    pub flip_horizontal: bool,
    pub flip_vertical: bool,
    /// `ar`/`auto_rotate`: apply the EXIF orientation (default on).
    pub auto_rotate: bool,
    // --- effects
    /// `bg`: colour for flattening alpha (JPEG) and for extended/padded areas;
    /// `None` = white when flattening, transparent (or white) when extending.
    pub background: Option<Rgb>,
    /// Gaussian blur sigma; 0 = off.
    pub blur: f64,
    /// Unsharp-mask sigma; 0 = off.
    pub sharpen: f64,
    /// Pixelation block size in pixels; 0 = off.
    pub pixelate: u32,
    // --- output
    /// 1..=100; None = `format_quality` or the tenant's default.
    pub quality: Option<u8>,
    /// `fq`: per-output-format quality, used when `quality` is not set. Sorted by
    /// format, one entry per format (the canonical form depends on it).
    pub format_quality: Vec<(Format, u8)>,
    /// None = keep the source format (or negotiate).
    pub format: Option<Format>,
    /// `mb`: lower the quality until the result is at most this many bytes (0 = off).
    pub max_bytes: u64,
    pub jpeg: JpegOptions,
    /// `sm`: drop EXIF/XMP/IPTC (default on).
    pub strip_metadata: bool,
    /// `kcr`: keep the copyright (and artist) when stripping metadata (default on).
    pub keep_copyright: bool,
    /// `scp`: convert to sRGB and drop the ICC profile (default on); off = keep the
    /// profile where the output format can carry it.
    pub strip_color_profile: bool,
    /// `skp`: source formats served as they are (no decode, no transform). Sorted,
    /// no duplicates.
    pub skip_processing: Vec<Format>,
    /// `raw`: stream the source unchanged (no transform at all).
    pub raw: bool,
    /// Opaque string that only changes the cache key.
    pub cachebuster: Option<String>,
    /// `fn`/`filename`: the name (before the extension) in `Content-Disposition`;
    /// `None` = the source key's file name.
    pub filename: Option<String>,
    /// `att`/`return_attachment`: `Content-Disposition: attachment` instead of `inline`.
    pub return_attachment: bool,
    /// `wm`/`wmu`, or the tenant's forced watermark; opacity 0 = none.
    pub watermark: Watermark,
    /// `plh`/`placeholder`: render a placeholder of the image instead of the image.
    pub placeholder: Option<Placeholder>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resizing_type: ResizingType::Fit,
            width: 0,
            height: 0,
            min_width: 0,
            min_height: 0,
            zoom_x: 1.0,
            zoom_y: 1.0,
            dpr: 1.0,
            enlarge: false,
            extend: Extend::default(),
            extend_aspect_ratio: Extend::default(),
            gravity: Gravity::default(),
            crop: None,
            trim: None,
            padding: Padding::default(),
            rotate: 0,
            flip_horizontal: false,
            flip_vertical: false,
            auto_rotate: true,
            background: None,
            blur: 0.0,
            sharpen: 0.0,
            pixelate: 0,
            quality: None,
            format_quality: Vec::new(),
            format: None,
            max_bytes: 0,
            jpeg: JpegOptions::default(),
            strip_metadata: true,
            keep_copyright: true,
            strip_color_profile: true,
            skip_processing: Vec::new(),
            raw: false,
            cachebuster: None,
            filename: None,
            return_attachment: false,
            watermark: Watermark::default(),
            placeholder: None,
        }
    }
}

impl Options {
    /// The quality to encode `format` with: `q`, else `fq` for that format, else the
    /// tenant's default.
    pub fn quality_for(&self, format: Format, default: u8) -> u8 {
        self.quality
            .or_else(|| self.format_quality.iter().find(|(f, _)| *f == format).map(|(_, q)| *q))
            .unwrap_or(default)
            .clamp(1, 100)
    }
}

/// Where the original lives: a named origin of the tenant and a normalised key in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub origin: String,
    pub key: String,
}

/// One fully parsed, resolved request. Expiry is checked at the edge and is not part of
/// the request's identity (not in `canonical`).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRequest {
    pub options: Options,
    pub source: Source,
}

impl ImageRequest {
    /// `Content-Disposition` as imgproxy writes it (`inline; filename="stem.ext"`, the
    /// stem from `fn` or the source key, the extension from the output format), sent
    /// only when the URL asks with `fn` or `att`. Characters a quoted header value cannot
    /// carry are percent-encoded; a non-ASCII name also goes in RFC 6266's `filename*`.
    pub fn content_disposition(&self, format: Format) -> Option<String> {
        let o = &self.options;
        if o.filename.is_none() && !o.return_attachment {
            return None;
        }
        let stem = match &o.filename {
            Some(name) => name.as_str(),
            None => {
                let base = self.source.key.rsplit('/').next().unwrap_or_default();
                base.rsplit_once('.').map_or(base, |(stem, _)| stem)
            }
        };
        let stem = if stem.is_empty() { "image" } else { stem };
        let ext = if format == Format::Jpeg { "jpg" } else { format.ext() };
        let kind = if o.return_attachment { "attachment" } else { "inline" };
        let mut ascii = String::with_capacity(stem.len());
        for c in stem.chars() {
            match c {
                '"' => ascii.push_str("%22"),
                '\\' => ascii.push_str("%5C"),
                c if c.is_ascii_graphic() || c == ' ' => ascii.push(c),
                _ => ascii.push('_'),
            }
        }
        let mut value = format!("{kind}; filename=\"{ascii}.{ext}\"");
        if !stem.is_ascii() {
            let encoded = percent_encoding::utf8_percent_encode(stem, percent_encoding::NON_ALPHANUMERIC);
            value.push_str(&format!("; filename*=UTF-8''{encoded}.{ext}"));
        }
        Some(value)
    }
}

/// Why a URL could not be parsed. Every variant maps to 400 except where noted by the
/// error module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown option: {0}")]
    UnknownOption(String),
    #[error("invalid arguments for option {name}: {reason}")]
    InvalidArgs { name: String, reason: String },
    #[error("unknown preset: {0}")]
    UnknownPreset(String),
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    #[error("missing source")]
    MissingSource,
    #[error("invalid source: {0}")]
    InvalidSource(String),
    #[error("unknown origin: {0}")]
    UnknownOrigin(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// imgproxy's security options (`msr`, `msfs`, `maf`, `mafr`, `mrd`): limits are the
    /// tenant's configuration, never the URL's (403, as imgproxy answers by default).
    #[error("security option {0} is not allowed: limits are set in the tenant's configuration")]
    SecurityOption(String),
    /// A URL asking for what the tenant's configuration forbids (`raw` or `skp` when a
    /// watermark is forced): 403.
    #[error("{0}")]
    Forbidden(String),
    /// `exif`, `iptc`, `xmp` on a tenant that withholds metadata (`info.withhold_metadata`):
    /// 403, naming the option.
    #[error(
        "option {0} is withheld by this tenant: image metadata may hold personal data (GPS positions, camera serials)"
    )]
    MetadataWithheld(&'static str),
}
