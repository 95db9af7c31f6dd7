//! Blur, sharpen and pixelate on the final-size image, in place.
//!
//! Blurring works on a 16-bit copy of the samples in 8.8 fixed point (colour
//! premultiplied by alpha, so transparent pixels do not bleed their hidden colour), with
//! integer kernels: a separable Gaussian for small sigmas and, above [`BOX_FROM`], three
//! successive box blurs whose running sums cost the same for any radius (the
//! approximation of Kovesi, "Fast almost-Gaussian filtering", 2010). Vertical passes run
//! on strips of columns so both passes read memory sequentially.

use crate::transform::pixels::Pixels;
use crate::transform::TransformError;

/// Fixed-point precision of the Gaussian weights.
const SHIFT: u32 = 14;
const ONE: u32 = 1 << SHIFT;
/// Sigmas above this use three box blurs (within a few percent of the Gaussian, and
/// O(1) per sample instead of O(sigma)).
const BOX_FROM: f32 = 8.0;
/// A larger sigma is indistinguishable on any result size we allow; the cap also keeps
/// the box sums inside `u32`.
const MAX_SIGMA: f32 = 1000.0;
/// Samples per vertical strip (a multiple of every channel count).
const STRIP: usize = 96;

/// Gaussian blur with standard deviation `sigma` (> 0) in pixels.
pub(crate) fn blur(img: &mut Pixels, sigma: f32) -> Result<(), TransformError> {
    let Some(fixed) = blurred(img, sigma) else { return Ok(()) };
    let n = img.channels.count();
    let alpha = img.channels.has_alpha();
    for (px, b) in img.data_mut().chunks_exact_mut(n).zip(fixed.chunks_exact(n)) {
        if alpha {
            let a = u64::from(b[n - 1]);
            px[n - 1] = to_u8(b[n - 1]);
            for (o, &c) in px[..n - 1].iter_mut().zip(b) {
                // Un-premultiply: c·a / a, both in 8.8, back to 0..=255.
                *o = (u64::from(c) * 255 + a / 2).checked_div(a).map_or(0, |v| v.min(255) as u8);
            }
        } else {
            for (o, &c) in px.iter_mut().zip(b) {
                *o = to_u8(c);
            }
        }
    }
    Ok(())
}

/// Unsharp mask with a Gaussian of `sigma` (> 0): `out = img + (img − blur(img))` on
/// the colour channels (amount 1, as imgproxy's default), alpha untouched.
pub(crate) fn sharpen(img: &mut Pixels, sigma: f32) -> Result<(), TransformError> {
    let Some(fixed) = blurred(img, sigma) else { return Ok(()) };
    let n = img.channels.count();
    let alpha = img.channels.has_alpha();
    let colours = if alpha { n - 1 } else { n };
    for (px, b) in img.data_mut().chunks_exact_mut(n).zip(fixed.chunks_exact(n)) {
        let a = u64::from(b[n - 1]);
        if alpha && (a == 0 || px[n - 1] == 0) {
            continue;
        }
        for (o, &c) in px[..colours].iter_mut().zip(b) {
            // The blurred colour in 8.8, un-premultiplied when there is alpha.
            let blur = if alpha { (u64::from(c) * 255 * 256 / a) as i64 } else { i64::from(c) };
            let v = 512 * i64::from(*o) - blur;
            *o = ((v + 128) >> 8).clamp(0, 255) as u8;
        }
    }
    Ok(())
}

