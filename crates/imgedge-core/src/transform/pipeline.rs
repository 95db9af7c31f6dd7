//! The only place that orders the work, imgproxy's order: header → limits → (trim) →
//! plan → decode with shrink-on-load → colour → resize with the crops folded in →
//! orient → effects → canvas (extend, padding) → flatten → encode. Cheap checks
//! (format, output format, pixel count, result size) happen before a single pixel is
//! decoded; only trim needs the pixels first.

use std::time::{Duration, Instant};

use super::color::{self, OutputMeta};
use super::decode::{self, Header};
use super::encode::{self, EncodeParams, Frame};
use super::geometry::{self, Canvas, Orientation, Plan, Rect};
use super::pixels::Pixels;
use super::steps;
use super::{Encoded, Settings, Timings, TransformError};
use crate::options::{Format, Options, Rgb};

/// The part of the source to keep, in source coordinates (stored orientation, before
/// any shrink-on-load), and the size it becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Region {
    pub(crate) x: f64,
    pub(crate) y: f64,
    pub(crate) w: f64,
    pub(crate) h: f64,
    pub(crate) out_w: u32,
    pub(crate) out_h: u32,
}

impl Region {
    /// The region as whole source pixels when it is kept at 1:1 (no resampling needed).
    pub(crate) fn unscaled(&self) -> Option<Rect> {
        let whole = |v: f64| v.fract() == 0.0 && v >= 0.0 && v <= f64::from(u32::MAX);
        let exact = [self.x, self.y, self.w, self.h].into_iter().all(whole)
            && self.w == f64::from(self.out_w)
            && self.h == f64::from(self.out_h);
        // Checked above: whole numbers within u32.
        exact.then_some(Rect { x: self.x as u32, y: self.y as u32, w: self.out_w, h: self.out_h })
    }
}

/// What to do to each image (every frame of an animation gets the same).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    /// Stored size of the source that `region` refers to; the decoded pixels may be
    /// smaller (shrink-on-load).
    pub(crate) src: (u32, u32),
    /// `None` once applied.
    pub(crate) region: Option<Region>,
    /// Orientation still to apply (EXIF, `rot` and `fl` in one).
    pub(crate) orientation: Orientation,
    pub(crate) blur: f32,
    pub(crate) sharpen: f32,
    pub(crate) pixelate: u32,
    /// Final canvas (extend, padding); `None` when the image is the output.
    pub(crate) canvas: Option<Canvas>,
    /// Colour of the area the canvas adds (RGBA).
    pub(crate) fill: [u8; 4],
    /// Background alpha is flattened onto; `None` = keep alpha.
    pub(crate) flatten: Option<Rgb>,
}

/// State handed from step to step.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Current pixels; in stored orientation until the orient step has run.
    pub(crate) img: Pixels,
    pub(crate) job: Job,
}

pub(crate) type Step = fn(&mut Ctx) -> Result<(), TransformError>;

/// Resize first (it also crops when it runs), so that everything after it touches the
/// small result; crop covers the no-resize case.
const STEPS: &[Step] = &[
    steps::resize::run,
    steps::crop::run,
    steps::orient::run,
    steps::filters::run,
    steps::extend::run,
    steps::flatten::run,
];

/// The requested format, or the source's; a source format we cannot write falls back
/// to PNG, which keeps transparency. Explicitly asking for one is an error.
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

/// Transformed pixels, ready to encode.
pub(crate) struct Rendered {
    /// One frame for a still image.
    pub(crate) frames: Vec<Frame>,
    pub(crate) loop_count: u16,
    pub(crate) animated: bool,
    pub(crate) format: Format,
    pub(crate) meta: OutputMeta,
    pub(crate) decode: Duration,
    pub(crate) process: Duration,
}

/// imgproxy's `avif=63` default: AV1 at the JPEG/WebP default of 80 is far larger than
/// needed for the same look, so AVIF gets its own default unless the URL says `q`/`fq`.
const AVIF_DEFAULT_QUALITY: u8 = 63;

