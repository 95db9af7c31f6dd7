//! Pure geometry: where the output comes from and how big it is. No pixels here.
//!
//! Follows imgproxy's `CalcParams` (processing/prepare.go: `calcScale`, `calcSizes`,
//! `limitScale`), `crop.go`, `extend.go`, `padding.go` and `calc_position.go`. All sizes
//! are in the *final* orientation (EXIF, then `rot`, then `fl`), as in imgproxy where
//! `w`/`h`, crops and gravities all refer to the image as finally displayed;
//! [`Plan::to_stored`] maps a plan back onto the stored pixel grid so that only the
//! small result is ever rotated.

use crate::options::{Crop, Gravity, GravityType, Options, ResizingType};

use super::TransformError;

/// EXIF orientation (tag 0x0112), values 1–8. Names say what must be done to the
/// stored pixels to display them upright. The eight values are exactly the symmetries
/// of a rectangle (the dihedral group D4), so any sequence of EXIF orientation, `rot`
/// and `fl` collapses into one of them ([`Orientation::compose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Orientation {
    #[default]
    Normal = 1,
    FlipH = 2,
    Rotate180 = 3,
    FlipV = 4,
    Transpose = 5,
    Rotate90 = 6,
    Transverse = 7,
    Rotate270 = 8,
}

/// A 2×2 signed permutation matrix acting on pixel coordinates centred on the image
/// (x right, y down): `display = M · stored`.
type Matrix = [[i8; 2]; 2];

impl Orientation {
    const ALL: [Orientation; 8] = [
        Orientation::Normal,
        Orientation::FlipH,
        Orientation::Rotate180,
        Orientation::FlipV,
        Orientation::Transpose,
        Orientation::Rotate90,
        Orientation::Transverse,
        Orientation::Rotate270,
    ];

    /// Unknown or out-of-range values mean "as stored", as browsers do.
    pub(crate) fn from_exif(v: u32) -> Orientation {
        match v {
            2 => Orientation::FlipH,
            3 => Orientation::Rotate180,
            4 => Orientation::FlipV,
            5 => Orientation::Transpose,
            6 => Orientation::Rotate90,
            7 => Orientation::Transverse,
            8 => Orientation::Rotate270,
            _ => Orientation::Normal,
        }
    }

    fn matrix(self) -> Matrix {
        match self {
            Orientation::Normal => [[1, 0], [0, 1]],
            Orientation::FlipH => [[-1, 0], [0, 1]],
            Orientation::Rotate180 => [[-1, 0], [0, -1]],
            Orientation::FlipV => [[1, 0], [0, -1]],
            Orientation::Transpose => [[0, 1], [1, 0]],
            // Clockwise: the top-left corner (-1, -1) goes to the top-right (1, -1).
            Orientation::Rotate90 => [[0, -1], [1, 0]],
            Orientation::Transverse => [[0, -1], [-1, 0]],
            Orientation::Rotate270 => [[0, 1], [-1, 0]],
        }
    }

    /// `self` first, then `next`.
    pub(crate) fn then(self, next: Orientation) -> Orientation {
        let (a, b) = (next.matrix(), self.matrix());
        let mut m = [[0i8; 2]; 2];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = a[i][0] * b[0][j] + a[i][1] * b[1][j];
            }
        }
        // The product of two signed permutation matrices is one of the eight.
        Orientation::ALL.into_iter().find(|o| o.matrix() == m).unwrap_or_default()
    }

    /// The single orientation equal to: the EXIF orientation (unless `ar:0`), then
    /// `rot` degrees clockwise, then the `fl` mirrors — imgproxy's `rotateAndFlip` order.
    pub(crate) fn compose(exif: Orientation, opts: &Options) -> Orientation {
        let base = if opts.auto_rotate { exif } else { Orientation::Normal };
        let rot = match opts.rotate % 360 {
            90 => Orientation::Rotate90,
            180 => Orientation::Rotate180,
            270 => Orientation::Rotate270,
            _ => Orientation::Normal,
        };
        let mut o = base.then(rot);
        if opts.flip_horizontal {
            o = o.then(Orientation::FlipH);
        }
        if opts.flip_vertical {
            o = o.then(Orientation::FlipV);
        }
        o
    }

    /// Whether width and height trade places on display.
    pub(crate) fn swaps_dims(self) -> bool {
        (self as u8) >= 5
    }

    /// Display size of a stored `(w, h)` image (and, the swap being its own inverse,
    /// stored size of a displayed one).
    pub(crate) fn display_dims(self, w: u32, h: u32) -> (u32, u32) {
        if self.swaps_dims() {
            (h, w)
        } else {
            (w, h)
        }
    }

    /// Maps a rectangle given in display space onto the stored image, whose stored
    /// size is `(sw, sh)`. Inverse of the per-pixel mapping in `steps::orient`.
    pub(crate) fn rect_to_stored(self, r: Rect, sw: u32, sh: u32) -> Rect {
        let Rect { x, y, w, h } = r;
        match self {
            Orientation::Normal => r,
            Orientation::FlipH => Rect { x: sw - x - w, y, w, h },
            Orientation::Rotate180 => Rect { x: sw - x - w, y: sh - y - h, w, h },
            Orientation::FlipV => Rect { x, y: sh - y - h, w, h },
            Orientation::Transpose => Rect { x: y, y: x, w: h, h: w },
            Orientation::Rotate90 => Rect { x: y, y: sh - x - w, w: h, h: w },
            Orientation::Transverse => Rect { x: sw - y - h, y: sh - x - w, w: h, h: w },
            Orientation::Rotate270 => Rect { x: sw - y - h, y: x, w: h, h: w },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) w: u32,
    pub(crate) h: u32,
}

impl Rect {
    fn whole(w: u32, h: u32) -> Rect {
        Rect { x: 0, y: 0, w, h }
    }
}

