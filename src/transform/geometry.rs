//! Pure resize arithmetic: where the output comes from and how big it is. No pixels here.
//!
//! Follows imgproxy's `calcScale` / `cropToResult` / `calcPosition` (processing/prepare.go,
//! crop.go, calc_position.go), restricted to the options we have (no zoom, extend, min
//! sizes or user crop). All sizes are in display (EXIF-oriented) space; [`Plan::to_stored`]
//! maps a plan back onto the stored pixel grid.

use crate::options::{Gravity, GravityType, Options, ResizingType};

use super::TransformError;

/// EXIF orientation (tag 0x0112), values 1–8. Names say what must be done to the
/// stored pixels to display them upright.
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

impl Orientation {
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

    /// Whether width and height trade places on display.
    pub(crate) fn swaps_dims(self) -> bool {
        (self as u8) >= 5
    }

    /// Display size of a stored `(w, h)` image.
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

/// What to make of a source: scale the whole image to `scaled_w × scaled_h`, then keep
/// `crop` of it. The output is `crop.w × crop.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) scaled_w: u32,
    pub(crate) scaled_h: u32,
    pub(crate) crop: Rect,
}

impl Plan {
    pub(crate) fn out_dims(&self) -> (u32, u32) {
        (self.crop.w, self.crop.h)
    }

    /// Whether the crop keeps the whole scaled image.
    pub(crate) fn is_uncropped(&self) -> bool {
        self.crop == Rect { x: 0, y: 0, w: self.scaled_w, h: self.scaled_h }
    }

    /// The same plan expressed on the stored pixel grid of an image with orientation `o`.
    pub(crate) fn to_stored(self, o: Orientation) -> Plan {
        let (sw, sh) = o.display_dims(self.scaled_w, self.scaled_h);
        Plan { scaled_w: sw, scaled_h: sh, crop: o.rect_to_stored(self.crop, sw, sh) }
    }
}

/// imgproxy's `imath.Scale`/`Round`: round half away from zero, never below 1.
fn round_px(v: f64) -> u32 {
    // `as` saturates, so absurd values end up at u32::MAX and fail the size check.
    (v.round() as u32).max(1)
}

/// Computes the plan for a display-space source of `src_w × src_h`.
///
/// dpr: for dpr >= 1 this is exactly imgproxy (without `enlarge` the effective dpr
/// drops until no upscaling is needed, keeping the requested box's aspect ratio for
/// fill). For dpr < 1 imgproxy can return more than the dpr-scaled box; here the
/// effective dpr never exceeds the requested one, so the output always fits
/// `round(width × dpr) × round(height × dpr)`.
pub(crate) fn plan(src_w: u32, src_h: u32, opts: &Options, max_result_dim: u32) -> Result<Plan, TransformError> {
    if src_w == 0 || src_h == 0 {
        return Err(TransformError::Decode("image has no pixels".into()));
    }
    let dpr = if opts.dpr.is_finite() && opts.dpr > 0.0 { opts.dpr } else { 1.0 };

    // Cheap check first: the requested box alone may already be over the limit.
    for requested in [opts.width, opts.height] {
        if requested > 0 {
            let px = round_px(f64::from(requested) * dpr);
            if px > max_result_dim {
                return Err(TransformError::ResultTooLarge(px, max_result_dim));
            }
        }
    }

    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    let (wshrink, hshrink, box_scale) = calc_scale(sw, sh, opts, dpr);
    let scaled_w = round_px(sw / wshrink);
    let scaled_h = round_px(sh / hshrink);

    // cropToResult: the box at the effective dpr, clamped to the scaled image.
    let mut rw = if opts.width > 0 { round_px(f64::from(opts.width) * box_scale) } else { 0 };
    let mut rh = if opts.height > 0 { round_px(f64::from(opts.height) * box_scale) } else { 0 };
    if opts.resizing_type == ResizingType::FillDown && rw > 0 && rh > 0 {
        let diff_w = f64::from(rw) / f64::from(scaled_w);
        let diff_h = f64::from(rh) / f64::from(scaled_h);
        if diff_w > diff_h && diff_w > 1.0 {
            rh = round_px(f64::from(scaled_w) * f64::from(rh) / f64::from(rw));
            rw = scaled_w;
        } else if diff_h > diff_w && diff_h > 1.0 {
            rw = round_px(f64::from(scaled_h) * f64::from(rw) / f64::from(rh));
            rh = scaled_h;
        }
    }
    let cw = if rw == 0 { scaled_w } else { rw.min(scaled_w) };
    let ch = if rh == 0 { scaled_h } else { rh.min(scaled_h) };
    let (x, y) = if cw >= scaled_w && ch >= scaled_h {
        (0, 0)
    } else {
        calc_position(scaled_w, scaled_h, cw, ch, &opts.gravity, box_scale)
    };

    let biggest = cw.max(ch);
    if biggest > max_result_dim {
        return Err(TransformError::ResultTooLarge(biggest, max_result_dim));
    }
    Ok(Plan { scaled_w, scaled_h, crop: Rect { x, y, w: cw, h: ch } })
}