fn default_quality(format: Format, settings: &Settings) -> u8 {
    match format {
        Format::Avif => AVIF_DEFAULT_QUALITY,
        _ => settings.default_quality,
    }
}

/// Stops work nobody waits for any more: `Err` once `settings.deadline` has passed.
fn in_time(settings: &Settings) -> Result<(), TransformError> {
    match settings.deadline {
        Some(d) if Instant::now() >= d => Err(TransformError::TimedOut),
        _ => Ok(()),
    }
}

pub(crate) fn run(input: &[u8], opts: &Options, settings: &Settings) -> Result<Encoded, TransformError> {
    let r = render(input, opts, settings)?;
    in_time(settings)?;
    let start = Instant::now();
    let params = EncodeParams {
        quality: opts.quality_for(r.format, default_quality(r.format, settings)),
        jpeg: opts.jpeg,
        max_bytes: opts.max_bytes,
        meta: &r.meta,
    };
    let first = r.frames.first().ok_or_else(|| TransformError::Encode("no frames".into()))?;
    let (width, height) = (first.img.width, first.img.height);
    let bytes = if r.animated {
        encode::encode_animation(&r.frames, r.loop_count, r.format, &params)?
    } else {
        encode::encode(&first.img, r.format, &params)?
    };
    let timings = Timings { decode: r.decode, process: r.process, encode: start.elapsed() };
    Ok(Encoded { bytes, format: r.format, width, height, timings })
}

/// Everything up to encoding for a still image (the first frame of an animation):
/// the final pixels and the format to write.
pub(crate) fn transform(input: &[u8], opts: &Options, settings: &Settings) -> Result<(Pixels, Format), TransformError> {
    let still = Settings { max_frames: 1, ..settings.clone() };
    let r = render(input, opts, &still)?;
    let frame = r.frames.into_iter().next().ok_or_else(|| TransformError::Encode("no frames".into()))?;
    Ok((frame.img, r.format))
}

/// Header, limits, decode and every step; timings of the decode and process phases.
pub(crate) fn render(input: &[u8], opts: &Options, settings: &Settings) -> Result<Rendered, TransformError> {
    let start = Instant::now();
    let header: Header = decode::read_header(input)?;
    let format = output_format(opts.format, header.format)?;
    decode::check_pixels(&header, settings.max_src_pixels)?;
    if let Some(kind) = opts.placeholder {
        return render_placeholder(input, kind, opts, settings, format, start);
    }
    let orientation = Orientation::compose(header.orientation, opts);

    if let Some(frames) = animation_frames(&header, format, settings) {
        return render_animation(input, &header, opts, settings, frames, orientation, format, start);
    }

    let (mut img, meta, plan, decode_time) = if let Some(trim) = opts.trim {
        // Trim needs every pixel first; the plan is made for what is left.
        let mut img = decode::decode(input, &header, 1)?;
        let decode_time = start.elapsed();
        let meta = color::prepare(&mut img, input, &header, opts, format)?;
        trim_border(&mut img, &trim, orientation)?;
        let (dw, dh) = orientation.display_dims(img.width, img.height);
        let plan = geometry::plan(dw, dh, opts, settings.max_result_dim)?;
        (img, meta, plan, decode_time)
    } else {
        let (dw, dh) = orientation.display_dims(header.width, header.height);
        let plan = geometry::plan(dw, dh, opts, settings.max_result_dim)?;
        let stored = plan.to_stored(orientation);
        let shrink = if header.format == Format::Jpeg {
            geometry::jpeg_shrink(stored.crop.w, stored.crop.h, stored.scaled_w, stored.scaled_h)
        } else {
            1
        };
        let mut img = decode::decode(input, &header, shrink)?;
        let decode_time = start.elapsed();
        let meta = color::prepare(&mut img, input, &header, opts, format)?;
        (img, meta, plan, decode_time)
    };

    in_time(settings)?;
    let mut stored = plan.to_stored(orientation);
    resolve_smart(&mut stored, &img)?;
    let job = job(&stored, orientation, opts, format);
    img = apply(img, job, settings)?;
    debug_assert_eq!((img.width, img.height), plan.out_dims());
    in_time(settings)?;
    img = watermark(img, opts, settings)?;
    Ok(Rendered {
        frames: vec![Frame { img, delay_ms: 0 }],
        loop_count: 0,
        animated: false,
        format,
        meta,
        decode: decode_time,
        process: start.elapsed().saturating_sub(decode_time),
    })
}