/// The final canvas (`ex`, `exar`, `pd`): `w × h`, with the image at (`x`, `y`).
/// Always in the final orientation: it is applied after orienting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Canvas {
    pub(crate) w: u32,
    pub(crate) h: u32,
    pub(crate) x: u32,
    pub(crate) y: u32,
}

/// What to make of a `src_w × src_h` source: cut `crop` out of it (`c`), scale that to
/// `scaled_w × scaled_h`, keep `result` of it (the fill crop), then place the result
/// on `canvas`. The output is `canvas.w × canvas.h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    pub(crate) src_w: u32,
    pub(crate) src_h: u32,
    pub(crate) crop: Rect,
    /// `crop`'s position is still to be found on the pixels (`g:sm`); until then it is
    /// centred.
    pub(crate) smart_crop: bool,
    pub(crate) scaled_w: u32,
    pub(crate) scaled_h: u32,
    pub(crate) result: Rect,
    /// Same as `smart_crop`, for `result`.
    pub(crate) smart_result: bool,
    pub(crate) canvas: Canvas,
    /// The dpr actually used (it drops when the source cannot deliver the requested
    /// one); imgproxy scales gravity offsets and padding by it.
    pub(crate) dpr_scale: f64,
}

impl Plan {
    /// Size of the output.
    pub(crate) fn out_dims(&self) -> (u32, u32) {
        (self.canvas.w, self.canvas.h)
    }

    /// Size of the image before it is placed on the canvas.
    pub(crate) fn image_dims(&self) -> (u32, u32) {
        (self.result.w, self.result.h)
    }

    /// Whether the canvas adds anything around the image.
    pub(crate) fn has_canvas(&self) -> bool {
        (self.canvas.w, self.canvas.h) != self.image_dims()
    }

    /// The same plan with the source crop and the fill crop expressed on the stored
    /// pixel grid of an image shown with orientation `o`. The canvas stays as it is
    /// (final orientation).
    pub(crate) fn to_stored(self, o: Orientation) -> Plan {
        let (sw, sh) = o.display_dims(self.src_w, self.src_h);
        let (scw, sch) = o.display_dims(self.scaled_w, self.scaled_h);
        Plan {
            src_w: sw,
            src_h: sh,
            crop: o.rect_to_stored(self.crop, sw, sh),
            scaled_w: scw,
            scaled_h: sch,
            result: o.rect_to_stored(self.result, scw, sch),
            ..self
        }
    }
}

/// imgproxy's `imath.Scale`/`Round` (half away from zero), never below 1.
fn round_px(v: f64) -> u32 {
    // `as` saturates (NaN → 0), so absurd values end up at u32::MAX and fail the
    // size check.
    (v.round() as u32).max(1)
}

/// imgproxy's `imath.ScaleToEven` (ties to even), 0 stays 0.
fn scale_to_even(a: u32, scale: f64) -> u32 {
    (f64::from(a) * scale).round_ties_even() as u32
}

/// imgproxy's `CalcCropSize`: 0 = whole, >= 1 pixels (truncated), else a fraction of
/// `orig`; clamped to `orig` (`imath.MinNonZero` in `cropImage`).
fn crop_size(orig: u32, v: f64) -> u32 {
    let px = if !v.is_finite() || v <= 0.0 {
        0
    } else if v >= 1.0 {
        v as u32
    } else {
        round_px(f64::from(orig) * v)
    };
    if px == 0 {
        orig
    } else {
        px.min(orig)
    }
}

fn positive_or_one(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        1.0
    }
}

