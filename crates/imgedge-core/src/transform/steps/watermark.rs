//! Draws the watermark on the finished image (after canvas and flatten, as imgproxy's
//! last step), so it always costs one pass over the small result, never over the source.
//!
//! imgproxy's arithmetic (`processing/watermark.go`, `calc_position.go`): with a scale the
//! watermark is fitted (enlarging allowed) into `scale` × the result's width and height,
//! each rounded half to even; a position places it by gravity with offsets in pixels × dpr
//! (|v| ≥ 1) or in fractions of the result (|v| < 1), east and south offsets pointing
//! inwards, partly outside allowed; `re` pads the watermark by the offsets (half before,
//! half after) and tiles it from the centre (an odd count each way, as libvips'
//! `replicate` centred). The watermark's alpha is multiplied by the opacity and composited
//! OVER the image.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::options::{GravityType, Watermark, WatermarkPosition};
use crate::transform::decode;
use crate::transform::pixels::{Channels, Pixels};
use crate::transform::TransformError;

/// A decoded watermark: RGBA with straight alpha, shared between renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkImage {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl WatermarkImage {
    /// Decodes a watermark under the same pixel limit as a source. Its EXIF orientation
    /// and colour profile are not applied: a watermark is a logo made for the purpose.
    pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<WatermarkImage, TransformError> {
        let h = decode::read_header(bytes)?;
        decode::check_pixels(&h, max_pixels)?;
        let img = decode::decode(bytes, &h, 1)?;
        let n = img.channels.count();
        let mut rgba = Vec::with_capacity(img.width as usize * img.height as usize * 4);
        for p in img.data().chunks_exact(n) {
            rgba.extend_from_slice(&match n {
                1 => [p[0], p[0], p[0], 255],
                2 => [p[0], p[0], p[0], p[1]],
                3 => [p[0], p[1], p[2], 255],
                _ => [p[0], p[1], p[2], p[3]],
            });
        }
        Ok(WatermarkImage { width: img.width, height: img.height, rgba })
    }

    /// A watermark from RGBA pixels (tests and benchmarks).
    pub fn from_rgba(width: u32, height: u32, rgba: Vec<u8>) -> Result<WatermarkImage, TransformError> {
        Pixels::new(width, height, Channels::Rgba, rgba.clone())?;
        Ok(WatermarkImage { width, height, rgba })
    }

    pub fn dims(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Memory held, for the caller's cache bound.
    pub fn byte_len(&self) -> usize {
        self.rgba.len()
    }
}

/// Go's `math.RoundToEven` on a product, as imgproxy's `imath.ScaleToEven`.
fn scale_to_even(a: i64, scale: f64) -> i64 {
    (a as f64 * scale).round_ties_even() as i64
}

/// An offset in pixels: × dpr when |v| ≥ 1, else a fraction of `size`.
fn offset(v: f64, size: i64, dpr: f64) -> i64 {
    if v.abs() >= 1.0 {
        (v * dpr).round_ties_even() as i64
    } else {
        scale_to_even(size, v)
    }
}

fn fir_err(e: impl std::fmt::Display) -> TransformError {
    TransformError::Encode(format!("watermark resize: {e}"))
}

/// Lanczos3 on premultiplied alpha, as the main resize.
fn resize(wm: &WatermarkImage, w: u32, h: u32) -> Result<WatermarkImage, TransformError> {
    let mut src_buf = wm.rgba.clone();
    let mul_div = MulDiv::default();
    let mut src = Image::from_slice_u8(wm.width, wm.height, &mut src_buf, PixelType::U8x4).map_err(fir_err)?;
    mul_div.multiply_alpha_inplace(&mut src).map_err(fir_err)?;
    let src = ImageRef::new(wm.width, wm.height, &src_buf, PixelType::U8x4).map_err(fir_err)?;
    let mut dst = Image::from_vec_u8(w, h, vec![0u8; w as usize * h as usize * 4], PixelType::U8x4).map_err(fir_err)?;
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(false);
    Resizer::new().resize(&src, &mut dst, &options).map_err(fir_err)?;
    mul_div.divide_alpha_inplace(&mut dst).map_err(fir_err)?;
    Ok(WatermarkImage { width: w, height: h, rgba: dst.into_vec() })
}