/// Returns (width shrink, height shrink, box scale): the source is divided by the
/// shrinks; the requested box is multiplied by the box scale (the effective dpr).
fn calc_scale(sw: f64, sh: f64, o: &Options, dpr: f64) -> (f64, f64, f64) {
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

    let box_scale = if o.enlarge {
        dpr
    } else {
        // imgproxy: dpr drops to what the source can deliver, but never below 1 just
        // because the source is smaller than the box (then the box is clamped instead).
        dpr.min(wshrink.min(hshrink).max(1.0))
    };
    wshrink /= box_scale;
    hshrink /= box_scale;
    if !o.enlarge {
        let min_shrink = wshrink.min(hshrink);
        if min_shrink < 1.0 {
            wshrink /= min_shrink;
            hshrink /= min_shrink;
        }
    }
    // At least one pixel survives.
    (wshrink.min(sw), hshrink.min(sh), box_scale)
}

/// imgproxy's `calcPosition` for compass gravity: offsets >= 1 are pixels (times the
/// effective dpr), smaller ones a fraction of the image size; the box stays inside.
fn calc_position(width: u32, height: u32, inner_w: u32, inner_h: u32, g: &Gravity, dpr: f64) -> (u32, u32) {
    let offset = |v: f64, size: u32| -> i64 {
        if !v.is_finite() {
            0
        } else if v.abs() >= 1.0 {
            (v * dpr).round_ties_even() as i64
        } else {
            (f64::from(size) * v).round_ties_even() as i64
        }
    };
    let (w, h, iw, ih) = (i64::from(width), i64::from(height), i64::from(inner_w), i64::from(inner_h));
    let off_x = offset(g.x_offset, width);
    let off_y = offset(g.y_offset, height);

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
    let left = left.clamp(0, (w - iw).max(0));
    let top = top.clamp(0, (h - ih).max(0));
    // Both are within 0..=u32::MAX after the clamp.
    (left as u32, top as u32)
}

