//! Content-aware crop position (`g:sm`), in the manner of smartcrop.js and libvips
//! `attention`: every pixel of a small copy of the image gets an interest score from
//! edge strength, skin tone and saturation (smartcrop.js's thresholds and weights), an
//! integral image sums any window in O(1), and every window position on that grid is
//! tried. The score favours windows with the interesting part near their middle and,
//! slightly, windows near the image centre (which also settles ties, so a featureless
//! image gets a centred crop).

use crate::transform::pixels::Pixels;

/// Long side of the analysed copy, at most.
const GRID: u32 = 256;

// smartcrop.js's defaults.
const SKIN: [f32; 3] = [0.78, 0.57, 0.44];
const SKIN_THRESHOLD: f32 = 0.8;
const SKIN_LIGHTNESS: (f32, f32) = (0.2, 1.0);
const SKIN_BIAS: f32 = 0.01;
const SKIN_WEIGHT: f32 = 1.8;
const SATURATION_THRESHOLD: f32 = 0.4;
const SATURATION_LIGHTNESS: (f32, f32) = (0.05, 0.9);
const SATURATION_BIAS: f32 = 0.2;
const SATURATION_WEIGHT: f32 = 0.1;
const DETAIL_WEIGHT: f32 = 0.2;
/// Extra weight of the central half (each way) of a window.
const CENTRE_WEIGHT: f64 = 0.5;
/// Score lost by a window whose centre is as far from the image centre as it can be.
const POSITION_BIAS: f64 = 0.05;

/// Top-left corner of the most interesting `crop_w`×`crop_h` window of `img`
/// (window no larger than the image; coordinates on `img`'s own pixel grid).
pub(crate) fn position(img: &Pixels, crop_w: u32, crop_h: u32) -> (u32, u32) {
    let (w, h) = (img.width, img.height);
    let (cw, ch) = (crop_w.clamp(1, w), crop_h.clamp(1, h));
    if cw == w && ch == h {
        return (0, 0);
    }
    // Cells of f×f pixels (partial at the right and bottom).
    let f = w.max(h).div_ceil(GRID).max(1);
    let (gw, gh) = (w.div_ceil(f) as usize, h.div_ceil(f) as usize);
    let score = scores(img, f, gw, gh);
    let sums = Integral::new(&score, gw, gh);

    // The window on the grid, and how its pixel-space twin is offset from it.
    let ww = ((f64::from(cw) / f64::from(f)).round() as usize).clamp(1, gw);
    let wh = ((f64::from(ch) / f64::from(f)).round() as usize).clamp(1, gh);
    let (iw, ih) = ((ww / 2).max(1), (wh / 2).max(1));
    let (span_x, span_y) = ((gw - ww) as f64, (gh - wh) as f64);
    let mut best = (f64::NEG_INFINITY, 0usize, 0usize);
    for gy in 0..=gh - wh {
        for gx in 0..=gw - ww {
            let mut s = sums.sum(gx, gy, ww, wh);
            s += CENTRE_WEIGHT * sums.sum(gx + (ww - iw) / 2, gy + (wh - ih) / 2, iw, ih);
            // Distance of the window from the centred position, 0..=1 on each axis.
            let dx = if span_x > 0.0 { (2.0 * gx as f64 - span_x) / span_x } else { 0.0 };
            let dy = if span_y > 0.0 { (2.0 * gy as f64 - span_y) / span_y } else { 0.0 };
            let d = ((dx * dx + dy * dy) / 2.0).sqrt();
            // The tiny absolute term ranks equal (e.g. empty) windows by position.
            let s = s * (1.0 - POSITION_BIAS * d) - 1e-9 * d;
            if s > best.0 {
                best = (s, gx, gy);
            }
        }
    }
    let place = |g: usize, win: usize, crop: u32, size: u32| -> u32 {
        // Centre the pixel window on the grid window, then keep it inside the image.
        let centre = (g as f64 + win as f64 / 2.0) * f64::from(f);
        let start = (centre - f64::from(crop) / 2.0).round().max(0.0);
        (start as u32).min(size - crop)
    };
    (place(best.1, ww, cw, w), place(best.2, wh, ch, h))
}