/// The watermark's size after `scale` (fit into the scaled box, enlarging allowed).
pub(crate) fn scaled_dims(wm: (u32, u32), img: (u32, u32), scale: f64) -> (u32, u32) {
    if scale <= 0.0 {
        return wm;
    }
    let bw = scale_to_even(i64::from(img.0), scale).max(1) as f64;
    let bh = scale_to_even(i64::from(img.1), scale).max(1) as f64;
    let (ww, wh) = (f64::from(wm.0), f64::from(wm.1));
    let ratio = (bw / ww).min(bh / wh);
    let dim = |v: f64| ((v * ratio).round() as u32).max(1);
    (dim(ww), dim(wh))
}

/// Top-left corner of a `wm`-sized watermark on an `img`-sized image (imgproxy's
/// `calcPosition` with overflow allowed).
pub(crate) fn position(img: (u32, u32), wm: (u32, u32), o: &Watermark, dpr: f64) -> (i64, i64) {
    let (w, h) = (i64::from(img.0), i64::from(img.1));
    let (ww, wh) = (i64::from(wm.0), i64::from(wm.1));
    let (ox, oy) = (offset(o.x_offset, w, dpr), offset(o.y_offset, h, dpr));
    let half = |a: i64| (a as f64 / 2.0).round_ties_even() as i64;
    let mut left = half(w - ww + 1) + ox;
    let mut top = half(h - wh + 1) + oy;
    use GravityType::*;
    let g = o.position.gravity();
    if matches!(g, North | NorthEast | NorthWest) {
        top = oy;
    }
    if matches!(g, East | NorthEast | SouthEast) {
        left = w - ww - ox;
    }
    if matches!(g, South | SouthEast | SouthWest) {
        top = h - wh - oy;
    }
    if matches!(g, West | NorthWest | SouthWest) {
        left = ox;
    }
    (left.clamp(-ww + 1, w - 1), top.clamp(-wh + 1, h - 1))
}

/// Composites the watermark onto `img`; grey images become colour first (the
/// watermark has colour).
pub(crate) fn apply(img: Pixels, wm: &WatermarkImage, o: &Watermark, dpr: f64) -> Result<Pixels, TransformError> {
    if !o.enabled() {
        return Ok(img);
    }
    let mut img = to_colour(img)?;
    let (nw, nh) = scaled_dims(wm.dims(), (img.width, img.height), o.scale);
    let scaled;
    let wm = if (nw, nh) != wm.dims() {
        scaled = resize(wm, nw, nh)?;
        &scaled
    } else {
        wm
    };
    let opacity = o.opacity.clamp(0.0, 1.0) as f32;
    let (w, h) = (i64::from(img.width), i64::from(img.height));
    let (ww, wh) = (i64::from(wm.width), i64::from(wm.height));
    let n = img.channels.count();
    let stride = img.stride();
    let data = img.data_mut();
    let wm_px = |x: i64, y: i64| {
        let i = (y * ww + x) as usize * 4;
        &wm.rgba[i..i + 4]
    };
    if o.position == WatermarkPosition::Replicate {
        let pad_x = offset(o.x_offset, w, dpr).max(0);
        let pad_y = offset(o.y_offset, h, dpr).max(0);
        let (tw, th) = (ww + pad_x, wh + pad_y);
        let odd = |c: i64| if c % 2 == 0 { c + 1 } else { c };
        let across = odd((w + tw - 1) / tw);
        let down = odd((h + th - 1) / th);
        let (x0, y0) = ((across * tw - w) / 2, (down * th - h) / 2);
        for y in 0..h {
            let ty = (y + y0) % th - pad_y / 2;
            if !(0..wh).contains(&ty) {
                continue;
            }
            let row = &mut data[y as usize * stride..(y as usize + 1) * stride];
            for x in 0..w {
                let tx = (x + x0) % tw - pad_x / 2;
                if (0..ww).contains(&tx) {
                    blend(&mut row[x as usize * n..x as usize * n + n], wm_px(tx, ty), opacity);
                }
            }
        }
    } else {
        let (left, top) = position((w as u32, h as u32), (wm.width, wm.height), o, dpr);
        for y in top.max(0)..(top + wh).min(h) {
            let row = &mut data[y as usize * stride..(y as usize + 1) * stride];
            for x in left.max(0)..(left + ww).min(w) {
                blend(&mut row[x as usize * n..x as usize * n + n], wm_px(x - left, y - top), opacity);
            }
        }
    }
    Ok(img)
}

