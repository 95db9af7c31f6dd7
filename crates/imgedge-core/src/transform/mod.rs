//! The image engine: bytes in, encoded bytes out. Pure and synchronous: no I/O, no
//! pingora, no tokio. Only `pipeline.rs` orders the steps.
//!
//! * `decode` sniffs the format from magic bytes, reads size and EXIF orientation from
//!   the header (pixel limit checked before any allocation) and decodes: JPEG with
//!   turbojpeg and DCT shrink-on-load (CMYK/YCCK and files turbojpeg rejects through
//!   `image`/zune), the other formats with their decoders under `Limits`; animated GIF
//!   and WebP frame by frame.
//! * `geometry` is imgproxy's arithmetic (`c` crop, fit/fill/fill-down/force/auto, `w`/
//!   `h`, `mw`/`mh`, `z`, dpr, enlarge, gravity incl. `fp` and `sm`, `ex`, `exar`, `pd`),
//!   pure and property-tested. EXIF orientation, `rot` and `fl` compose into one of
//!   the eight EXIF orientations.
//! * `steps/` resize (fast_image_resize Lanczos3, premultiplied alpha, both crops
//!   folded in), crop, orient, filters (blur, sharpen, pixelate), extend (one canvas for
//!   `ex`, `exar`, `pd`), flatten, watermark (last, on the result); `pipeline` runs them in imgproxy's order; `color`
//!   handles profiles and metadata; `encode` writes the result.
//!
//! Behaviour worth knowing:
//! * Sizes in [`Probe`] are display (EXIF-upright) sizes; sizes, crops and gravities in
//!   the request refer to the final image (after EXIF, `rot`, `fl`), as in imgproxy.
//!   The plan is mapped back to the stored pixel grid, so rotating costs one pass over
//!   the small result only.
//! * Order: trim (needs a full decode; the plan is made for what is left) → decode
//!   with shrink-on-load → colour → crop + resize → orient → blur, sharpen, pixelate
//!   (as given, not × dpr, as imgproxy) → canvas → flatten → encode.
//! * `g:sm` positions are found on the decoded (possibly DCT-shrunk) pixels; for an
//!   animation, on the first frame, and every frame gets the same geometry.
//! * Canvas fill: `bg` if given, else transparent where the output has alpha, else
//!   white. With `bg`, alpha is flattened onto it for every output format (imgproxy);
//!   without, only for JPEG (onto white). An alpha channel that is fully opaque is
//!   dropped on decode.
//! * Output format: `Options::format`, else the source's, else PNG (read-only sources).
//! * Animation: when `Settings::max_frames` > 1, an animated GIF/WebP written as GIF or
//!   WebP keeps up to that many frames, fewer if the frames together would exceed the
//!   pixel limit; trim does not apply. Otherwise the first frame is used.
//! * A final size (after extend and padding) over `max_result_dim`, or a requested box
//!   over it (after dpr and zoom), is `ResultTooLarge`, found before decoding (after it
//!   only with trim). imgproxy scales such results down instead.
//! * Truncated input: a JPEG that libjpeg-turbo only warns about (premature end of
//!   data, extraneous bytes) is decoded again by zune, which fills what is missing, so
//!   a truncated JPEG yields a valid image; truncated PNG, GIF and WebP are `Decode`.

mod avif;
mod color;
pub mod colors;
mod decode;
mod encode;
mod geometry;
#[cfg(test)]
mod golden_tests;
mod grid;
pub mod hashes;
mod info;
mod info_meta;
mod jpeg_dc;
mod metadata;
mod pipeline;
mod pixels;
mod placeholder;
mod steps;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod watermark_golden_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Frames of an animated source that are decoded and written; 1 = first frame
    /// only (a still image). The pixel limit applies to the sum over these frames.
    pub max_frames: u32,
    /// When the caller stops waiting for the result: checked between stages (after
    /// decoding, between processing steps and frames, before encoding), so abandoned work
    /// ends within one stage with [`TransformError::TimedOut`]. `None`: no deadline.
    pub deadline: Option<Instant>,
    /// The watermark image drawn when the request asks for one (`wm`, or forced by the
    /// tenant); a request with a watermark and none here fails.
    pub watermark: Option<Arc<WatermarkImage>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_quality: 80,
            max_src_pixels: 50_000_000,
            max_result_dim: 8192,
            max_frames: 1,
            deadline: None,
            watermark: None,
        }
    }
}