/// Per-cell interest of the `gw`×`gh` grid of `f`×`f` cells.
fn scores(img: &Pixels, f: u32, gw: usize, gh: usize) -> Vec<f32> {
    let n = img.channels.count();
    let alpha = img.channels.has_alpha();
    let f = f as usize;
    let (w, h) = (img.width as usize, img.height as usize);
    // Cell averages: premultiplied RGB (so transparent areas read as dark) and alpha.
    let mut cells = vec![[0f32; 4]; gw * gh];
    let mut row_sum = vec![[0u32; 4]; gw];
    for cy in 0..gh {
        row_sum.iter_mut().for_each(|s| *s = [0; 4]);
        let rows = cy * f..((cy + 1) * f).min(h);
        for y in rows.clone() {
            let line = &img.data()[y * img.stride()..][..img.stride()];
            for (x, p) in line.chunks_exact(n).enumerate() {
                let a = if alpha { u32::from(p[n - 1]) } else { 255 };
                let (r, g, b) = if n < 3 { (p[0], p[0], p[0]) } else { (p[0], p[1], p[2]) };
                let s = &mut row_sum[x / f];
                s[0] += u32::from(r) * a / 255;
                s[1] += u32::from(g) * a / 255;
                s[2] += u32::from(b) * a / 255;
                s[3] += a;
            }
        }
        for (cx, s) in row_sum.iter().enumerate() {
            let count = (rows.len() * (((cx + 1) * f).min(w) - cx * f)) as f32 * 255.0;
            cells[cy * gw + cx] = s.map(|v| v as f32 / count);
        }
    }

    let luma = |c: &[f32; 4]| 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    let lum: Vec<f32> = cells.iter().map(luma).collect();
    let mut out = vec![0f32; gw * gh];
    for y in 0..gh {
        for x in 0..gw {
            let i = y * gw + x;
            // Laplacian with clamped neighbours.
            let l = |xx: usize, yy: usize| lum[yy * gw + xx];
            let around = l(x.saturating_sub(1), y)
                + l((x + 1).min(gw - 1), y)
                + l(x, y.saturating_sub(1))
                + l(x, (y + 1).min(gh - 1));
            let detail = (4.0 * lum[i] - around).abs().min(1.0);
            let c = cells[i];
            let a = c[3];
            // Colour as seen, for skin and saturation.
            let rgb = if a > 0.0 { [c[0] / a, c[1] / a, c[2] / a] } else { [0.0; 3] };
            let light = lum[i] / a.max(f32::EPSILON);
            let skin = skin(rgb, light);
            let sat = saturation(rgb, light);
            let s = detail * DETAIL_WEIGHT
                + skin * (detail + SKIN_BIAS) * SKIN_WEIGHT
                + sat * (detail + SATURATION_BIAS) * SATURATION_WEIGHT;
            out[i] = s * a;
        }
    }
    out
}

/// smartcrop.js's skin score, 0..=1: closeness of the colour's direction to a skin tone.
fn skin(rgb: [f32; 3], light: f32) -> f32 {
    let mag = (rgb[0] * rgb[0] + rgb[1] * rgb[1] + rgb[2] * rgb[2]).sqrt();
    if mag <= 0.0 || !(SKIN_LIGHTNESS.0..=SKIN_LIGHTNESS.1).contains(&light) {
        return 0.0;
    }
    let skin_mag = (SKIN[0] * SKIN[0] + SKIN[1] * SKIN[1] + SKIN[2] * SKIN[2]).sqrt();
    let d: f32 = (0..3).map(|k| (rgb[k] / mag - SKIN[k] / skin_mag).powi(2)).sum::<f32>().sqrt();
    let s = 1.0 - d;
    if s > SKIN_THRESHOLD {
        (s - SKIN_THRESHOLD) / (1.0 - SKIN_THRESHOLD)
    } else {
        0.0
    }
}

/// smartcrop.js's saturation score, 0..=1, from HSL saturation.
fn saturation(rgb: [f32; 3], light: f32) -> f32 {
    if !(SATURATION_LIGHTNESS.0..=SATURATION_LIGHTNESS.1).contains(&light) {
        return 0.0;
    }
    let max = rgb[0].max(rgb[1]).max(rgb[2]);
    let min = rgb[0].min(rgb[1]).min(rgb[2]);
    if max == min {
        return 0.0;
    }
    let l = (max + min) / 2.0;
    let d = max - min;
    let s = if l > 0.5 { d / (2.0 - max - min) } else { d / (max + min) };
    if s > SATURATION_THRESHOLD {
        (s - SATURATION_THRESHOLD) / (1.0 - SATURATION_THRESHOLD)
    } else {
        0.0
    }
}

/// Summed-area table: `sum(x, y, w, h)` of any rectangle in O(1).
struct Integral {
    width: usize,
    table: Vec<f64>,
}

impl Integral {
    fn new(v: &[f32], w: usize, h: usize) -> Integral {
        let width = w + 1;
        let mut table = vec![0f64; width * (h + 1)];
        for y in 0..h {
            let mut row = 0f64;
            for x in 0..w {
                row += f64::from(v[y * w + x]);
                table[(y + 1) * width + x + 1] = table[y * width + x + 1] + row;
            }
        }
        Integral { width, table }
    }

