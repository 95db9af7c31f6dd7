//! Colours of an image for `/info` (`average`, `palette`, `dominant_colors`) and the
//! small image they, the BlurHash and the ThumbHash are computed from.
//!
//! Everything works on 8-bit sRGB values of the oriented image (EXIF orientation
//! applied, ICC profile converted to sRGB), never on linear light: these are the
//! colours a page shows. Alpha: `average` weights each pixel by its alpha;
//! `palette` and `dominant_colors` skip pixels less than half opaque (alpha < 128).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::Serialize;

use super::pixels::{Channels, Pixels};
use super::{pipeline, Settings, TransformError};
use crate::options::{Format, Options};

/// Longest side of the image the colours and the ThumbHash are computed from:
/// ThumbHash's limit (evanw's demo fits images into 100×100), and plenty for a
/// 256-colour palette.
pub const SAMPLE_SIDE: u32 = 100;

/// Longest side of the image the BlurHash is computed from: woltapp's documented
/// advice is to scale an image down to 20–32 px wide before encoding; the result
/// hardly differs and encoding costs (components × pixels) stay small.
pub const BLURHASH_SIDE: u32 = 32;

/// The source oriented, in sRGB, fitted into [`SAMPLE_SIDE`]² (never enlarged), as
/// RGBA. Made by the transform engine itself (`rs:fit:100:100`), so a JPEG is decoded
/// at 1/8 in the DCT domain where that still leaves ≥ 100 px, then Lanczos3 resized.
pub struct Sample {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Sample {
    pub fn from_source(input: &[u8], max_pixels: u64) -> Result<Sample, TransformError> {
        let opts = Options {
            width: SAMPLE_SIDE,
            height: SAMPLE_SIDE,
            // PNG output keeps an alpha channel instead of flattening it onto white
            format: Some(Format::Png),
            ..Options::default()
        };
        let settings = Settings { max_src_pixels: max_pixels, ..Settings::default() };
        let (px, _) = pipeline::transform(input, &opts, &settings)?;
        Ok(Sample::from_pixels(&px))
    }

    pub(crate) fn from_pixels(px: &Pixels) -> Sample {
        let n = px.channels.count();
        let mut rgba = Vec::with_capacity(px.width as usize * px.height as usize * 4);
        for p in px.data().chunks_exact(n) {
            rgba.extend(match px.channels {
                Channels::Gray => [p[0], p[0], p[0], 255],
                Channels::GrayAlpha => [p[0], p[0], p[0], p[1]],
                Channels::Rgb => [p[0], p[1], p[2], 255],
                Channels::Rgba => [p[0], p[1], p[2], p[3]],
            });
        }
        Sample { width: px.width, height: px.height, rgba }
    }

    /// The sample fitted into `side`² (never enlarged; each side rounded, at least 1),
    /// Lanczos3 on premultiplied alpha, as the transform engine resizes.
    pub fn fit(&self, side: u32) -> Result<Sample, TransformError> {
        let long = self.width.max(self.height);
        if long <= side {
            return Ok(Sample { width: self.width, height: self.height, rgba: self.rgba.clone() });
        }
        let scale = |v: u32| ((u64::from(v) * u64::from(side) + u64::from(long) / 2) / u64::from(long)).max(1) as u32;
        let (w, h) = (scale(self.width), scale(self.height));
        let err = |e: &dyn std::fmt::Display| TransformError::Decode(format!("sample resize: {e}"));
        let src = ImageRef::new(self.width, self.height, &self.rgba, PixelType::U8x4).map_err(|e| err(&e))?;
        let mut dst = Image::new(w, h, PixelType::U8x4);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(true);
        Resizer::new().resize(&src, &mut dst, &options).map_err(|e| err(&e))?;
        Ok(Sample { width: w, height: h, rgba: dst.into_vec() })
    }