/// Computes the plan for a source of `src_w × src_h` in the final orientation.
///
/// dpr: for dpr >= 1 this is exactly imgproxy (without `enlarge` the effective dpr
/// drops until no upscaling is needed, keeping the requested box's aspect ratio for
/// fill). For dpr < 1 imgproxy can return more than the dpr-scaled box; here the
/// effective dpr never exceeds the requested one, so the image (before `ex`/`pd`)
/// always fits `round(width × dpr × zoom) × round(height × dpr × zoom)`.
///
/// A final size over `max_result_dim` (including extend and padding) is
/// `ResultTooLarge`; imgproxy instead scales the result down to fit.
pub(crate) fn plan(src_w: u32, src_h: u32, opts: &Options, max_result_dim: u32) -> Result<Plan, TransformError> {
    if src_w == 0 || src_h == 0 {
        return Err(TransformError::Decode("image has no pixels".into()));
    }
    let dpr = positive_or_one(opts.dpr);
    let (zoom_x, zoom_y) = (positive_or_one(opts.zoom_x), positive_or_one(opts.zoom_y));

    // Cheap check first: the requested box alone may already be over the limit.
    for (requested, zoom) in [(opts.width, zoom_x), (opts.height, zoom_y)] {
        if requested > 0 {
            let px = round_px(f64::from(requested) * dpr * zoom);
            if px > max_result_dim {
                return Err(TransformError::ResultTooLarge(px, max_result_dim));
            }
        }
    }

    let (crop, smart_crop) = user_crop(src_w, src_h, opts.crop, opts.gravity);
    let (cw, ch) = (f64::from(crop.w), f64::from(crop.h));
    let (wshrink, hshrink, dpr_scale) = calc_scale(cw, ch, opts, dpr, zoom_x, zoom_y);
    let scaled_w = round_px(cw * (1.0 / wshrink));
    let scaled_h = round_px(ch * (1.0 / hshrink));

    // calcSizes: the requested box at the effective dpr (0 = unconstrained).
    let target_w = if opts.width > 0 { round_px(f64::from(opts.width) * dpr_scale * zoom_x) } else { 0 };
    let target_h = if opts.height > 0 { round_px(f64::from(opts.height) * dpr_scale * zoom_y) } else { 0 };
    let (mut rw, mut rh) = (target_w, target_h);
    if opts.resizing_type == ResizingType::FillDown && !opts.enlarge && rw > 0 && rh > 0 {
        // The box shrinks to the image, keeping its aspect ratio.
        let diff_w = f64::from(rw) / f64::from(scaled_w);
        let diff_h = f64::from(rh) / f64::from(scaled_h);
        if diff_w > diff_h && diff_w > 1.0 {
            rh = round_px(f64::from(scaled_w) * f64::from(target_h) / f64::from(target_w));
            rw = scaled_w;
        } else if diff_h > diff_w && diff_h > 1.0 {
            rw = round_px(f64::from(scaled_h) * f64::from(target_w) / f64::from(target_h));
            rh = scaled_h;
        }
    }

    // cropToResult.
    let rw = if rw == 0 { scaled_w } else { rw.min(scaled_w) };
    let rh = if rh == 0 { scaled_h } else { rh.min(scaled_h) };
    let (result, smart_result) = place(scaled_w, scaled_h, rw, rh, opts.gravity, dpr_scale);

    // extend, extend_aspect_ratio, padding: one canvas, offsets accumulate.
    let mut canvas = Canvas { w: rw, h: rh, x: 0, y: 0 };
    if opts.extend.enabled {
        let (w, h) = (target_w.max(rw), target_h.max(rh));
        grow(&mut canvas, w, h, opts.extend.gravity.unwrap_or_default(), dpr_scale);
    }
    if opts.extend_aspect_ratio.enabled && target_w > 0 && target_h > 0 {
        let diff_w = f64::from(target_w) / f64::from(rw);
        let diff_h = f64::from(target_h) / f64::from(rh);
        let (w, h) = if diff_h > diff_w {
            (rw, round_px(f64::from(rw) * f64::from(target_h) / f64::from(target_w)))
        } else if diff_w > diff_h {
            (round_px(f64::from(rh) * f64::from(target_w) / f64::from(target_h)), rh)
        } else {
            (rw, rh)
        };
        grow(&mut canvas, w, h, opts.extend_aspect_ratio.gravity.unwrap_or_default(), dpr_scale);
    }
    let pad = opts.padding;
    let (pt, pr, pb, pl) = (
        scale_to_even(pad.top, dpr_scale),
        scale_to_even(pad.right, dpr_scale),
        scale_to_even(pad.bottom, dpr_scale),
        scale_to_even(pad.left, dpr_scale),
    );
    let full_w = u64::from(canvas.w) + u64::from(pl) + u64::from(pr);
    let full_h = u64::from(canvas.h) + u64::from(pt) + u64::from(pb);
    let biggest = full_w.max(full_h);
    if biggest > u64::from(max_result_dim) {
        return Err(TransformError::ResultTooLarge(u32::try_from(biggest).unwrap_or(u32::MAX), max_result_dim));
    }
    // Both fit in u32 now (<= max_result_dim), and so do the offsets inside them.
    let canvas = Canvas { w: full_w as u32, h: full_h as u32, x: canvas.x + pl, y: canvas.y + pt };

    Ok(Plan { src_w, src_h, crop, smart_crop, scaled_w, scaled_h, result, smart_result, canvas, dpr_scale })
}

/// The `c` crop in source pixels (whole source when absent); gravity offsets are not
/// scaled by dpr, as in imgproxy.
fn user_crop(src_w: u32, src_h: u32, crop: Option<Crop>, request_gravity: Gravity) -> (Rect, bool) {
    let Some(c) = crop else {
        return (Rect::whole(src_w, src_h), false);
    };
    let (w, h) = (crop_size(src_w, c.width), crop_size(src_h, c.height));
    place(src_w, src_h, w, h, c.gravity.unwrap_or(request_gravity), 1.0)
}

/// A `w × h` window in a `width × height` image by gravity; smart gravity yields the
/// centred window and `true` (to be refined on the pixels).
fn place(width: u32, height: u32, w: u32, h: u32, g: Gravity, dpr: f64) -> (Rect, bool) {
    if w >= width && h >= height {
        return (Rect::whole(width, height), false);
    }
    let smart = g.kind == GravityType::Smart;
    let g = if smart { Gravity::default() } else { g };
    let (x, y) = calc_position(width, height, w, h, &g, dpr);
    (Rect { x, y, w, h }, smart)
}

/// imgproxy's `extendImage`: grows `c` to at least `w × h`, placing the current
/// content by gravity.
fn grow(c: &mut Canvas, w: u32, h: u32, g: Gravity, dpr: f64) {
    let (w, h) = (w.max(c.w), h.max(c.h));
    if (w, h) == (c.w, c.h) {
        return;
    }
    let (x, y) = calc_position(w, h, c.w, c.h, &g, dpr);
    *c = Canvas { w, h, x: c.x + x, y: c.y + y };
}