/// JPEG shrink-on-load factor N ∈ {1, 2, 4, 8} (decode at 1/N), libvips rule: the
/// largest N that still leaves at least 2× the target size for the final resize in
/// both dimensions. `(src_w, src_h)` and `(dst_w, dst_h)` are on the same (stored) grid.
pub(crate) fn jpeg_shrink(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> u32 {
    if dst_w == 0 || dst_h == 0 {
        return 1;
    }
    let shrink = (f64::from(src_w) / f64::from(dst_w)).min(f64::from(src_h) / f64::from(dst_h));
    [8, 4, 2].into_iter().find(|&n| shrink >= f64::from(2 * n)).unwrap_or(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts(rt: ResizingType, w: u32, h: u32) -> Options {
        Options { resizing_type: rt, width: w, height: h, ..Options::default() }
    }

    fn out(src: (u32, u32), o: &Options) -> (u32, u32) {
        plan(src.0, src.1, o, 8192).unwrap().out_dims()
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
        assert_eq!(p.crop, Rect { x: 67, y: 0, w: 400, h: 400 });
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
        let g = |kind, x, y| Gravity { kind, x_offset: x, y_offset: y };
        let mut o = opts(ResizingType::Fill, 100, 100);
        let at = |o: &Options| {
            let p = plan(400, 200, o, 8192).unwrap();
            (p.crop.x, p.crop.y)
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
    }

    #[test]
    fn limits() {
        let o = opts(ResizingType::Fit, 9000, 0);
        assert_eq!(plan(600, 400, &o, 8192), Err(TransformError::ResultTooLarge(9000, 8192)));
        // Implicit size (no resize requested) over the limit.
        let o = opts(ResizingType::Fit, 0, 0);
        assert_eq!(plan(10000, 100, &o, 8192), Err(TransformError::ResultTooLarge(10000, 8192)));
    }

    #[test]
    fn shrink_on_load_rule() {
        assert_eq!(jpeg_shrink(4000, 3000, 400, 300), 4);
        assert_eq!(jpeg_shrink(4000, 3000, 1200, 900), 1);
        assert_eq!(jpeg_shrink(4000, 3000, 200, 150), 8);
        // 3000 / 188 < 16: not quite enough for 1/8.
        assert_eq!(jpeg_shrink(4000, 3000, 250, 188), 4);
        assert_eq!(jpeg_shrink(4000, 3000, 1000, 750), 2);
        assert_eq!(jpeg_shrink(4000, 3000, 4000, 10), 1);
        assert_eq!(jpeg_shrink(600, 400, 600, 400), 1);
    }

    #[test]
    fn rect_mapping_matches_orientation() {
        // Display 3×2 from a stored 2×3 (rotated) image, and 3×2 stored for flips.
        let r = Rect { x: 1, y: 0, w: 2, h: 1 };
        assert_eq!(Orientation::Rotate90.rect_to_stored(r, 2, 3), Rect { x: 0, y: 0, w: 1, h: 2 });
        assert_eq!(Orientation::Rotate270.rect_to_stored(r, 2, 3), Rect { x: 1, y: 1, w: 1, h: 2 });
        assert_eq!(Orientation::FlipH.rect_to_stored(r, 3, 2), Rect { x: 0, y: 0, w: 2, h: 1 });
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
        ];
        (kinds, -500.0..500.0f64, -1.0..1.0f64).prop_map(|(kind, x, y)| Gravity { kind, x_offset: x, y_offset: y })
    }

    proptest! {
        #[test]
        fn output_is_never_empty_nor_over_the_limits(
            src_w in 1u32..20_000,
            src_h in 1u32..20_000,
            width in prop_oneof![Just(0u32), 1u32..10_000],
            height in prop_oneof![Just(0u32), 1u32..10_000],
            dpr in prop_oneof![Just(1.0f64), 0.1f64..5.0],
            enlarge in any::<bool>(),
            resizing_type in any_type(),
            gravity in any_gravity(),
            max_dim in 1u32..10_000,
        ) {
            let o = Options { resizing_type, width, height, dpr, enlarge, gravity, ..Options::default() };
            match plan(src_w, src_h, &o, max_dim) {
                Ok(p) => {
                    let (ow, oh) = p.out_dims();
                    prop_assert!(ow >= 1 && oh >= 1);
                    prop_assert!(ow <= max_dim && oh <= max_dim);
                    prop_assert!(p.crop.x + p.crop.w <= p.scaled_w);
                    prop_assert!(p.crop.y + p.crop.h <= p.scaled_h);
                    if width > 0 {
                        prop_assert!(ow <= round_px(f64::from(width) * dpr), "{ow} > box {width}×{dpr}");
                    }
                    if height > 0 {
                        prop_assert!(oh <= round_px(f64::from(height) * dpr), "{oh} > box {height}×{dpr}");
                    }
                    if !enlarge {
                        prop_assert!(p.scaled_w <= src_w && p.scaled_h <= src_h);
                    }
                    // The stored-space plan is the same rectangle, rotated.
                    for v in 1..=8 {
                        let o = Orientation::from_exif(v);
                        let s = p.to_stored(o);
                        prop_assert!(s.crop.x + s.crop.w <= s.scaled_w);
                        prop_assert!(s.crop.y + s.crop.h <= s.scaled_h);
                        prop_assert_eq!(s.crop.w * s.crop.h, p.crop.w * p.crop.h);
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
