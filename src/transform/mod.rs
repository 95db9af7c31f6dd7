//! The image engine: bytes in, encoded bytes out. Pure and synchronous: no I/O, no
//! pingora, no tokio. Only `pipeline.rs` orders the steps.
//!
//! * `decode` sniffs the format from magic bytes, reads size and EXIF orientation from
//!   the header (pixel limit checked before any allocation) and decodes: JPEG with
//!   turbojpeg and DCT shrink-on-load (CMYK/YCCK and files turbojpeg rejects through
//!   `image`/zune), PNG and GIF (first frame) through `image` with `Limits`, WebP
//!   through libwebp (animated WebP: first frame through `image`).
//! * `geometry` is the imgproxy resize arithmetic (fit/fill/fill-down/force/auto, dpr,
//!   enlarge, gravity), pure and property-tested.
//! * `steps/` resize (fast_image_resize Lanczos3, premultiplied alpha, crop folded in),
//!   crop, orient, flatten; `pipeline` runs them in order; `encode` writes the result.
//!
//! Behaviour worth knowing:
//! * Output format: `Options::format`, else the source's; a GIF source is written as
//!   PNG (no GIF encoder); explicitly requesting GIF is `UnsupportedOutput`.
//! * EXIF orientation (JPEG APP1, PNG eXIf, WebP EXIF) is always applied; sizes in
//!   [`Probe`] and in the request are display (upright) sizes. Output has no metadata.
//! * JPEG output flattens alpha onto white. An alpha channel that is fully opaque is
//!   dropped on decode.
//! * Requesting a box larger than `max_result_dim` (after dpr), or a result that would
//!   be larger (e.g. no resize on a huge source), is `ResultTooLarge`.
//! * Truncated input: a JPEG that libjpeg-turbo only warns about (premature end of
//!   data, extraneous bytes) is decoded again by zune, which fills what is missing, so
//!   a truncated JPEG yields a valid image; truncated PNG, GIF and WebP are `Decode`.

mod decode;
mod encode;
mod geometry;
mod pipeline;
mod pixels;
mod steps;
#[cfg(test)]
mod tests;

use crate::options::{Format, Options};

/// Per-tenant limits and defaults the engine enforces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Quality used when the request names none (1..=100).
    pub default_quality: u8,
    /// Largest source accepted, in pixels (width × height), checked from the header
    /// before any pixel buffer is allocated.
    pub max_src_pixels: u64,
    /// Largest output width or height.
    pub max_result_dim: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { default_quality: 80, max_src_pixels: 50_000_000, max_result_dim: 8192 }
    }
}

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

/// What the header of a source says, read without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// The bytes are not an image format we read (415).
    #[error("unsupported source format")]
    UnsupportedSource,
    /// The output format cannot be written (415).
    #[error("unsupported output format: {0}")]
    UnsupportedOutput(Format),
    /// The source is over the pixel limit (422).
    #[error("source resolution {width}x{height} exceeds the limit of {max_pixels} pixels")]
    SourceTooLarge { width: u32, height: u32, max_pixels: u64 },
    /// The requested result is over the dimension limit (422).
    #[error("result dimension {0} exceeds the limit of {1}")]
    ResultTooLarge(u32, u32),
    /// The source is corrupt or truncated (422).
    #[error("cannot decode source: {0}")]
    Decode(String),
    /// Encoder failure (500).
    #[error("cannot encode result: {0}")]
    Encode(String),
}

/// Reads format and dimensions from the header only (no pixel decoding, no pixel
/// limit check). Width and height are as displayed, i.e. after EXIF orientation.
pub fn probe(input: &[u8]) -> Result<Probe, TransformError> {
    pipeline::probe(input)
}

/// Decodes, transforms and encodes one image.
pub fn run(input: &[u8], opts: &Options, settings: &Settings) -> Result<Encoded, TransformError> {
    pipeline::run(input, opts, settings)
}

/// Pieces of the pipeline for `benches/transform.rs`. Not an API: hidden and unstable.
#[doc(hidden)]
pub mod bench {
    use super::{decode, encode, pipeline, pixels, TransformError};
    use crate::options::{Format, Options};

    /// Decoded (and possibly transformed) pixels, opaque to the caller.
    pub struct Pixels(pixels::Pixels);

    impl Pixels {
        pub fn dims(&self) -> (u32, u32) {
            (self.0.width, self.0.height)
        }
    }

    /// Header walk, pixel check and decode at 1/`shrink` (JPEG only), as `run` does.
    pub fn decode(input: &[u8], shrink: u32) -> Result<Pixels, TransformError> {
        let h = decode::read_header(input)?;
        decode::check_pixels(&h, u64::MAX)?;
        decode::decode(input, &h, shrink).map(Pixels)
    }

    /// Everything `run` does except encoding.
    pub fn transform(input: &[u8], opts: &Options) -> Result<Pixels, TransformError> {
        pipeline::transform(input, opts, &super::Settings::default()).map(|(px, _)| Pixels(px))
    }

    pub fn encode(img: &Pixels, format: Format, quality: u8) -> Result<Vec<u8>, TransformError> {
        encode::encode(&img.0, format, quality)
    }
}