    fn sum(&self, x: usize, y: usize, w: usize, h: usize) -> f64 {
        let t = |xx: usize, yy: usize| self.table[yy * self.width + xx];
        t(x + w, y + h) - t(x, y + h) - t(x + w, y) + t(x, y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::pixels::testing::{convert, load, solid, ALL};
    use crate::transform::pixels::Channels;
    use crate::transform::steps::canvas::embed;

    /// A 60×60 piece of a photo pasted at (`x`, `y`) on a flat grey `w`×`h` canvas.
    fn square_on_grey(ch: Channels, w: u32, h: u32, x: u32, y: u32) -> Pixels {
        let photo = convert(&load("coffee_600x400.jpg"), Channels::Rgb);
        // The piece from the photo's middle (cups and their texture).
        let (sx, sy) = (250usize, 150usize);
        let mut piece = Vec::new();
        for row in 0..60 {
            piece.extend_from_slice(&photo.data()[(sy + row) * photo.stride() + sx * 3..][..60 * 3]);
        }
        let shifted = Pixels::new(60, 60, Channels::Rgb, piece).unwrap();
        let canvas = embed(&shifted, w, h, x, y, [128, 128, 128, 255]).unwrap();
        convert(&canvas, ch)
    }

    fn contains(pos: (u32, u32), cw: u32, ch: u32, x: u32, y: u32) -> bool {
        pos.0 <= x && pos.1 <= y && pos.0 + cw >= x + 60 && pos.1 + ch >= y + 60
    }

    #[test]
    fn window_goes_to_the_textured_square() {
        for ch in ALL {
            for (w, h, x, y, cw, cht) in [
                (400, 300, 300, 40, 150, 150),
                (400, 300, 20, 220, 100, 100),
                (1600, 1200, 1400, 100, 300, 300),
                (3000, 500, 2500, 300, 400, 500),
                (400, 300, 170, 10, 400, 120),
            ] {
                let img = square_on_grey(ch, w, h, x, y);
                let pos = position(&img, cw, cht);
                assert!(contains(pos, cw, cht, x, y), "{ch:?} {w}x{h}: {pos:?} misses the square at ({x},{y})");
                assert!(pos.0 + cw <= w && pos.1 + cht <= h);
            }
        }
    }

    #[test]
    fn square_ends_up_near_the_middle_of_the_window() {
        let img = square_on_grey(Channels::Rgb, 800, 600, 200, 300);
        let (px, py) = position(&img, 300, 300);
        // The square's centre (230, 330) is within 40 px of the window's (px+150, py+150).
        assert!((i64::from(px) + 150 - 230).abs() <= 40 && (i64::from(py) + 150 - 330).abs() <= 40, "{px},{py}");
    }

    #[test]
    fn transparent_surroundings_are_not_interesting() {
        let leaf = load("leaf_alpha_400x250.png");
        // The leaf on a wide transparent canvas, right of centre.
        let img = embed(&leaf, 1200, 250, 700, 0, [0, 0, 0, 0]).unwrap();
        let (x, y) = position(&img, 400, 250);
        assert_eq!(y, 0);
        assert!((550..=750).contains(&x), "{x}");
    }

    #[test]
    fn flat_image_gets_a_centred_crop() {
        for ch in ALL {
            let img = solid(301, 200, ch, &[40, 90, 200, 255]);
            let (x, y) = position(&img, 101, 100);
            assert!(x.abs_diff(100) <= 1 && y == 50, "{ch:?}: {x},{y}");
            // Within a grid cell (2 px here) of the centre.
            let (x, y) = position(&img, 301, 50);
            assert!(x == 0 && y.abs_diff(75) <= 1, "{ch:?}: {x},{y}");
        }
    }

    #[test]
    fn degenerate_windows_never_panic() {
        let photo = convert(&load("coffee_600x400.jpg"), Channels::Rgba);
        assert_eq!(position(&photo, 600, 400), (0, 0));
        assert_eq!(position(&photo, 6000, 4000), (0, 0));
        let (x, y) = position(&photo, 0, 0);
        assert!(x < 600 && y < 400);
        let (x, y) = position(&photo, 1, 1);
        assert!(x < 600 && y < 400);
        let (x, y) = position(&photo, 600, 10);
        assert!(x == 0 && y <= 390);
        for ch in ALL {
            let one = solid(1, 1, ch, &[1, 2, 3, 4]);
            assert_eq!(position(&one, 1, 1), (0, 0));
            assert_eq!(position(&one, 5, 5), (0, 0));
            let line = solid(1000, 1, ch, &[1, 2, 3, 4]);
            let (x, y) = position(&line, 10, 1);
            assert!(x <= 990 && y == 0);
        }
    }

    #[test]
    fn result_is_deterministic() {
        let img = load("astronaut_512.jpg");
        let a = position(&img, 200, 300);
        assert_eq!(a, position(&img, 200, 300));
        assert!(a.0 + 200 <= 512 && a.1 + 300 <= 512);
    }
}