/// Wall time spent in each phase of [`run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Header walk, limit checks, planning and decoding (incl. shrink-on-load).
    pub decode: Duration,
    /// Colour handling, trim, resize, crop, orientation, effects, canvas, flatten.
    pub process: Duration,
    /// Writing the output format.
    pub encode: Duration,
}

/// An encoded result.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
    pub timings: Timings,
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
    /// [`Settings::deadline`] passed; the work was abandoned (504).
    #[error("render timed out")]
    TimedOut,
}

/// Reads format and dimensions from the header only (no pixel decoding, no pixel
/// limit check). Width and height are as displayed, i.e. after EXIF orientation.
pub fn probe(input: &[u8]) -> Result<Probe, TransformError> {
    pipeline::probe(input)
}

/// The format named by the magic bytes, among those the engine reads (never SVG);
/// `None` for anything else. No header parsing beyond the signature.
pub fn sniff(input: &[u8]) -> Option<Format> {
    decode::sniff(input)
}

pub use grid::grid;
pub use info::{info, Hashsums, Info};
pub use info_meta::{Degrees, ExifMap, ExifValue, IptcMap};
pub use steps::watermark::WatermarkImage;

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
        let meta = super::color::OutputMeta::default();
        let params = encode::EncodeParams { quality, jpeg: Default::default(), max_bytes: 0, meta: &meta };
        encode::encode(&img.0, format, &params)
    }

    /// A copy, for steps that work in place.
    pub fn duplicate(img: &Pixels) -> Result<Pixels, TransformError> {
        let p = &img.0;
        pixels::Pixels::new(p.width, p.height, p.channels, p.data().to_vec()).map(Pixels)
    }

    pub fn blur(img: &mut Pixels, sigma: f32) -> Result<(), TransformError> {
        super::steps::effects::blur(&mut img.0, sigma)
    }

    pub fn sharpen(img: &mut Pixels, sigma: f32) -> Result<(), TransformError> {
        super::steps::effects::sharpen(&mut img.0, sigma)
    }

    pub fn pixelate(img: &mut Pixels, size: u32) -> Result<(), TransformError> {
        super::steps::effects::pixelate(&mut img.0, size)
    }

    /// The trim box (x, y, w, h) against the top-left colour, if any.
    pub fn trim(img: &Pixels, threshold: f64) -> Option<(u32, u32, u32, u32)> {
        super::steps::trim::bounds(&img.0, threshold, None, false, false).map(|r| (r.x, r.y, r.w, r.h))
    }

    /// Top-left corner of the smart-crop window.
    pub fn smart(img: &Pixels, crop_w: u32, crop_h: u32) -> (u32, u32) {
        super::steps::smart::position(&img.0, crop_w, crop_h)
    }

    /// The image centred on a `width`×`height` canvas of `fill` (RGBA).
    pub fn embed(img: &Pixels, width: u32, height: u32, fill: [u8; 4]) -> Result<Pixels, TransformError> {
        let (x, y) = (width.saturating_sub(img.0.width) / 2, height.saturating_sub(img.0.height) / 2);
        super::steps::canvas::embed(&img.0, width, height, x, y, fill).map(Pixels)
    }

    /// Rotation by 90° (EXIF orientation 6), as the orient step does it.
    pub fn rotate90(img: &Pixels) -> Result<Pixels, TransformError> {
        super::steps::orient::apply(&img.0, super::geometry::Orientation::Rotate90).map(Pixels)
    }
}