/// `plh`: the placeholder image (already upright: EXIF orientation applied) stands
/// in for the source; `rot`/`fl`, sizes, effects and canvas apply to it as to a source,
/// with enlarging allowed. No metadata is written.
fn render_placeholder(
    input: &[u8],
    kind: crate::options::Placeholder,
    opts: &Options,
    settings: &Settings,
    format: Format,
    start: Instant,
) -> Result<Rendered, TransformError> {
    let img = super::placeholder::image(input, kind, settings.max_src_pixels)?;
    let decode_time = start.elapsed();
    in_time(settings)?;
    let opts = Options { enlarge: true, ..opts.clone() };
    let orientation = Orientation::compose(Orientation::Normal, &opts);
    let (dw, dh) = orientation.display_dims(img.width, img.height);
    let plan = geometry::plan(dw, dh, &opts, settings.max_result_dim)?;
    let stored = plan.to_stored(orientation);
    let img = apply(img, job(&stored, orientation, &opts, format), settings)?;
    Ok(Rendered {
        frames: vec![Frame { img, delay_ms: 0 }],
        loop_count: 0,
        animated: false,
        format,
        meta: OutputMeta::default(),
        decode: decode_time,
        process: start.elapsed().saturating_sub(decode_time),
    })
}

/// How many frames to decode when the source is rendered as an animation, or `None`
/// for a still image: the source must be animated, the output format able to animate,
/// and the tenant must allow more than one frame. The count is capped so that the
/// decoded frames together stay within the pixel limit (each frame is a full canvas).
fn animation_frames(header: &Header, out: Format, settings: &Settings) -> Option<u32> {
    let animatable = |f: Format| matches!(f, Format::Gif | Format::Webp);
    // A GIF's header does not say whether more frames follow; the decoder finds out
    // (a single-frame GIF comes back as one frame and is written as a still).
    let maybe_animated = header.format == Format::Gif || header.animated;
    if settings.max_frames <= 1 || !maybe_animated || !animatable(header.format) || !animatable(out) {
        return None;
    }
    let by_pixels = settings.max_src_pixels / header.pixels().max(1);
    let frames = u64::from(settings.max_frames).min(by_pixels);
    (frames > 1).then_some(frames as u32)
}