/// `src` (RGBA, straight alpha) with its alpha × `opacity` OVER `dst` (RGB or RGBA).
#[inline]
fn blend(dst: &mut [u8], src: &[u8], opacity: f32) {
    let a = f32::from(src[3]) * opacity / 255.0;
    if a <= 0.0 {
        return;
    }
    if dst.len() == 3 {
        for c in 0..3 {
            dst[c] = (f32::from(src[c]) * a + f32::from(dst[c]) * (1.0 - a)).round() as u8;
        }
        return;
    }
    let ab = f32::from(dst[3]) / 255.0;
    let ao = a + ab * (1.0 - a);
    for c in 0..3 {
        dst[c] = ((f32::from(src[c]) * a + f32::from(dst[c]) * ab * (1.0 - a)) / ao).round().min(255.0) as u8;
    }
    dst[3] = (ao * 255.0).round() as u8;
}

/// Grey → RGB, grey+alpha → RGBA; colour images as they are.
fn to_colour(img: Pixels) -> Result<Pixels, TransformError> {
    let to = match img.channels {
        Channels::Gray => Channels::Rgb,
        Channels::GrayAlpha => Channels::Rgba,
        _ => return Ok(img),
    };
    let mut out = Vec::with_capacity(img.width as usize * img.height as usize * to.count());
    for p in img.data().chunks_exact(img.channels.count()) {
        out.extend_from_slice(&[p[0], p[0], p[0]]);
        if let Some(a) = p.get(1) {
            out.push(*a);
        }
    }
    Pixels::new(img.width, img.height, to, out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wm(position: &str, x: f64, y: f64, scale: f64) -> Watermark {
        Watermark {
            opacity: 1.0,
            position: WatermarkPosition::parse(position).unwrap(),
            x_offset: x,
            y_offset: y,
            scale,
            source: None,
        }
    }

    #[test]
    fn positions_follow_imgproxy() {
        let (img, mark) = ((400, 300), (100, 50));
        let at = |p: &str, x: f64, y: f64| position(img, mark, &wm(p, x, y, 0.0), 1.0);
        // half of 301 and of 251, rounded half to even
        assert_eq!(at("ce", 0.0, 0.0), (150, 126));
        assert_eq!(at("nowe", 0.0, 0.0), (0, 0));
        assert_eq!(at("soea", 0.0, 0.0), (300, 250));
        assert_eq!(at("no", 0.0, 0.0), (150, 0));
        assert_eq!(at("we", 0.0, 0.0), (0, 126));
        // east and south offsets point inwards
        assert_eq!(at("soea", 10.0, 20.0), (290, 230));
        assert_eq!(at("nowe", 10.0, 20.0), (10, 20));
        // fractions of the result
        assert_eq!(at("nowe", 0.1, 0.5), (40, 150));
        // dpr scales pixel offsets
        assert_eq!(position(img, mark, &wm("nowe", 10.0, 0.0, 0.0), 2.0), (20, 0));
        // mostly outside is clamped to one visible pixel
        assert_eq!(at("nowe", 1000.0, -1000.0), (399, -49));
    }

    #[test]
    fn scale_fits_into_the_scaled_result() {
        assert_eq!(scaled_dims((100, 50), (400, 300), 0.0), (100, 50));
        assert_eq!(scaled_dims((100, 50), (400, 300), 0.5), (200, 100));
        // limited by height: box 40x30 → 60x30 would overflow width 40 → 40x20
        assert_eq!(scaled_dims((100, 50), (400, 300), 0.1), (40, 20));
    }

    #[test]
    fn opacity_blends_and_keeps_alpha_right() {
        let mut rgb = [0u8, 0, 0];
        blend(&mut rgb, &[255, 255, 255, 255], 0.5);
        assert_eq!(rgb, [128, 128, 128]);
        let mut clear = [10u8, 20, 30, 0];
        blend(&mut clear, &[200, 100, 50, 255], 0.5);
        assert_eq!(clear, [200, 100, 50, 128]);
        let mut untouched = [1u8, 2, 3];
        blend(&mut untouched, &[255, 255, 255, 0], 1.0);
        assert_eq!(untouched, [1, 2, 3]);
    }
}