    /// RGB composited over white, for BlurHash (which has no alpha): a transparent
    /// area looks as it would on a white page.
    pub fn rgb_over_white(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rgba.len() / 4 * 3);
        for p in self.rgba.chunks_exact(4) {
            let a = u32::from(p[3]);
            for c in &p[..3] {
                out.push(((u32::from(*c) * a + 255 * (255 - a) + 127) / 255) as u8);
            }
        }
        out
    }

    fn opaque_pixels(&self) -> impl Iterator<Item = [u8; 3]> + '_ {
        self.rgba.chunks_exact(4).filter(|p| p[3] >= 128).map(|p| [p[0], p[1], p[2]])
    }
}

/// An sRGB colour; JSON `{"r":…,"g":…,"b":…,"hex":"#rrggbb"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

impl Color {
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.r, self.g, self.b)
    }
}

impl Serialize for Color {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Color", 4)?;
        st.serialize_field("r", &self.r)?;
        st.serialize_field("g", &self.g)?;
        st.serialize_field("b", &self.b)?;
        st.serialize_field("hex", &self.hex())?;
        st.end()
    }
}

/// `average`: the alpha-weighted mean colour and the mean alpha.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Average {
    #[serde(flatten)]
    pub color: Color,
    /// Mean alpha, 0–255 (255 for an opaque image).
    pub a: u8,
}

pub fn average(s: &Sample) -> Average {
    let (mut sum, mut alpha) = ([0u64; 3], 0u64);
    for p in s.rgba.chunks_exact(4) {
        let a = u64::from(p[3]);
        for (acc, c) in sum.iter_mut().zip(&p[..3]) {
            *acc += u64::from(*c) * a;
        }
        alpha += a;
    }
    let n = (s.rgba.len() / 4).max(1) as u64;
    // rounded to nearest; a fully transparent image is black with alpha 0
    let mean = |v: u64| (v + alpha / 2).checked_div(alpha).unwrap_or(0) as u8;
    Average { color: Color { r: mean(sum[0]), g: mean(sum[1]), b: mean(sum[2]) }, a: ((alpha + n / 2) / n) as u8 }
}

/// One colour of a palette and the share of the (at least half-opaque) pixels it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Swatch {
    #[serde(flatten)]
    pub color: Color,
    /// 0–1, rounded to 4 decimals.
    pub share: f64,
    #[serde(skip)]
    population: u64,
}

/// A box of the median cut: a range of the 5-bit-per-channel histogram.
#[derive(Clone, Copy)]
struct Cube {
    lo: [u8; 3],
    hi: [u8; 3],
}

const BITS: u32 = 5;
const SIDE: usize = 1 << BITS;

fn bin(c: [u8; 3]) -> usize {
    let q = |v: u8| usize::from(v >> (8 - BITS));
    (q(c[0]) << (2 * BITS)) | (q(c[1]) << BITS) | q(c[2])
}

/// Counts and sums of the 8-bit values, per 5-bit bin.
struct Histogram {
    count: Vec<u64>,
    sum: Vec<[u64; 3]>,
}

impl Histogram {
    fn new(s: &Sample) -> Histogram {
        let mut h = Histogram { count: vec![0; SIDE * SIDE * SIDE], sum: vec![[0; 3]; SIDE * SIDE * SIDE] };
        for c in s.opaque_pixels() {
            let i = bin(c);
            h.count[i] += 1;
            for (acc, v) in h.sum[i].iter_mut().zip(c) {
                *acc += u64::from(v);
            }
        }
        h
    }

    fn each(&self, cube: &Cube, mut f: impl FnMut([u8; 3], usize)) {
        for r in cube.lo[0]..=cube.hi[0] {
            for g in cube.lo[1]..=cube.hi[1] {
                for b in cube.lo[2]..=cube.hi[2] {
                    let i = (usize::from(r) << (2 * BITS)) | (usize::from(g) << BITS) | usize::from(b);
                    if self.count[i] > 0 {
                        f([r, g, b], i);
                    }
                }
            }
        }
    }