/// imgproxy's `calcScale` (prepare.go). Returns (width shrink, height shrink, effective
/// dpr): the source is divided by the shrinks; the requested box is multiplied by the
/// effective dpr.
fn calc_scale(sw: f64, sh: f64, o: &Options, dpr: f64, zoom_x: f64, zoom_y: f64) -> (f64, f64, f64) {
    let dst_w = if o.width == 0 { sw } else { f64::from(o.width) };
    let dst_h = if o.height == 0 { sh } else { f64::from(o.height) };
    let mut wshrink = if dst_w == sw { 1.0 } else { sw / dst_w };
    let mut hshrink = if dst_h == sh { 1.0 } else { sh / dst_h };

    if wshrink != 1.0 || hshrink != 1.0 {
        let rt = match o.resizing_type {
            ResizingType::Auto => {
                // Same orientation (both landscape/square or both portrait) → fill.
                if (sw - sh >= 0.0) == (dst_w - dst_h >= 0.0) {
                    ResizingType::Fill
                } else {
                    ResizingType::Fit
                }
            }
            rt => rt,
        };
        if o.width == 0 && rt != ResizingType::Force {
            wshrink = hshrink;
        } else if o.height == 0 && rt != ResizingType::Force {
            hshrink = wshrink;
        } else if rt == ResizingType::Fit {
            wshrink = wshrink.max(hshrink);
            hshrink = wshrink;
        } else if matches!(rt, ResizingType::Fill | ResizingType::FillDown) {
            wshrink = wshrink.min(hshrink);
            hshrink = wshrink;
        }
    }

    wshrink /= zoom_x;
    hshrink /= zoom_y;

    // Without `enlarge` the dpr drops to what the source can deliver, but not below 1
    // just because the source is smaller than the box (the box is clamped instead).
    // For dpr >= 1 this is imgproxy's value; for dpr < 1 imgproxy divides the dpr by
    // the missing enlargement first, which can exceed the requested dpr.
    let dpr_scale = if o.enlarge { dpr } else { dpr.min(wshrink.min(hshrink).max(1.0)) };
    wshrink /= dpr_scale;
    hshrink /= dpr_scale;
    if !o.enlarge {
        let min_shrink = wshrink.min(hshrink);
        if min_shrink < 1.0 {
            wshrink /= min_shrink;
            hshrink /= min_shrink;
        }
    }

    // Minimum sizes (at the effective dpr) win over the box and over `enlarge`; the
    // other side follows.
    if o.min_width > 0 {
        let min_shrink = sw / (f64::from(o.min_width) * dpr_scale);
        if min_shrink < wshrink {
            hshrink /= wshrink / min_shrink;
            wshrink = min_shrink;
        }
    }
    if o.min_height > 0 {
        let min_shrink = sh / (f64::from(o.min_height) * dpr_scale);
        if min_shrink < hshrink {
            wshrink /= hshrink / min_shrink;
            hshrink = min_shrink;
        }
    }

    // At least one pixel survives.
    (wshrink.min(sw), hshrink.min(sh), dpr_scale)
}

/// imgproxy's `calcPosition`: where an `inner_w × inner_h` box goes inside
/// `width × height`. Compass gravity offsets >= 1 are pixels (times `dpr`), smaller
/// ones a fraction of the size; a focus point (`fp`, fractions of the size) is kept as
/// close to the box's centre as possible. The box stays inside.
fn calc_position(width: u32, height: u32, inner_w: u32, inner_h: u32, g: &Gravity, dpr: f64) -> (u32, u32) {
    let (w, h, iw, ih) = (i64::from(width), i64::from(height), i64::from(inner_w), i64::from(inner_h));
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let (gx, gy) = (finite(g.x_offset), finite(g.y_offset));
    let (left, top) = if g.kind == GravityType::FocusPoint {
        let px = (w as f64 * gx).round_ties_even() as i64;
        let py = (h as f64 * gy).round_ties_even() as i64;
        (px - iw / 2, py - ih / 2)
    } else {
        let offset = |v: f64, size: i64| -> i64 {
            if v.abs() >= 1.0 {
                (v * dpr).round_ties_even() as i64
            } else {
                (size as f64 * v).round_ties_even() as i64
            }
        };
        let (off_x, off_y) = (offset(gx, w), offset(gy, h));
        let centre = |outer: i64, inner: i64| ((outer - inner + 1) as f64 / 2.0).round_ties_even() as i64;
        let mut left = centre(w, iw) + off_x;
        let mut top = centre(h, ih) + off_y;
        use GravityType as G;
        if matches!(g.kind, G::North | G::NorthEast | G::NorthWest) {
            top = off_y;
        }
        if matches!(g.kind, G::East | G::NorthEast | G::SouthEast) {
            left = w - iw - off_x;
        }
        if matches!(g.kind, G::South | G::SouthEast | G::SouthWest) {
            top = h - ih - off_y;
        }
        if matches!(g.kind, G::West | G::NorthWest | G::SouthWest) {
            left = off_x;
        }
        (left, top)
    };
    let left = left.clamp(0, (w - iw).max(0));
    let top = top.clamp(0, (h - ih).max(0));
    // Both are within 0..=u32::MAX after the clamp.
    (left as u32, top as u32)
}