/// Replaces each `size`×`size` block (from the top-left) by its average (alpha-weighted
/// on images with alpha). Blocks at the right and bottom edges may be smaller.
pub(crate) fn pixelate(img: &mut Pixels, size: u32) -> Result<(), TransformError> {
    if size <= 1 {
        return Ok(());
    }
    let (w, h) = (img.width as usize, img.height as usize);
    let size = (size as usize).min(w.max(h));
    let n = img.channels.count();
    let alpha = img.channels.has_alpha();
    let stride = img.stride();
    let data = img.data_mut();
    for by in (0..h).step_by(size) {
        let rows = by..(by + size).min(h);
        for bx in (0..w).step_by(size) {
            let cols = bx * n..(bx + size).min(w) * n;
            let count = (rows.len() * cols.len() / n) as u64;
            // Colour sums are weighted by alpha when there is one; the last slot sums alpha.
            let mut sum = [0u64; 4];
            for y in rows.clone() {
                for p in data[y * stride..][cols.clone()].chunks_exact(n) {
                    let a = if alpha { u64::from(p[n - 1]) } else { 1 };
                    for (s, &c) in sum.iter_mut().zip(&p[..if alpha { n - 1 } else { n }]) {
                        *s += u64::from(c) * a;
                    }
                    if alpha {
                        sum[3] += a;
                    }
                }
            }
            let mut avg = [0u8; 4];
            if alpha {
                let a = sum[3];
                for (o, &s) in avg[..n - 1].iter_mut().zip(&sum) {
                    *o = (s + a / 2).checked_div(a).map_or(0, |v| v as u8);
                }
                avg[n - 1] = ((a + count / 2) / count) as u8;
            } else {
                for (o, &s) in avg[..n].iter_mut().zip(&sum) {
                    *o = ((s + count / 2) / count) as u8;
                }
            }
            for y in rows.clone() {
                for p in data[y * stride..][cols.clone()].chunks_exact_mut(n) {
                    p.copy_from_slice(&avg[..n]);
                }
            }
        }
    }
    Ok(())
}

fn to_u8(v: u16) -> u8 {
    ((u32::from(v) + 128) >> 8).min(255) as u8
}

/// Blurred samples in 8.8 fixed point, interleaved like `img` (colour premultiplied
/// when there is alpha). `None` when `sigma` asks for no blur.
fn blurred(img: &Pixels, sigma: f32) -> Option<Vec<u16>> {
    if sigma.is_nan() || sigma <= 0.0 {
        return None;
    }
    let sigma = sigma.min(MAX_SIGMA);
    let n = img.channels.count();
    let (w, h) = (img.width as usize, img.height as usize);
    let mut buf: Vec<u16> = Vec::with_capacity(img.data().len());
    if img.channels.has_alpha() {
        for p in img.data().chunks_exact(n) {
            let a = u32::from(p[n - 1]);
            buf.extend(p[..n - 1].iter().map(|&c| ((u32::from(c) * a * 256 + 127) / 255) as u16));
            buf.push((a << 8) as u16);
        }
    } else {
        buf.extend(img.data().iter().map(|&c| u16::from(c) << 8));
    }
    if sigma > BOX_FROM {
        for r in box_radii(sigma) {
            box_rows(&mut buf, w, n, r);
            box_columns(&mut buf, w * n, h, r);
        }
    } else {
        let k = gaussian(sigma);
        gauss_rows(&mut buf, w, n, &k);
        gauss_columns(&mut buf, w * n, h, &k);
    }
    Some(buf)
}

