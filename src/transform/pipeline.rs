//! The only place that orders the work: header → limits → plan → decode → steps →
//! encode. Cheap checks (format, output format, pixel count, result size) all happen
//! before a single pixel is decoded.

use super::decode::{self, Header};
use super::geometry::{self, Orientation, Rect};
use super::pixels::Pixels;
use super::steps;
use super::{encode, Encoded, Settings, TransformError};
use crate::options::{Format, Options};

/// State handed from step to step.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Current pixels; in stored orientation until the orient step has run.
    pub(crate) img: Pixels,
    /// Size of the whole image after scaling, in stored orientation.
    pub(crate) target: (u32, u32),
    /// Part of the scaled image to keep (stored orientation, `target` coordinates);
    /// `None` once applied or when everything is kept.
    pub(crate) crop: Option<Rect>,
    /// Orientation still to apply.
    pub(crate) orientation: Orientation,
    pub(crate) out_format: Format,
}

pub(crate) type Step = fn(&mut Ctx) -> Result<(), TransformError>;

/// Resize first (it also crops when it runs), so that orient and flatten touch the
/// small result; crop covers the no-resize case.
const STEPS: &[Step] = &[steps::resize::run, steps::crop::run, steps::orient::run, steps::flatten::run];

/// The requested format, or the source's; a source format we cannot write (GIF)
/// falls back to PNG, which keeps its transparency. Explicitly asking for one is an
/// error.
pub(crate) fn output_format(requested: Option<Format>, source: Format) -> Result<Format, TransformError> {
    match requested {
        Some(f) if f.can_encode() => Ok(f),
        Some(f) => Err(TransformError::UnsupportedOutput(f)),
        None if source.can_encode() => Ok(source),
        None => Ok(Format::Png),
    }
}

pub(crate) fn probe(input: &[u8]) -> Result<super::Probe, TransformError> {
    let h = decode::read_header(input)?;
    let (width, height) = h.orientation.display_dims(h.width, h.height);
    Ok(super::Probe { format: h.format, width, height })
}

pub(crate) fn run(input: &[u8], opts: &Options, settings: &Settings) -> Result<Encoded, TransformError> {
    let (img, out_format) = transform(input, opts, settings)?;
    let quality = opts.quality.unwrap_or(settings.default_quality).clamp(1, 100);
    let bytes = encode::encode(&img, out_format, quality)?;
    Ok(Encoded { bytes, format: out_format, width: img.width, height: img.height })
}

/// Everything up to encoding: returns the final pixels and the format to write.
pub(crate) fn transform(input: &[u8], opts: &Options, settings: &Settings) -> Result<(Pixels, Format), TransformError> {
    let header: Header = decode::read_header(input)?;
    let out_format = output_format(opts.format, header.format)?;
    decode::check_pixels(&header, settings.max_src_pixels)?;

    let (dw, dh) = header.orientation.display_dims(header.width, header.height);
    let plan = geometry::plan(dw, dh, opts, settings.max_result_dim)?;
    let stored = plan.to_stored(header.orientation);

    let shrink = if header.format == Format::Jpeg {
        geometry::jpeg_shrink(header.width, header.height, stored.scaled_w, stored.scaled_h)
    } else {
        1
    };
    let img = decode::decode(input, &header, shrink)?;

    let mut ctx = Ctx {
        img,
        target: (stored.scaled_w, stored.scaled_h),
        crop: (!stored.is_uncropped()).then_some(stored.crop),
        orientation: header.orientation,
        out_format,
    };
    for step in STEPS {
        step(&mut ctx)?;
    }
    debug_assert_eq!((ctx.img.width, ctx.img.height), plan.out_dims());
    Ok((ctx.img, out_format))
}