#[allow(clippy::too_many_arguments)]
fn render_animation(
    input: &[u8],
    header: &Header,
    opts: &Options,
    settings: &Settings,
    max_frames: u32,
    orientation: Orientation,
    format: Format,
    start: Instant,
) -> Result<Rendered, TransformError> {
    // The result size is known from the header: refuse before decoding any frame.
    let (dw, dh) = orientation.display_dims(header.width, header.height);
    let plan = geometry::plan(dw, dh, opts, settings.max_result_dim)?;
    let anim = decode::decode_animation(input, header, max_frames)?;
    let decoded: u64 = anim.frames.iter().map(|f| u64::from(f.img.width) * u64::from(f.img.height)).sum();
    if decoded > settings.max_src_pixels {
        return Err(TransformError::SourceTooLarge {
            width: header.width,
            height: header.height,
            max_pixels: settings.max_src_pixels,
        });
    }
    let decode_time = start.elapsed();

    let process_start = Instant::now();
    let mut stored = plan.to_stored(orientation);
    let mut meta = None;
    let mut frames = Vec::with_capacity(anim.frames.len());
    for Frame { mut img, delay_ms } in anim.frames {
        if (img.width, img.height) != (header.width, header.height) {
            return Err(TransformError::Decode("animation frame differs from the canvas size".into()));
        }
        let m = color::prepare(&mut img, input, header, opts, format)?;
        if meta.is_none() {
            // Smart positions come from the first frame and hold for all of them.
            resolve_smart(&mut stored, &img)?;
            meta = Some(m);
        }
        let img = apply(img, job(&stored, orientation, opts, format), settings)?;
        let img = watermark(img, opts, settings)?;
        frames.push(Frame { img, delay_ms });
    }
    let animated = frames.len() > 1;
    Ok(Rendered {
        frames,
        loop_count: anim.loop_count,
        animated,
        format,
        meta: meta.unwrap_or_default(),
        decode: decode_time,
        process: process_start.elapsed(),
    })
}

fn apply(img: Pixels, job: Job, settings: &Settings) -> Result<Pixels, TransformError> {
    let mut ctx = Ctx { img, job };
    for step in STEPS {
        in_time(settings)?;
        step(&mut ctx)?;
    }
    Ok(ctx.img)
}

/// The watermark on the finished image (every frame of an animation alike).
fn watermark(img: Pixels, opts: &Options, settings: &Settings) -> Result<Pixels, TransformError> {
    if !opts.watermark.enabled() {
        return Ok(img);
    }
    // render always hands the image over with a request that asks for it
    let wm = settings.watermark.as_deref().ok_or_else(|| TransformError::Encode("no watermark image".into()))?;
    steps::watermark::apply(img, wm, &opts.watermark, opts.dpr)
}

/// The per-image work for a plan already on the stored grid.
fn job(stored: &Plan, orientation: Orientation, opts: &Options, format: Format) -> Job {
    let (c, r) = (stored.crop, stored.result);
    // Source pixels per scaled pixel.
    let kx = f64::from(c.w) / f64::from(stored.scaled_w);
    let ky = f64::from(c.h) / f64::from(stored.scaled_h);
    let region = Region {
        x: f64::from(c.x) + f64::from(r.x) * kx,
        y: f64::from(c.y) + f64::from(r.y) * ky,
        w: f64::from(r.w) * kx,
        h: f64::from(r.h) * ky,
        out_w: r.w,
        out_h: r.h,
    };
    let positive = |v: f64| if v.is_finite() && v > 0.0 { v as f32 } else { 0.0 };
    Job {
        src: (stored.src_w, stored.src_h),
        region: Some(region),
        orientation,
        // imgproxy applies these as given, at output scale (not × dpr).
        blur: positive(opts.blur),
        sharpen: positive(opts.sharpen),
        pixelate: opts.pixelate,
        canvas: stored.has_canvas().then_some(stored.canvas),
        fill: canvas_fill(opts.background, format),
        flatten: flatten_onto(opts.background, format),
    }
}

/// Added canvas area: the background colour when given, else transparent where the
/// format has alpha, else white (what flattening would make of transparent).
fn canvas_fill(background: Option<Rgb>, format: Format) -> [u8; 4] {
    match background {
        Some(Rgb(r, g, b)) => [r, g, b, 255],
        None if format.has_alpha() => [0, 0, 0, 0],
        None => [255, 255, 255, 255],
    }
}

/// imgproxy flattens whenever `bg` is given, whatever the format, and onto white when
/// the format has no alpha.
fn flatten_onto(background: Option<Rgb>, format: Format) -> Option<Rgb> {
    match background {
        Some(bg) => Some(bg),
        None if format.has_alpha() => None,
        None => Some(Rgb(255, 255, 255)),
    }
}