    /// The cube shrunk to the bins it holds pixels in, with its population.
    fn fit(&self, cube: Cube) -> (Cube, u64) {
        let (mut lo, mut hi, mut n) = ([u8::MAX; 3], [0u8; 3], 0u64);
        self.each(&cube, |c, i| {
            for k in 0..3 {
                lo[k] = lo[k].min(c[k]);
                hi[k] = hi[k].max(c[k]);
            }
            n += self.count[i];
        });
        (Cube { lo, hi }, n)
    }
}

/// Median cut over a 32×32×32 histogram: start with the box around every colour,
/// split the most populous box that still spans more than one bin across its longest
/// side (ties: red, green, blue) at the bin where half its pixels are passed, until
/// there are `n` boxes. Each box's colour is the exact mean of its pixels. Sorted by
/// population, then by colour: the same image always gives the same list.
pub fn palette(s: &Sample, n: usize) -> Vec<Swatch> {
    let hist = Histogram::new(s);
    let total: u64 = hist.count.iter().sum();
    if total == 0 {
        return Vec::new();
    }
    let top = (SIDE - 1) as u8;
    let mut boxes = vec![hist.fit(Cube { lo: [0; 3], hi: [top; 3] })];
    while boxes.len() < n {
        let Some((at, _)) = boxes
            .iter()
            .enumerate()
            .filter(|(_, (c, _))| c.lo != c.hi)
            .max_by(|(ia, (_, na)), (ib, (_, nb))| na.cmp(nb).then(ib.cmp(ia)))
        else {
            break;
        };
        let (cube, pop) = boxes[at];
        let axis = (0..3).max_by_key(|&k| (cube.hi[k] - cube.lo[k], 3 - k)).unwrap_or(0);
        // pixels per slice along the axis
        let mut slices = vec![0u64; SIDE];
        hist.each(&cube, |c, i| slices[usize::from(c[axis])] += hist.count[i]);
        let mut passed = 0u64;
        let mut cut = cube.lo[axis];
        for v in cube.lo[axis]..cube.hi[axis] {
            passed += slices[usize::from(v)];
            cut = v;
            if passed * 2 >= pop {
                break;
            }
        }
        let (mut a, mut b) = (cube, cube);
        a.hi[axis] = cut;
        b.lo[axis] = cut + 1;
        boxes[at] = hist.fit(a);
        boxes.push(hist.fit(b));
    }
    let mut out: Vec<Swatch> = boxes
        .iter()
        .map(|(cube, pop)| {
            let mut sum = [0u64; 3];
            hist.each(cube, |_, i| {
                for (acc, v) in sum.iter_mut().zip(hist.sum[i]) {
                    *acc += v;
                }
            });
            let mean = |v: u64| ((v + pop / 2) / pop.max(&1)) as u8;
            Swatch {
                color: Color { r: mean(sum[0]), g: mean(sum[1]), b: mean(sum[2]) },
                share: (*pop as f64 / total as f64 * 1e4).round() / 1e4,
                population: *pop,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.population.cmp(&a.population).then((a.color.r, a.color.g, a.color.b).cmp(&(b.color.r, b.color.g, b.color.b)))
    });
    out
}

/// `dominant_colors`: the six swatches of Android's Palette / Vibrant.js.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Dominant {
    pub vibrant: Option<Color>,
    pub dark_vibrant: Option<Color>,
    pub light_vibrant: Option<Color>,
    pub muted: Option<Color>,
    pub dark_muted: Option<Color>,
    pub light_muted: Option<Color>,
}

fn hsl(c: Color) -> [f64; 3] {
    let [r, g, b] = [c.r, c.g, c.b].map(|v| f64::from(v) / 255.0);
    let (max, min) = (r.max(g).max(b), r.min(g).min(b));
    let l = (max + min) / 2.0;
    if max == min {
        return [0.0, 0.0, l];
    }
    let d = max - min;
    let s = if l > 0.5 { d / (2.0 - max - min) } else { d / (max + min) };
    let h = if max == r {
        (g - b) / d + if g < b { 6.0 } else { 0.0 }
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    };
    [h / 6.0, s, l]
}