/// Integer Gaussian weights, radius `ceil(3σ)`, summing to exactly [`ONE`].
fn gaussian(sigma: f32) -> Vec<u32> {
    let r = ((3.0 * sigma).ceil() as usize).max(1);
    let f: Vec<f32> = (0..=2 * r)
        .map(|i| {
            let d = i as f32 - r as f32;
            (-d * d / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f32 = f.iter().sum();
    let mut k: Vec<u32> = f.iter().map(|v| (v / total * ONE as f32).round() as u32).collect();
    // Rounding drift goes to the centre tap so flat areas stay exactly flat.
    let sum: u32 = k.iter().sum();
    k[r] = (k[r] + ONE).saturating_sub(sum);
    k
}

/// Radii of three box blurs whose succession has standard deviation ≈ `sigma`.
fn box_radii(sigma: f32) -> [usize; 3] {
    let s2 = 12.0 * sigma * sigma;
    let ideal = (s2 / 3.0 + 1.0).sqrt();
    let mut wl = ideal.floor() as i64;
    if wl % 2 == 0 {
        wl -= 1;
    }
    let wu = wl + 2;
    let wlf = wl as f32;
    let m = ((s2 - 3.0 * wlf * wlf - 12.0 * wlf - 9.0) / (-4.0 * wlf - 4.0)).round() as i64;
    let radius = |i: i64| (((if i < m { wl } else { wu }) - 1) / 2).max(0) as usize;
    [radius(0), radius(1), radius(2)]
}

/// Horizontal Gaussian pass over each row, in place.
fn gauss_rows(buf: &mut [u16], w: usize, n: usize, k: &[u32]) {
    let r = k.len() / 2;
    let stride = w * n;
    let mut line = vec![0u16; (w + 2 * r) * n];
    let mut acc = vec![0u32; stride];
    for row in buf.chunks_exact_mut(stride) {
        // The row with `r` clamped copies of its end pixels on each side.
        line[r * n..(r + w) * n].copy_from_slice(row);
        for i in 0..r {
            line[i * n..i * n + n].copy_from_slice(&row[..n]);
            line[(r + w + i) * n..][..n].copy_from_slice(&row[stride - n..]);
        }
        acc.fill(ONE / 2);
        for (t, &wt) in k.iter().enumerate() {
            for (a, &s) in acc.iter_mut().zip(&line[t * n..t * n + stride]) {
                *a += wt * u32::from(s);
            }
        }
        for (o, &a) in row.iter_mut().zip(&acc) {
            *o = (a >> SHIFT) as u16;
        }
    }
}

/// Vertical Gaussian pass, one strip of columns at a time, in place.
fn gauss_columns(buf: &mut [u16], stride: usize, h: usize, k: &[u32]) {
    let r = k.len() / 2;
    let mut block = vec![0u16; (h + 2 * r) * STRIP];
    let mut acc = vec![0u32; STRIP];
    for s0 in (0..stride).step_by(STRIP) {
        let sw = STRIP.min(stride - s0);
        for i in 0..h + 2 * r {
            let y = i.saturating_sub(r).min(h - 1);
            block[i * sw..i * sw + sw].copy_from_slice(&buf[y * stride + s0..][..sw]);
        }
        for y in 0..h {
            let acc = &mut acc[..sw];
            acc.fill(ONE / 2);
            for (t, &wt) in k.iter().enumerate() {
                for (a, &s) in acc.iter_mut().zip(&block[(y + t) * sw..][..sw]) {
                    *a += wt * u32::from(s);
                }
            }
            for (o, &a) in buf[y * stride + s0..][..sw].iter_mut().zip(acc.iter()) {
                *o = (a >> SHIFT) as u16;
            }
        }
    }
}

/// Box blur of radius `r` (window `2r + 1`, clamp-to-edge) of the `len` samples at
/// `src[i * step]`, written to `dst[i * step]`.
fn box_line(src: &[u16], dst: &mut [u16], step: usize, len: usize, r: usize) {
    let last = len - 1;
    let at = |i: usize| u32::from(src[i.min(last) * step]);
    // Window of sample 0: r + 1 copies of the first sample, then samples 1..=r clamped.
    let mut sum = (r as u32 + 1) * at(0);
    let inside = r.min(last);
    sum += (1..=inside).map(at).sum::<u32>() + (r - inside) as u32 * at(last);
    let div = 2 * r as u32 + 1;
    for i in 0..len {
        dst[i * step] = ((sum + div / 2) / div) as u16;
        // Slide: add the sample entering on the right, drop the one leaving on the left.
        sum = sum + at(i + r + 1) - at(i.saturating_sub(r));
    }
}

fn box_rows(buf: &mut [u16], w: usize, n: usize, r: usize) {
    if r == 0 {
        return;
    }
    let mut line = vec![0u16; w * n];
    for row in buf.chunks_exact_mut(w * n) {
        line.copy_from_slice(row);
        for c in 0..n {
            box_line(&line[c..], &mut row[c..], n, w, r);
        }
    }
}

fn box_columns(buf: &mut [u16], stride: usize, h: usize, r: usize) {
    if r == 0 {
        return;
    }
    let mut block = vec![0u16; h * STRIP];
    let mut out = vec![0u16; h * STRIP];
    for s0 in (0..stride).step_by(STRIP) {
        let sw = STRIP.min(stride - s0);
        for y in 0..h {
            block[y * sw..y * sw + sw].copy_from_slice(&buf[y * stride + s0..][..sw]);
        }
        for c in 0..sw {
            box_line(&block[c..], &mut out[c..], sw, h, r);
        }
        for y in 0..h {
            buf[y * stride + s0..][..sw].copy_from_slice(&out[y * sw..y * sw + sw]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::pixels::testing::{convert, load, solid, ALL};
    use crate::transform::pixels::Channels;

    /// A `w`×`h` image, black left half and white right half, in `channels`.
    fn step_edge(w: u32, h: u32, channels: Channels) -> Pixels {
        let n = channels.count();
        let mut data = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                let v = if x < w / 2 { 0 } else { 255 };
                let mut px = [v, v, v, 255];
                if n == 2 {
                    px[1] = 255;
                }
                data.extend_from_slice(&px[..n]);
            }
        }
        Pixels::new(w, h, channels, data).unwrap()
    }

    fn mean(img: &Pixels, channel: usize) -> f64 {
        let n = img.channels.count();
        let v: Vec<f64> = img.data().chunks_exact(n).map(|p| f64::from(p[channel])).collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    fn row(img: &Pixels, y: u32, channel: usize) -> Vec<u8> {
        let n = img.channels.count();
        img.data()[y as usize * img.stride()..][..img.stride()].chunks_exact(n).map(|p| p[channel]).collect()
    }

    #[test]
    fn blur_of_a_step_is_monotonic_and_keeps_the_mean() {
        for sigma in [0.5, 2.0, 5.0, 12.0, 40.0, 100.0] {
            for ch in ALL {
                let mut img = step_edge(120, 9, ch);
                let before = mean(&img, 0);
                blur(&mut img, sigma).unwrap();
                let r = row(&img, 4, 0);
                assert!(r.windows(2).all(|p| p[0] <= p[1]), "σ={sigma} {ch:?}: {r:?}");
                assert!(r[59] < 128 && r[60] > 127, "σ={sigma}: the edge stays in place: {r:?}");
                assert!((mean(&img, 0) - before).abs() < 1.0, "σ={sigma} {ch:?}: mean moved");
                // A wider sigma spreads the edge further.
                if sigma >= 2.0 {
                    assert!(r[56] > 0 && r[63] < 255, "σ={sigma}: {r:?}");
                }
                if ch.has_alpha() {
                    assert!(img.data().chunks_exact(ch.count()).all(|p| p[ch.count() - 1] == 255));
                }
                // Every row is the same: the vertical pass must not change a vertical edge.
                assert_eq!(row(&img, 0, 0), row(&img, 8, 0));
            }
        }
    }

    /// Φ, the standard normal CDF (Abramowitz–Stegun 7.1.26, error < 2e-7).
    fn normal_cdf(z: f64) -> f64 {
        let x = z.abs() / std::f64::consts::SQRT_2;
        let t = 1.0 / (1.0 + 0.3275911 * x);
        let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
        let erf = 1.0 - poly * (-x * x).exp();
        if z >= 0.0 {
            0.5 * (1.0 + erf)
        } else {
            0.5 * (1.0 - erf)
        }
    }

    #[test]
    fn blur_sigma_matches_a_gaussian() {
        // A Gaussian blur of a step is the normal CDF across the edge (at 199.5 here),
        // whichever kernel implements it.
        for sigma in [0.8f64, 3.0, 6.0, 10.0, 20.0, 50.0] {
            let mut img = step_edge(400, 3, Channels::Gray);
            blur(&mut img, sigma as f32).unwrap();
            let r = row(&img, 1, 0);
            for d in [-2.0, -1.0, -0.5, 0.5, 1.0, 2.0] {
                let x = (199.5 + d * sigma).round();
                let want = 255.0 * normal_cdf((x - 199.5) / sigma);
                let got = f64::from(r[x as usize]);
                // Box approximation above BOX_FROM; sampling error of the discrete kernel below 1.
                let tol = if sigma > f64::from(BOX_FROM) {
                    7.0
                } else if sigma < 1.0 {
                    5.0
                } else {
                    2.0
                };
                assert!((got - want).abs() <= tol, "σ={sigma} x={x}: {got} vs {want:.1}");
            }
        }
    }

    #[test]
    fn blur_does_not_bleed_hidden_colour_from_transparent_pixels() {
        // Opaque red next to transparent green: the blurred colour stays red.
        let mut data = Vec::new();
        for _ in 0..4 {
            for x in 0..40 {
                data.extend_from_slice(if x < 20 { &[255, 0, 0, 255] } else { &[0, 255, 0, 0] });
            }
        }
        let mut img = Pixels::new(40, 4, Channels::Rgba, data).unwrap();
        blur(&mut img, 3.0).unwrap();
        for p in img.data().chunks_exact(4) {
            if p[3] > 8 {
                assert!(p[0] >= 250 && p[1] <= 5, "{p:?}");
            }
        }
        let alphas = row(&img, 1, 3);
        assert!(alphas[19] < 255 && alphas[20] > 0, "alpha is blurred too: {alphas:?}");
    }

    #[test]
    fn blur_of_a_photo_smooths_and_keeps_colours() {
        let photo = load("coffee_600x400.jpg");
        for ch in ALL {
            let mut img = convert(&photo, ch);
            let before = mean(&img, 0);
            let energy =
                |im: &Pixels| -> u64 { row(im, 200, 0).windows(2).map(|p| u64::from(p[0].abs_diff(p[1]))).sum() };
            let e0 = energy(&img);
            blur(&mut img, 4.0).unwrap();
            assert!(energy(&img) * 3 < e0, "{ch:?}: {} vs {e0}", energy(&img));
            assert!((mean(&img, 0) - before).abs() < 1.5);
        }
    }

    #[test]
    fn blur_of_flat_and_tiny_images_changes_nothing() {
        for ch in ALL {
            for (w, h) in [(1, 1), (1, 7), (7, 1), (30, 20)] {
                let mut img = solid(w, h, ch, &[77, 140, 200, 90]);
                let want = img.data().to_vec();
                blur(&mut img, 2.5).unwrap();
                assert_eq!(img.data(), &want[..], "{ch:?} {w}x{h}");
                blur(&mut img, 60.0).unwrap();
                assert_eq!(img.data(), &want[..], "{ch:?} {w}x{h} box");
                blur(&mut img, f32::NAN).unwrap();
                blur(&mut img, f32::INFINITY).unwrap();
                sharpen(&mut img, 1.0).unwrap();
                assert_eq!(img.data(), &want[..], "{ch:?} {w}x{h} sharpen");
            }
        }
    }

    #[test]
    fn large_sigma_is_bounded_work() {
        // Above BOX_FROM the cost per sample does not depend on sigma (three running sums
        // of bounded windows, no 6σ-tap kernel); sigma is capped, so the sums fit in u32.
        const { assert!(100.0 > BOX_FROM) };
        for sigma in [100.0, MAX_SIGMA, 1.0e9, f32::INFINITY] {
            let radii = box_radii(sigma.min(MAX_SIGMA));
            for r in radii {
                assert!(r <= 2 * MAX_SIGMA as usize, "sigma {sigma}: radius {r}");
                assert!((2 * r as u64 + 1) * u64::from(u16::MAX) < u64::from(u32::MAX), "sigma {sigma}: radius {r}");
            }
        }
        let mut huge = convert(&load("coffee_600x400.jpg"), Channels::Rgba);
        let mut capped = convert(&load("coffee_600x400.jpg"), Channels::Rgba);
        blur(&mut huge, 1.0e9).unwrap();
        blur(&mut capped, MAX_SIGMA).unwrap();
        assert!(huge.data() == capped.data(), "a larger sigma is the cap's blur");
    }

    #[test]
    fn sharpen_increases_edge_contrast() {
        for ch in ALL {
            let mut img = step_edge(40, 3, ch);
            // A soft edge: 0 → 255 over a few pixels.
            blur(&mut img, 1.5).unwrap();
            let soft = row(&img, 1, 0);
            sharpen(&mut img, 1.0).unwrap();
            let sharp = row(&img, 1, 0);
            let slope = |r: &[u8]| i32::from(r[20]) - i32::from(r[19]);
            assert!(slope(&sharp) > slope(&soft), "{ch:?}: {soft:?} → {sharp:?}");
            // Overshoot on both sides, clamped.
            assert!(sharp[17] < soft[17] && sharp[22] > soft[22], "{ch:?}: {soft:?} → {sharp:?}");
            // Far from the edge nothing changes.
            assert_eq!((sharp[0], sharp[39]), (soft[0], soft[39]));
            if ch.has_alpha() {
                assert!(img.data().chunks_exact(ch.count()).all(|p| p[ch.count() - 1] == 255));
            }
        }
    }

    #[test]
    fn sharpen_leaves_alpha_alone() {
        let photo = convert(&load("leaf_alpha_400x250.png"), Channels::Rgba);
        let mut img = convert(&photo, Channels::Rgba);
        sharpen(&mut img, 2.0).unwrap();
        let alpha = |im: &Pixels| im.data().chunks_exact(4).map(|p| p[3]).collect::<Vec<_>>();
        assert_eq!(alpha(&img), alpha(&photo));
        assert_ne!(img.data(), photo.data());
    }

    #[test]
    fn pixelate_makes_uniform_blocks_of_the_block_average() {
        let photo = load("coffee_600x400.jpg");
        for ch in ALL {
            let orig = convert(&photo, ch);
            let mut img = convert(&photo, ch);
            pixelate(&mut img, 7).unwrap();
            let n = ch.count();
            let at = |im: &Pixels, x: usize, y: usize| im.data()[y * im.stride() + x * n..][..n].to_vec();
            // 600 = 85·7 + 5 and 400 = 57·7 + 1: partial blocks at the right and bottom.
            for (bx, by) in [(0, 0), (35, 21), (595, 0), (595, 399), (0, 399)] {
                let bw = 7.min(600 - bx);
                let bh = 7.min(400 - by);
                let first = at(&img, bx, by);
                for y in by..by + bh {
                    for x in bx..bx + bw {
                        assert_eq!(at(&img, x, y), first, "{ch:?} block ({bx},{by})");
                    }
                }
                if !ch.has_alpha() {
                    for (c, &got) in first.iter().enumerate() {
                        let mut s = 0u32;
                        for y in by..by + bh {
                            for x in bx..bx + bw {
                                s += u32::from(at(&orig, x, y)[c]);
                            }
                        }
                        let avg = (f64::from(s) / (bw * bh) as f64).round() as u8;
                        assert_eq!(got, avg, "{ch:?} block ({bx},{by}) channel {c}");
                    }
                }
            }
            // Neighbouring blocks differ somewhere in a photo.
            assert_ne!(at(&img, 0, 0), at(&img, 7 * 40, 7 * 30));
        }
    }

    #[test]
    fn pixelate_weights_colour_by_alpha() {
        // Two opaque blue pixels and two transparent red ones: the block is blue, half opaque.
        let data = vec![0, 0, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 0, 0, 255, 255];
        let mut img = Pixels::new(2, 2, Channels::Rgba, data).unwrap();
        pixelate(&mut img, 2).unwrap();
        assert_eq!(img.data(), [0, 0, 255, 128].repeat(4));
        // Sizes of 0 and 1 do nothing; a size beyond the image averages everything.
        let mut img = solid(3, 2, Channels::Gray, &[9]);
        img.data_mut()[0] = 15;
        pixelate(&mut img, 0).unwrap();
        pixelate(&mut img, 1).unwrap();
        assert_eq!(img.data()[0], 15);
        pixelate(&mut img, u32::MAX).unwrap();
        assert_eq!(img.data(), [10; 6]);
    }
}