/// Crops `img` (stored orientation, full size) to what trim leaves. Trim options speak
/// of the displayed image, so equal-sides flags swap with the axes and the default
/// colour is the displayed top-left pixel.
fn trim_border(img: &mut Pixels, trim: &crate::options::Trim, o: Orientation) -> Result<(), TransformError> {
    let (equal_hor, equal_ver) =
        if o.swaps_dims() { (trim.equal_ver, trim.equal_hor) } else { (trim.equal_hor, trim.equal_ver) };
    let color = trim.color.or_else(|| {
        if o == Orientation::Normal {
            return None;
        }
        let (dw, dh) = o.display_dims(img.width, img.height);
        let at = o.rect_to_stored(Rect { x: 0, y: 0, w: 1, h: 1 }, img.width, img.height);
        debug_assert!(dw >= 1 && dh >= 1);
        pixel_rgb(img, at.x, at.y)
    });
    let Some(r) = steps::trim::bounds(img, trim.threshold, color, equal_hor, equal_ver) else {
        return Ok(());
    };
    steps::crop::crop_in_place(img, r)
}

/// The colour of one pixel, `None` when it is fully transparent (trim then uses its own
/// default, which treats transparency as border anyway).
fn pixel_rgb(img: &Pixels, x: u32, y: u32) -> Option<Rgb> {
    let n = img.channels.count();
    let at = (y as usize * img.width as usize + x as usize) * n;
    let px = img.data().get(at..at + n)?;
    if img.channels.has_alpha() && px[n - 1] == 0 {
        return None;
    }
    Some(match n {
        1 | 2 => Rgb(px[0], px[0], px[0]),
        _ => Rgb(px[0], px[1], px[2]),
    })
}

/// Replaces the centred placeholders of `g:sm` crops by positions found on the decoded
/// pixels (`img`, which may be a shrunk version of the stored source).
fn resolve_smart(stored: &mut Plan, img: &Pixels) -> Result<(), TransformError> {
    if !stored.smart_crop && !stored.smart_result {
        return Ok(());
    }
    let fx = f64::from(img.width) / f64::from(stored.src_w);
    let fy = f64::from(img.height) / f64::from(stored.src_h);
    let to_img = |v: u32, f: f64, max: u32| ((f64::from(v) * f).round() as u32).clamp(1, max);
    if stored.smart_crop {
        let c = &mut stored.crop;
        let (x, y) = steps::smart::position(img, to_img(c.w, fx, img.width), to_img(c.h, fy, img.height));
        c.x = ((f64::from(x) / fx).round() as u32).min(stored.src_w - c.w);
        c.y = ((f64::from(y) / fy).round() as u32).min(stored.src_h - c.h);
    }
    if stored.smart_result {
        let c = stored.crop;
        // The cropped source region on the decoded grid.
        let left = ((f64::from(c.x) * fx).round() as u32).min(img.width - 1);
        let top = ((f64::from(c.y) * fy).round() as u32).min(img.height - 1);
        let sub = Rect { x: left, y: top, w: to_img(c.w, fx, img.width - left), h: to_img(c.h, fy, img.height - top) };
        // Decoded pixels per scaled pixel.
        let kx = f64::from(sub.w) / f64::from(stored.scaled_w);
        let ky = f64::from(sub.h) / f64::from(stored.scaled_h);
        let r = &mut stored.result;
        let (ww, wh) = (to_img(r.w, kx, sub.w), to_img(r.h, ky, sub.h));
        let (x, y) = if sub == (Rect { x: 0, y: 0, w: img.width, h: img.height }) {
            steps::smart::position(img, ww, wh)
        } else {
            steps::smart::position(&steps::crop::copy_rect(img, sub)?, ww, wh)
        };
        r.x = ((f64::from(x) / kx).round() as u32).min(stored.scaled_w - r.w);
        r.y = ((f64::from(y) / ky).round() as u32).min(stored.scaled_h - r.h);
    }
    Ok(())
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