fn from_hsl([h, s, l]: [f64; 3]) -> Color {
    let to = |v: f64| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    if s == 0.0 {
        return Color { r: to(l), g: to(l), b: to(l) };
    }
    let hue = |p: f64, q: f64, t: f64| {
        let t = t.rem_euclid(1.0);
        if t < 1.0 / 6.0 {
            p + (q - p) * 6.0 * t
        } else if t < 0.5 {
            q
        } else if t < 2.0 / 3.0 {
            p + (q - p) * (2.0 / 3.0 - t) * 6.0
        } else {
            p
        }
    };
    let q = if l < 0.5 { l * (1.0 + s) } else { l + s - l * s };
    let p = 2.0 * l - q;
    Color { r: to(hue(p, q, h + 1.0 / 3.0)), g: to(hue(p, q, h)), b: to(hue(p, q, h - 1.0 / 3.0)) }
}

/// Targets of Vibrant.js (`DefaultGenerator`): luma min/target/max, saturation
/// min/target/max.
const TARGETS: [([f64; 3], [f64; 3]); 6] = [
    ([0.3, 0.5, 0.7], [0.35, 1.0, 1.0]),   // vibrant
    ([0.0, 0.26, 0.45], [0.35, 1.0, 1.0]), // dark vibrant
    ([0.55, 0.74, 1.0], [0.35, 1.0, 1.0]), // light vibrant
    ([0.3, 0.5, 0.7], [0.0, 0.3, 0.4]),    // muted
    ([0.0, 0.26, 0.45], [0.0, 0.3, 0.4]),  // dark muted
    ([0.55, 0.74, 1.0], [0.0, 0.3, 0.4]),  // light muted
];

/// Vibrant.js's algorithm on a 64-colour [`palette`]: for each target in the order
/// vibrant, dark vibrant, light vibrant, muted, dark muted, light muted, the swatch not
/// taken yet whose saturation and luma (HSL) are within the target's bounds and that
/// maximises `3·(1−|s−s_target|) + 6.5·(1−|l−l_target|) + 0.5·population/max_population`.
/// With `build_missed`, missing swatches are derived as Vibrant.js's
/// `generateEmptySwatches` does (a missing vibrant from the dark or light vibrant with
/// luma 0.5; a missing dark or light vibrant from the vibrant with luma 0.26 or 0.74);
/// the muted ones likewise from their siblings. Otherwise they are `null`.
pub fn dominant(s: &Sample, build_missed: bool) -> Dominant {
    let swatches = palette(s, 64);
    let max_pop = swatches.iter().map(|s| s.population).max().unwrap_or(1).max(1) as f64;
    let mut used = vec![false; swatches.len()];
    let mut found = [None; 6];
    for (slot, ([lmin, lt, lmax], [smin, st, smax])) in found.iter_mut().zip(TARGETS) {
        let mut best: Option<(usize, f64)> = None;
        for (i, sw) in swatches.iter().enumerate() {
            let [_, sat, luma] = hsl(sw.color);
            if used[i] || sat < smin || sat > smax || luma < lmin || luma > lmax {
                continue;
            }
            let score =
                3.0 * (1.0 - (sat - st).abs()) + 6.5 * (1.0 - (luma - lt).abs()) + 0.5 * sw.population as f64 / max_pop;
            if best.is_none_or(|(_, b)| score > b) {
                best = Some((i, score));
            }
        }
        if let Some((i, _)) = best {
            used[i] = true;
            *slot = Some(swatches[i].color);
        }
    }
    if build_missed {
        fill_missing(&mut found);
    }
    let [vibrant, dark_vibrant, light_vibrant, muted, dark_muted, light_muted] = found;
    Dominant { vibrant, dark_vibrant, light_vibrant, muted, dark_muted, light_muted }
}

