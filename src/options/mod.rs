//! The typed image request: what a URL means, independent of how it was spelled.
//!
//! `parse` turns the part of an imgproxy-style URL after the signature into an
//! [`ImageRequest`]; [`ImageRequest::canonical`] turns it back into one stable string
//! (options sorted, defaults elided) so that `parse_canonical(&r.canonical()) == r`.
//! The canonical string is the cache key, ETag and billing input, and the request line
//! the edge sends to the render service. No pingora, no tokio here.

mod canonical;
mod parse;
#[cfg(test)]
mod tests;

pub use parse::{parse, parse_canonical, OriginRef, ParseContext, ParsedPath};

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

/// Compass gravity used to anchor crops (imgproxy `gravity`).
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
        }
    }
}

/// Gravity with optional offsets (pixels when >= 1, fraction of the size when < 1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gravity {
    pub kind: GravityType,
    pub x_offset: f64,
    pub y_offset: f64,
}

/// Output (and recognised input) image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
}

impl Format {
    /// Parses an extension or `format` argument (`jpg`, `jpeg`, `png`, `webp`, ...).
    pub fn from_ext(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::Webp),
            "gif" => Some(Format::Gif),
            _ => None,
        }
    }

    /// Canonical extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
        }
    }

    /// Whether the transform engine can write this format.
    pub fn can_encode(self) -> bool {
        matches!(self, Format::Jpeg | Format::Png | Format::Webp)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ext())
    }
}

/// Processing options. Every field's default is the no-op, and defaults are elided
/// from the canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub resizing_type: ResizingType,
    /// Target width in pixels; 0 = derive from height / keep source.
    pub width: u32,
    /// Target height in pixels; 0 = derive from width / keep source.
    pub height: u32,
    /// Device pixel ratio multiplier for width and height, > 0.
    pub dpr: f64,
    pub enlarge: bool,
    pub gravity: Gravity,
    /// 1..=100; None = the tenant's default quality.
    pub quality: Option<u8>,
    /// None = keep the source format (or negotiate).
    pub format: Option<Format>,
    /// Opaque string that only changes the cache key.
    pub cachebuster: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resizing_type: ResizingType::Fit,
            width: 0,
            height: 0,
            dpr: 1.0,
            enlarge: false,
            gravity: Gravity::default(),
            quality: None,
            format: None,
            cachebuster: None,
        }
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
}