/// JPEG shrink-on-load factor N ∈ {1, 2, 4, 8} (decode at 1/N): the largest N that
/// still leaves at least the target size in both dimensions (imgproxy's
/// `calcJpegShink` and sharp's fast shrink-on-load; Lanczos3 does the rest).
/// `(src_w, src_h)` → `(dst_w, dst_h)` is the scaling of one region, on the stored grid.
pub(crate) fn jpeg_shrink(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> u32 {
    if dst_w == 0 || dst_h == 0 {
        return 1;
    }
    let shrink = (f64::from(src_w) / f64::from(dst_w)).min(f64::from(src_h) / f64::from(dst_h));
    [8, 4, 2].into_iter().find(|&n| shrink >= f64::from(n)).unwrap_or(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::options::{Extend, Padding};
    use crate::transform::pixels::{Channels, Pixels};
    use crate::transform::steps::orient;
    use proptest::prelude::*;

    fn opts(rt: ResizingType, w: u32, h: u32) -> Options {
        Options { resizing_type: rt, width: w, height: h, ..Options::default() }
    }

    fn out(src: (u32, u32), o: &Options) -> (u32, u32) {
        plan(src.0, src.1, o, 8192).unwrap().out_dims()
    }

    fn g(kind: GravityType, x: f64, y: f64) -> Gravity {
        Gravity { kind, x_offset: x, y_offset: y }
    }

    fn on() -> Extend {
        Extend { enabled: true, gravity: None }
    }

    #[test]
    fn fit_keeps_aspect_inside_box() {
        assert_eq!(out((4000, 3000), &opts(ResizingType::Fit, 400, 0)), (400, 300));
        assert_eq!(out((4000, 3000), &opts(ResizingType::Fit, 0, 300)), (400, 300));
        assert_eq!(out((4000, 3000), &opts(ResizingType::Fit, 400, 400)), (400, 300));
        assert_eq!(out((3000, 4000), &opts(ResizingType::Fit, 400, 400)), (300, 400));
        // 600×400 → 333.33 rounds to 333.
        assert_eq!(out((600, 400), &opts(ResizingType::Fit, 500, 222)), (333, 222));
        assert_eq!(out((600, 400), &opts(ResizingType::Fit, 0, 0)), (600, 400));
    }

    #[test]
    fn no_upscale_without_enlarge() {
        assert_eq!(out((600, 400), &opts(ResizingType::Fit, 1200, 0)), (600, 400));
        let mut o = opts(ResizingType::Fit, 1200, 0);
        o.enlarge = true;
        assert_eq!(out((600, 400), &o), (1200, 800));
        // Fill without enlarge: the crop box is clamped to the image.
        assert_eq!(out((300, 200), &opts(ResizingType::Fill, 400, 400)), (300, 200));
        // Fill-down instead shrinks the box keeping its aspect ratio.
        assert_eq!(out((300, 200), &opts(ResizingType::FillDown, 400, 400)), (200, 200));
        assert_eq!(out((300, 200), &opts(ResizingType::FillDown, 600, 300)), (300, 150));
    }

    #[test]
    fn fill_force_auto() {
        assert_eq!(out((4000, 3000), &opts(ResizingType::Fill, 400, 400)), (400, 400));
        let p = plan(4000, 3000, &opts(ResizingType::Fill, 400, 400), 8192).unwrap();
        assert_eq!((p.scaled_w, p.scaled_h), (533, 400));
        assert_eq!(p.result, Rect { x: 67, y: 0, w: 400, h: 400 });
        assert_eq!(p.crop, Rect { x: 0, y: 0, w: 4000, h: 3000 });
        assert!(!p.has_canvas());
        assert_eq!(out((4000, 3000), &opts(ResizingType::Force, 400, 400)), (400, 400));
        assert_eq!(out((4000, 3000), &opts(ResizingType::Force, 100, 500)), (100, 500));
        // Auto: both landscape → fill; landscape box on portrait source → fit.
        assert_eq!(out((4000, 3000), &opts(ResizingType::Auto, 400, 200)), (400, 200));
        assert_eq!(out((3000, 4000), &opts(ResizingType::Auto, 400, 200)), (150, 200));
    }

    #[test]
    fn dpr_multiplies_the_box() {
        let mut o = opts(ResizingType::Fit, 400, 0);
        o.dpr = 2.0;
        assert_eq!(out((4000, 3000), &o), (800, 600));
        // Not enough pixels for 2×: effective dpr drops, aspect of the box is kept.
        let mut o = opts(ResizingType::Fill, 400, 400);
        o.dpr = 2.0;
        assert_eq!(out((600, 400), &o), (400, 400));
        o.enlarge = true;
        assert_eq!(out((600, 400), &o), (800, 800));
        // dpr < 1 never returns more than the scaled box.
        let mut o = opts(ResizingType::Fill, 1000, 500);
        o.dpr = 0.5;
        assert_eq!(out((800, 800), &o), (500, 250));
    }

    #[test]
    fn gravity_positions() {
        let mut o = opts(ResizingType::Fill, 100, 100);
        let at = |o: &Options| {
            let p = plan(400, 200, o, 8192).unwrap();
            (p.result.x, p.result.y)
        };
        // Scaled to 200×100, 100×100 box.
        o.gravity = g(GravityType::West, 0.0, 0.0);
        assert_eq!(at(&o), (0, 0));
        o.gravity = g(GravityType::East, 0.0, 0.0);
        assert_eq!(at(&o), (100, 0));
        o.gravity = g(GravityType::Center, 0.0, 0.0);
        assert_eq!(at(&o), (50, 0));
        o.gravity = g(GravityType::West, 10.0, 0.0);
        assert_eq!(at(&o), (10, 0));
        o.gravity = g(GravityType::East, 0.25, 0.0);
        assert_eq!(at(&o), (50, 0));
        // Offsets never push the box outside the image.
        o.gravity = g(GravityType::West, 1000.0, 0.0);
        assert_eq!(at(&o), (100, 0));
        o.gravity = g(GravityType::Center, -1000.0, f64::NAN);
        assert_eq!(at(&o), (0, 0));
        // Focus point: as close to the box centre as the image allows.
        o.gravity = g(GravityType::FocusPoint, 0.6, 0.5);
        assert_eq!(at(&o), (70, 0));
        o.gravity = g(GravityType::FocusPoint, 0.9, 0.5);
        assert_eq!(at(&o), (100, 0));
        o.gravity = g(GravityType::FocusPoint, 0.1, 0.5);
        assert_eq!(at(&o), (0, 0));
        // Smart: centred for now, flagged for the pixels to decide.
        o.gravity = g(GravityType::Smart, 0.0, 0.0);
        assert_eq!(at(&o), (50, 0));
        assert!(plan(400, 200, &o, 8192).unwrap().smart_result);
        // Pixel offsets are scaled by the effective dpr.
        let mut o = opts(ResizingType::Fill, 100, 100);
        o.dpr = 2.0;
        o.gravity = g(GravityType::West, 10.0, 0.0);
        let p = plan(800, 400, &o, 8192).unwrap();
        assert_eq!((p.scaled_w, p.result.x, p.result.w), (400, 20, 200));
    }

    #[test]
    fn user_crop_happens_before_scaling() {
        let crop = |w, h, gravity| Some(Crop { width: w, height: h, gravity });
        let mut o = opts(ResizingType::Fit, 500, 0);
        o.crop = crop(1000.0, 500.0, None);
        let p = plan(4000, 3000, &o, 8192).unwrap();
        assert_eq!(p.crop, Rect { x: 1500, y: 1250, w: 1000, h: 500 });
        assert_eq!(p.out_dims(), (500, 250));
        // Fractions of the source; 0 = the whole dimension.
        o.crop = crop(0.5, 0.0, Some(g(GravityType::NorthWest, 0.0, 0.0)));
        let p = plan(4000, 3000, &o, 8192).unwrap();
        assert_eq!(p.crop, Rect { x: 0, y: 0, w: 2000, h: 3000 });
        assert_eq!(p.out_dims(), (500, 750));
        // Without its own gravity the crop uses the request's; offsets are not × dpr.
        let mut o = Options { crop: crop(100.0, 100.0, None), dpr: 3.0, ..Options::default() };
        o.gravity = g(GravityType::SouthEast, 10.0, 20.0);
        let p = plan(400, 300, &o, 8192).unwrap();
        assert_eq!(p.crop, Rect { x: 290, y: 180, w: 100, h: 100 });
        // Bigger than the source: no crop.
        o.crop = crop(5000.0, 5000.0, None);
        assert_eq!(plan(400, 300, &o, 8192).unwrap().crop, Rect { x: 0, y: 0, w: 400, h: 300 });
        o.crop = crop(100.0, 100.0, Some(g(GravityType::Smart, 0.0, 0.0)));
        assert!(plan(400, 300, &o, 8192).unwrap().smart_crop);
    }

    #[test]
    fn extend_and_padding_sizes() {
        // rs:fill:300:300/ex:1/pd:10: the filled image plus 10 px all round.
        let mut o = opts(ResizingType::Fill, 300, 300);
        o.extend = on();
        o.padding = Padding { top: 10, right: 10, bottom: 10, left: 10 };
        let p = plan(4000, 3000, &o, 8192).unwrap();
        assert_eq!(p.out_dims(), (320, 320));
        assert_eq!(p.image_dims(), (300, 300));
        assert_eq!((p.canvas.x, p.canvas.y), (10, 10));

        // Fit leaves room, extend fills it, centred by default.
        let mut o = opts(ResizingType::Fit, 300, 300);
        o.extend = on();
        let p = plan(4000, 3000, &o, 8192).unwrap();
        assert_eq!((p.image_dims(), p.out_dims()), ((300, 225), (300, 300)));
        assert_eq!((p.canvas.x, p.canvas.y), (0, 38));
        o.extend.gravity = Some(g(GravityType::South, 0.0, 0.0));
        let p = plan(4000, 3000, &o, 8192).unwrap();
        assert_eq!((p.canvas.x, p.canvas.y), (0, 75));

        // A small source without enlarge sits in the middle of the requested box.
        let mut o = opts(ResizingType::Fit, 400, 400);
        o.extend = on();
        let p = plan(200, 100, &o, 8192).unwrap();
        assert_eq!((p.image_dims(), p.out_dims()), ((200, 100), (400, 400)));
        assert_eq!((p.canvas.x, p.canvas.y), (100, 150));
        // ... at the effective dpr (1 here: the source cannot deliver 2×).
        o.dpr = 2.0;
        assert_eq!(out((200, 100), &o), (400, 400));
        o.enlarge = true;
        assert_eq!(out((200, 100), &o), (800, 800));

        // Width only: nothing to extend to vertically.
        let mut o = opts(ResizingType::Fit, 500, 0);
        o.extend = on();
        assert_eq!(out((200, 100), &o), (500, 100));

        // exar: the aspect ratio of the box, without growing to its size.
        let mut o = opts(ResizingType::Fit, 400, 200);
        o.extend_aspect_ratio = on();
        let p = plan(4000, 4000, &o, 8192).unwrap();
        assert_eq!((p.image_dims(), p.out_dims()), ((200, 200), (400, 200)));
        assert_eq!((p.canvas.x, p.canvas.y), (100, 0));
        let p = plan(100, 100, &o, 8192).unwrap();
        assert_eq!((p.image_dims(), p.out_dims()), ((100, 100), (200, 100)));

        // Padding is CSS-ordered and scaled by the dpr (ties to even).
        let mut o = opts(ResizingType::Fit, 100, 0);
        o.dpr = 2.0;
        o.padding = Padding { top: 1, right: 2, bottom: 3, left: 4 };
        let p = plan(1000, 500, &o, 8192).unwrap();
        assert_eq!((p.image_dims(), p.out_dims()), ((200, 100), (212, 108)));
        assert_eq!((p.canvas.x, p.canvas.y), (8, 2));
    }

    #[test]
    fn zoom_and_min_sizes() {
        let mut o = opts(ResizingType::Fit, 400, 0);
        o.zoom_x = 0.5;
        o.zoom_y = 0.5;
        assert_eq!(out((4000, 3000), &o), (200, 150));
        // Zoom without a box scales the source.
        let o = Options { zoom_x: 0.25, zoom_y: 0.5, ..Options::default() };
        assert_eq!(out((4000, 3000), &o), (1000, 1500));
        // Min width wins over the height; the box still crops (imgproxy).
        let mut o = opts(ResizingType::Fit, 0, 100);
        o.min_width = 400;
        assert_eq!(out((4000, 3000), &o), (400, 100));
        // Min sizes enlarge even without `enlarge`.
        let o = Options { min_width: 400, ..Options::default() };
        assert_eq!(out((200, 100), &o), (400, 200));
        let o = Options { min_height: 300, ..Options::default() };
        assert_eq!(out((200, 100), &o), (600, 300));
        let o = Options { min_width: 100, ..Options::default() };
        assert_eq!(out((200, 100), &o), (200, 100));
    }

    #[test]
    fn limits() {
        let o = opts(ResizingType::Fit, 9000, 0);
        assert_eq!(plan(600, 400, &o, 8192), Err(TransformError::ResultTooLarge(9000, 8192)));
        // Implicit size (no resize requested) over the limit.
        let o = opts(ResizingType::Fit, 0, 0);
        assert_eq!(plan(10000, 100, &o, 8192), Err(TransformError::ResultTooLarge(10000, 8192)));
        // The final size counts: padding and extension included.
        let mut o = opts(ResizingType::Fit, 1000, 0);
        o.padding = Padding { left: 50, ..Padding::default() };
        assert_eq!(plan(4000, 3000, &o, 1024), Err(TransformError::ResultTooLarge(1050, 1024)));
        // exar never grows past the box, which is already checked.
        let mut o = opts(ResizingType::Fit, 1024, 10);
        o.extend_aspect_ratio = on();
        assert_eq!(plan(4000, 3000, &o, 1024).unwrap().out_dims(), (1024, 10));
        // Min sizes count too.
        let o = Options { min_width: 2000, ..Options::default() };
        assert_eq!(plan(1000, 100, &o, 1024), Err(TransformError::ResultTooLarge(2000, 1024)));
    }

    #[test]
    fn shrink_on_load_rule() {
        assert_eq!(jpeg_shrink(4000, 3000, 400, 300), 8);
        assert_eq!(jpeg_shrink(4000, 3000, 500, 375), 8);
        assert_eq!(jpeg_shrink(4000, 3000, 501, 376), 4);
        assert_eq!(jpeg_shrink(4000, 3000, 1200, 900), 2);
        assert_eq!(jpeg_shrink(4000, 3000, 2001, 1501), 1);
        assert_eq!(jpeg_shrink(4000, 3000, 4000, 10), 1);
        assert_eq!(jpeg_shrink(600, 400, 600, 400), 1);
        assert_eq!(jpeg_shrink(600, 400, 0, 400), 1);
    }

    #[test]
    fn rect_mapping_matches_orientation() {
        // Display 3×2 from a stored 2×3 (rotated) image, and 3×2 stored for flips.
        let r = Rect { x: 1, y: 0, w: 2, h: 1 };
        assert_eq!(Orientation::Rotate90.rect_to_stored(r, 2, 3), Rect { x: 0, y: 0, w: 1, h: 2 });
        assert_eq!(Orientation::Rotate270.rect_to_stored(r, 2, 3), Rect { x: 1, y: 1, w: 1, h: 2 });
        assert_eq!(Orientation::FlipH.rect_to_stored(r, 3, 2), Rect { x: 0, y: 0, w: 2, h: 1 });
    }

    #[test]
    fn composition_examples() {
        use Orientation as O;
        let o = |exif, rotate, fh, fv, ar| {
            let opts =
                Options { rotate, flip_horizontal: fh, flip_vertical: fv, auto_rotate: ar, ..Options::default() };
            O::compose(exif, &opts)
        };
        assert_eq!(o(O::Normal, 90, false, false, true), O::Rotate90);
        assert_eq!(o(O::Rotate90, 90, false, false, true), O::Rotate180);
        assert_eq!(o(O::Rotate90, 270, false, false, true), O::Normal);
        assert_eq!(o(O::Rotate90, 0, false, false, false), O::Normal);
        assert_eq!(o(O::Rotate90, 0, false, false, false), O::Normal);
        assert_eq!(o(O::Normal, 0, true, true, true), O::Rotate180);
        // EXIF 5 is "rotate 90, then mirror" (imgproxy's angle/flip split).
        assert_eq!(O::Rotate90.then(O::FlipH), O::Transpose);
        assert_eq!(O::Rotate270.then(O::FlipH), O::Transverse);
        for a in O::ALL {
            assert_eq!(a.then(O::Normal), a);
            // Every element has an inverse.
            assert!(O::ALL.iter().any(|&b| a.then(b) == O::Normal));
        }
    }

    /// A `w × h` grey image whose pixel values are all different.
    fn numbered(w: u32, h: u32) -> Pixels {
        Pixels::new(w, h, Channels::Gray, (0..(w * h) as u8).collect()).unwrap()
    }

    fn same(a: &Pixels, b: &Pixels) -> bool {
        (a.width, a.height) == (b.width, b.height) && a.data() == b.data()
    }

    fn cut(img: &Pixels, r: Rect) -> Pixels {
        let mut v = Vec::new();
        for y in r.y..r.y + r.h {
            let at = (y * img.width + r.x) as usize;
            v.extend_from_slice(&img.data()[at..at + r.w as usize]);
        }
        Pixels::new(r.w, r.h, Channels::Gray, v).unwrap()
    }

    proptest! {
        #[test]
        fn composite_orientation_is_exif_then_rot_then_flip(
            exif in 1u32..=8,
            rotate in prop_oneof![Just(0u16), Just(90), Just(180), Just(270)],
            flip_horizontal in any::<bool>(),
            flip_vertical in any::<bool>(),
            auto_rotate in any::<bool>(),
            w in 1u32..5,
            h in 1u32..5,
        ) {
            let img = numbered(w, h);
            let exif = Orientation::from_exif(exif);
            let o = Options { rotate, flip_horizontal, flip_vertical, auto_rotate, ..Options::default() };
            let mut step = if auto_rotate { orient::apply(&img, exif).unwrap() } else { numbered(w, h) };
            let rot = match rotate { 90 => Orientation::Rotate90, 180 => Orientation::Rotate180,
                                     270 => Orientation::Rotate270, _ => Orientation::Normal };
            step = orient::apply(&step, rot).unwrap();
            if flip_horizontal {
                step = orient::apply(&step, Orientation::FlipH).unwrap();
            }
            if flip_vertical {
                step = orient::apply(&step, Orientation::FlipV).unwrap();
            }
            let once = orient::apply(&img, Orientation::compose(exif, &o)).unwrap();
            prop_assert!(same(&step, &once));
        }

        #[test]
        fn display_rect_maps_onto_the_same_stored_pixels(
            exif in 1u32..=8,
            w in 1u32..6,
            h in 1u32..6,
            r in (0u32..6, 0u32..6, 1u32..7, 1u32..7),
        ) {
            let o = Orientation::from_exif(exif);
            let img = numbered(w, h);
            let shown = orient::apply(&img, o).unwrap();
            let (dw, dh) = (shown.width, shown.height);
            let x = r.0 % dw;
            let y = r.1 % dh;
            let rect = Rect { x, y, w: r.2.min(dw - x), h: r.3.min(dh - y) };
            let stored = o.rect_to_stored(rect, w, h);
            let via_stored = orient::apply(&cut(&img, stored), o).unwrap();
            prop_assert!(same(&cut(&shown, rect), &via_stored));
        }
    }

    fn any_type() -> impl Strategy<Value = ResizingType> {
        prop_oneof![
            Just(ResizingType::Fit),
            Just(ResizingType::Fill),
            Just(ResizingType::FillDown),
            Just(ResizingType::Force),
            Just(ResizingType::Auto),
        ]
    }

    fn any_gravity() -> impl Strategy<Value = Gravity> {
        let kinds = prop_oneof![
            Just(GravityType::Center),
            Just(GravityType::North),
            Just(GravityType::South),
            Just(GravityType::East),
            Just(GravityType::West),
            Just(GravityType::NorthEast),
            Just(GravityType::NorthWest),
            Just(GravityType::SouthEast),
            Just(GravityType::SouthWest),
            Just(GravityType::FocusPoint),
            Just(GravityType::Smart),
        ];
        (kinds, -500.0..500.0f64, -1.0..1.0f64).prop_map(|(kind, x, y)| Gravity { kind, x_offset: x, y_offset: y })
    }

    fn any_crop() -> impl Strategy<Value = Option<Crop>> {
        let size = prop_oneof![Just(0.0f64), 0.01f64..1.0, 1.0f64..30_000.0];
        prop_oneof![
            Just(None),
            (size.clone(), size, proptest::option::of(any_gravity())).prop_map(|(width, height, gravity)| Some(Crop {
                width,
                height,
                gravity
            })),
        ]
    }

    fn any_extend() -> impl Strategy<Value = Extend> {
        (any::<bool>(), proptest::option::of(any_gravity())).prop_map(|(enabled, gravity)| Extend { enabled, gravity })
    }

    fn any_padding() -> impl Strategy<Value = Padding> {
        let side = prop_oneof![Just(0u32), 1u32..3000];
        (side.clone(), side.clone(), side.clone(), side).prop_map(|(top, right, bottom, left)| Padding {
            top,
            right,
            bottom,
            left,
        })
    }

    fn any_size() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), 1u32..10_000]
    }

    fn any_zoom() -> impl Strategy<Value = f64> {
        prop_oneof![Just(1.0f64), 0.01f64..10.0]
    }

    prop_compose! {
        fn any_options()(
            (resizing_type, width, height, min_width, min_height) in
                (any_type(), any_size(), any_size(), any_size(), any_size()),
            (zoom_x, zoom_y, dpr, enlarge) in (any_zoom(), any_zoom(), prop_oneof![Just(1.0f64), 0.1f64..5.0],
                any::<bool>()),
            (gravity, crop, extend, extend_aspect_ratio, padding) in
                (any_gravity(), any_crop(), any_extend(), any_extend(), any_padding()),
        ) -> Options {
            Options { resizing_type, width, height, min_width, min_height, zoom_x, zoom_y, dpr, enlarge, gravity,
                      crop, extend, extend_aspect_ratio, padding, ..Options::default() }
        }
    }

    proptest! {
        #[test]
        fn output_is_never_empty_nor_over_the_limits(
            src_w in 1u32..20_000,
            src_h in 1u32..20_000,
            o in any_options(),
            max_dim in 1u32..10_000,
        ) {
            match plan(src_w, src_h, &o, max_dim) {
                Ok(p) => {
                    let (ow, oh) = p.out_dims();
                    prop_assert!(ow >= 1 && oh >= 1);
                    prop_assert!(ow <= max_dim && oh <= max_dim);
                    let c = p.crop;
                    prop_assert!(c.w >= 1 && c.h >= 1 && c.x + c.w <= src_w && c.y + c.h <= src_h);
                    let r = p.result;
                    prop_assert!(r.w >= 1 && r.h >= 1 && r.x + r.w <= p.scaled_w && r.y + r.h <= p.scaled_h);
                    prop_assert!(p.canvas.x + r.w <= ow && p.canvas.y + r.h <= oh);
                    let (iw, ih) = p.image_dims();
                    if o.width > 0 {
                        let bw = round_px(f64::from(o.width) * o.dpr * o.zoom_x);
                        prop_assert!(iw <= bw, "{iw} > box {}×{}×{}", o.width, o.dpr, o.zoom_x);
                    }
                    if o.height > 0 {
                        let bh = round_px(f64::from(o.height) * o.dpr * o.zoom_y);
                        prop_assert!(ih <= bh, "{ih} > box {}×{}×{}", o.height, o.dpr, o.zoom_y);
                    }
                    if !o.enlarge && o.min_width == 0 && o.min_height == 0 {
                        prop_assert!(p.scaled_w <= c.w && p.scaled_h <= c.h);
                    }
                    // The stored-space plan is the same rectangles, rotated.
                    for v in 1..=8 {
                        let s = p.to_stored(Orientation::from_exif(v));
                        prop_assert!(s.crop.x + s.crop.w <= s.src_w && s.crop.y + s.crop.h <= s.src_h);
                        prop_assert!(s.result.x + s.result.w <= s.scaled_w);
                        prop_assert!(s.result.y + s.result.h <= s.scaled_h);
                        prop_assert_eq!(s.crop.w * s.crop.h, p.crop.w * p.crop.h);
                        prop_assert_eq!(s.result.w * s.result.h, p.result.w * p.result.h);
                    }
                }
                Err(TransformError::ResultTooLarge(px, max)) => {
                    prop_assert_eq!(max, max_dim);
                    prop_assert!(px > max_dim);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