/// Within each family (vibrant 0..3, muted 3..6: normal, dark, light), a missing
/// normal swatch takes the dark one's (else the light one's) hue and saturation at luma
/// 0.5, then a missing dark / light one takes the normal one's at luma 0.26 / 0.74.
fn fill_missing(found: &mut [Option<Color>; 6]) {
    for base in [0, 3] {
        let with_luma = |c: Color, l: f64| {
            let [h, s, _] = hsl(c);
            from_hsl([h, s, l])
        };
        if found[base].is_none() {
            found[base] = found[base + 1].or(found[base + 2]).map(|c| with_luma(c, 0.5));
        }
        if let Some(n) = found[base] {
            found[base + 1] = found[base + 1].or(Some(with_luma(n, 0.26)));
            found[base + 2] = found[base + 2].or(Some(with_luma(n, 0.74)));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Sample {
        let mut rgba = Vec::new();
        for y in 0..h {
            for x in 0..w {
                rgba.extend(f(x, y));
            }
        }
        Sample { width: w, height: h, rgba }
    }

    #[test]
    fn average_weights_by_alpha() {
        // left half opaque red, right half transparent green: the colour is red, alpha half
        let s = sample(10, 10, |x, _| if x < 5 { [255, 0, 0, 255] } else { [0, 255, 0, 0] });
        let a = average(&s);
        assert_eq!(a.color, Color { r: 255, g: 0, b: 0 });
        assert_eq!(a.a, 128);
        let t = sample(2, 2, |_, _| [9, 9, 9, 0]);
        assert_eq!(average(&t), Average { color: Color { r: 0, g: 0, b: 0 }, a: 0 });
    }

    #[test]
    fn palette_finds_the_colours_of_a_three_colour_image() {
        // 50% red, 30% blue, 20% green (by columns), plus transparent pixels that are skipped
        let s = sample(12, 10, |x, _| match x {
            0..=4 => [250, 10, 10, 255],
            5..=7 => [10, 10, 250, 255],
            8 | 9 => [10, 250, 10, 255],
            _ => [255, 255, 0, 10],
        });
        let p = palette(&s, 8);
        let colors: Vec<_> = p.iter().map(|s| (s.color.hex(), s.share)).collect();
        assert_eq!(colors, [("#fa0a0a".to_owned(), 0.5), ("#0a0afa".to_owned(), 0.3), ("#0afa0a".to_owned(), 0.2)]);
        assert_eq!(palette(&s, 2).len(), 2);
        assert!(palette(&sample(2, 2, |_, _| [0, 0, 0, 0]), 4).is_empty());
    }

    #[test]
    fn dominant_picks_vibrant_and_muted_swatches() {
        // saturated orange (vibrant), dark saturated blue (dark vibrant), greyish beige (light muted)
        let s = sample(30, 10, |x, _| match x / 10 {
            0 => [240, 120, 20, 255],
            1 => [10, 20, 110, 255],
            _ => [200, 190, 175, 255],
        });
        let d = dominant(&s, false);
        assert_eq!(d.vibrant, Some(Color { r: 240, g: 120, b: 20 }));
        assert_eq!(d.dark_vibrant, Some(Color { r: 10, g: 20, b: 110 }));
        assert_eq!(d.light_muted, Some(Color { r: 200, g: 190, b: 175 }));
        assert_eq!(d.muted, None);
        let built = dominant(&s, true);
        let light = built.light_vibrant.unwrap();
        assert!((hsl(light)[2] - 0.74).abs() < 0.01, "{light:?}");
        assert!(built.muted.is_some() && built.dark_muted.is_some());
    }

    #[test]
    fn hsl_round_trips() {
        for c in [Color { r: 240, g: 120, b: 20 }, Color { r: 10, g: 20, b: 110 }, Color { r: 7, g: 7, b: 7 }] {
            assert_eq!(from_hsl(hsl(c)), c);
        }
    }
}
