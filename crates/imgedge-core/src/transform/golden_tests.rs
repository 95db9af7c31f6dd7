//! Golden tests: [`run`] on real photos against libvips references, compared with SSIM.
//!
//! Inputs and references live in `tests/golden/` (`src/` and `ref/`); the README there
//! says what each reference is and `scripts/golden-refs.sh` regenerates them. Every
//! check asserts the output format (magic bytes), the exact size and an SSIM floor on
//! luma; colour-sensitive checks also bound the mean per-channel difference, since a
//! swapped or inverted channel can keep a decent grey SSIM.
//!
//! Bounds: 0.98 where the result is a pure copy of pixels (crops, embeds, rotations:
//! only JPEG decoding can differ), 0.95 where a resampler runs (our Lanczos3 vs
//! libvips' shrink + reduce), lower for filters whose exact kernels are
//! implementation choices (blur, sharpen) and for lossy output formats. The
//! `bounds_reject_wrong_results` test shows that each floor fails a plausible wrong
//! answer (a shifted crop, a wrong rotation, a missing filter).
#![allow(clippy::unwrap_used)]

use image::{DynamicImage, GenericImageView};

use super::{run, Encoded, Settings};
use crate::options::{Crop, Extend, Format, Gravity, GravityType, Options, Padding, ResizingType, Rgb, Trim};

// ---------------------------------------------------------------- fixtures

fn read(rel: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn coffee() -> Vec<u8> {
    read("data/images/coffee_600x400.jpg")
}

fn src(name: &str) -> Vec<u8> {
    read(&format!("golden/src/{name}"))
}

fn reference(name: &str) -> DynamicImage {
    image::load_from_memory_with_format(&read(&format!("golden/ref/{name}")), image::ImageFormat::Png).unwrap()
}

// ---------------------------------------------------------------- similarity

/// Rec. 601 luma of the image composited over white (a transparent area compares as
/// white, as it would be shown on a page).
fn luma(img: &DynamicImage) -> Vec<f64> {
    img.to_rgba8()
        .pixels()
        .map(|p| {
            let a = f64::from(p[3]) / 255.0;
            let c = |v: u8| f64::from(v) * a + 255.0 * (1.0 - a);
            0.299 * c(p[0]) + 0.587 * c(p[1]) + 0.114 * c(p[2])
        })
        .collect()
}

/// One channel (0..=3) of an RGBA view, as f64.
fn channel(img: &DynamicImage, c: usize) -> Vec<f64> {
    img.to_rgba8().pixels().map(|p| f64::from(p[c])).collect()
}

/// Separable Gaussian blur (11 taps, sigma 1.5), "valid" region only: the result is
/// (w - 10) × (h - 10).
fn gauss_valid(v: &[f64], w: usize, h: usize) -> Vec<f64> {
    const R: usize = 5;
    let k: Vec<f64> = (0..=2 * R)
        .map(|i| {
            let d = i as f64 - R as f64;
            (-d * d / (2.0 * 1.5 * 1.5)).exp()
        })
        .collect();
    let ks: f64 = k.iter().sum();
    let (ow, oh) = (w - 2 * R, h - 2 * R);
    let mut horiz = vec![0.0; ow * h];
    for y in 0..h {
        for x in 0..ow {
            horiz[y * ow + x] = (0..=2 * R).map(|i| k[i] * v[y * w + x + i]).sum::<f64>() / ks;
        }
    }
    let mut out = vec![0.0; ow * oh];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..=2 * R).map(|i| k[i] * horiz[(y + i) * ow + x]).sum::<f64>() / ks;
        }
    }
    out
}

/// Mean SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 = 0.01, K2 = 0.03,
/// L = 255) of two equally sized single-channel images.
fn ssim_plane(a: &[f64], b: &[f64], w: usize, h: usize) -> f64 {
    assert!(w > 10 && h > 10, "image too small for SSIM: {w}x{h}");
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let prod = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).collect::<Vec<_>>();
    let (mu_a, mu_b) = (gauss_valid(a, w, h), gauss_valid(b, w, h));
    let (aa, bb, ab) = (gauss_valid(&prod(a, a), w, h), gauss_valid(&prod(b, b), w, h), gauss_valid(&prod(a, b), w, h));
    let n = mu_a.len();
    let sum: f64 = (0..n)
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
            ((2.0 * ma * mb + c1) * (2.0 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
        })
        .sum();
    sum / n as f64
}

fn ssim(a: &DynamicImage, b: &DynamicImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "SSIM needs equal sizes");
    let (w, h) = a.dimensions();
    ssim_plane(&luma(a), &luma(b), w as usize, h as usize)
}

/// Mean absolute difference per RGB channel (after compositing over white), the
/// largest of the three.
fn colour_diff(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let over_white = |img: &DynamicImage| -> Vec<[f64; 3]> {
        img.to_rgba8()
            .pixels()
            .map(|p| {
                let al = f64::from(p[3]) / 255.0;
                [0, 1, 2].map(|c| f64::from(p[c]) * al + 255.0 * (1.0 - al))
            })
            .collect()
    };
    let (pa, pb) = (over_white(a), over_white(b));
    let n = pa.len() as f64;
    (0..3).map(|c| pa.iter().zip(&pb).map(|(x, y)| (x[c] - y[c]).abs()).sum::<f64>() / n).fold(0.0, f64::max)
}

// ---------------------------------------------------------------- running the engine

/// The format the bytes say they are, from their magic numbers.
fn sniff(b: &[u8]) -> Option<Format> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if b.starts_with(b"GIF87a") || b.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if b.len() >= 12 && &b[4..8] == b"ftyp" && (&b[8..12] == b"avif" || &b[8..12] == b"avis") {
        Some(Format::Avif)
    } else {
        None
    }
}

/// Decodes an output; AVIF goes back through the engine (to PNG), as `image` here has
/// no AVIF decoder.
fn decode(e: &Encoded) -> DynamicImage {
    let img = match e.format {
        Format::Avif => {
            let again =
                run(&e.bytes, &Options { format: Some(Format::Png), ..Options::default() }, &Settings::default())
                    .unwrap_or_else(|err| panic!("own AVIF output does not decode: {err}"));
            image::load_from_memory(&again.bytes).unwrap()
        }
        _ => image::load_from_memory(&e.bytes).unwrap(),
    };
    assert_eq!(img.dimensions(), (e.width, e.height), "reported size differs from the encoded one");
    img
}

/// Runs the engine and checks format, size and, on failure, prints the SSIM.
fn render(name: &str, input: &[u8], opts: &Options, format: Format) -> DynamicImage {
    let e = run(input, opts, &Settings::default()).unwrap_or_else(|err| panic!("{name}: run failed: {err}"));
    assert_eq!(e.format, format, "{name}: reported format");
    assert_eq!(sniff(&e.bytes), Some(format), "{name}: magic bytes");
    // GOLDEN_DUMP=<dir> keeps every output for a look with an image viewer.
    if let Some(dir) = std::env::var_os("GOLDEN_DUMP") {
        let file: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        std::fs::write(std::path::Path::new(&dir).join(format!("{file}.{}", format.ext())), &e.bytes).unwrap();
    }
    decode(&e)
}

/// The common golden check. `max_colour`: bound on [`colour_diff`] (None = not checked).
fn golden(
    name: &str,
    input: &[u8],
    opts: &Options,
    format: Format,
    ref_name: &str,
    bound: f64,
    max_colour: Option<f64>,
) {
    let out = render(name, input, opts, format);
    let want = reference(ref_name);
    assert_eq!(out.dimensions(), want.dimensions(), "{name}: dimensions");
    let s = ssim(&out, &want);
    let cd = colour_diff(&out, &want);
    println!("golden {name}: ssim {s:.4} colour {cd:.2} (floor {bound})");
    assert!(s >= bound, "{name}: SSIM {s:.4} < {bound} against {ref_name}");
    if let Some(max) = max_colour {
        assert!(cd <= max, "{name}: mean colour difference {cd:.2} > {max} against {ref_name}");
    }
}

fn png(o: Options) -> Options {
    Options { format: Some(Format::Png), ..o }
}

fn sized(rt: ResizingType, width: u32, height: u32) -> Options {
    png(Options { resizing_type: rt, width, height, ..Options::default() })
}

fn gravity(kind: GravityType, x_offset: f64, y_offset: f64) -> Gravity {
    Gravity { kind, x_offset, y_offset }
}

const BG: Rgb = Rgb(40, 90, 200);
/// Resampling: our Lanczos3 against libvips' shrink + reduce.
const RESAMPLED: f64 = 0.95;
/// Pixel copies (crop, embed, rotate): only the JPEG decoder may differ.
const COPIED: f64 = 0.98;

// ---------------------------------------------------------------- resize family

#[test]
fn golden_resizing_types() {
    use ResizingType::*;
    let c = coffee();
    golden("fit 300x300", &c, &sized(Fit, 300, 300), Format::Png, "resize_300x200.png", RESAMPLED, Some(3.0));
    golden("fill 200x200", &c, &sized(Fill, 200, 200), Format::Png, "fill_200x200_ce.png", RESAMPLED, Some(3.0));
    golden("force 150x150", &c, &sized(Force, 150, 150), Format::Png, "force_150x150.png", RESAMPLED, Some(3.0));
    // fill-down on a box larger than the source: the box shrinks to 150x40, no upscale.
    let tiny = src("tiny.png");
    golden(
        "fill-down 300x80",
        &tiny,
        &sized(FillDown, 300, 80),
        Format::Png,
        "filldown_tiny_300x80.png",
        COPIED,
        Some(1.0),
    );
    // auto: portrait box on a landscape source fits, landscape box fills.
    golden("auto 150x300", &c, &sized(Auto, 150, 300), Format::Png, "resize_150x100.png", RESAMPLED, Some(3.0));
    golden("auto 300x150", &c, &sized(Auto, 300, 150), Format::Png, "auto_300x150.png", RESAMPLED, Some(3.0));
}

#[test]
fn golden_width_height_enlarge_dpr() {
    let c = coffee();
    golden("w:240", &c, &sized(ResizingType::Fit, 240, 0), Format::Png, "w240.png", RESAMPLED, Some(3.0));
    golden("h:100", &c, &sized(ResizingType::Fit, 0, 100), Format::Png, "resize_150x100.png", RESAMPLED, Some(3.0));
    let el = png(Options { width: 195, enlarge: true, ..Options::default() });
    golden("w:195 el:1", &src("tiny.png"), &el, Format::Png, "enlarge_tiny_195.png", RESAMPLED, Some(3.0));
    let dpr = png(Options { width: 150, dpr: 2.0, ..Options::default() });
    golden("w:150 dpr:2", &c, &dpr, Format::Png, "resize_300x200.png", RESAMPLED, Some(3.0));
}

#[test]
fn golden_min_sizes_and_zoom() {
    let c = coffee();
    // h:100 alone gives 150x100; mw:300 scales up to 300x200, then the height is cropped.
    let mw = png(Options { height: 100, min_width: 300, ..Options::default() });
    golden("h:100 mw:300", &c, &mw, Format::Png, "minwidth_h100_mw300.png", RESAMPLED, Some(3.0));
    let mh = png(Options { width: 150, min_height: 200, ..Options::default() });
    golden("w:150 mh:200", &c, &mh, Format::Png, "minheight_w150_mh200.png", RESAMPLED, Some(3.0));
    let z = png(Options { width: 300, zoom_x: 0.5, zoom_y: 0.5, ..Options::default() });
    golden("w:300 z:0.5", &c, &z, Format::Png, "resize_150x100.png", RESAMPLED, Some(3.0));
    let zxy = png(Options { zoom_x: 0.5, zoom_y: 0.25, ..Options::default() });
    golden("z:0.5:0.25", &c, &zxy, Format::Png, "zoom_0.5x0.25.png", RESAMPLED, Some(3.0));
}

// ---------------------------------------------------------------- gravity

#[test]
fn golden_gravity() {
    use GravityType::*;
    let c = coffee();
    let fill = |w, h, g: Gravity| png(Options { gravity: g, ..sized(ResizingType::Fill, w, h) });
    let cases: [(&str, Options, &str); 8] = [
        ("fill 300x100 g:no", fill(300, 100, gravity(North, 0.0, 0.0)), "grav_no_300x100.png"),
        ("fill 300x100 g:so", fill(300, 100, gravity(South, 0.0, 0.0)), "grav_so_300x100.png"),
        ("fill 300x100 g:so:0:10", fill(300, 100, gravity(South, 0.0, 10.0)), "grav_so_0_10_300x100.png"),
        ("fill 300x100 g:no:0:0.1", fill(300, 100, gravity(North, 0.0, 0.1)), "grav_no_0_0.1_300x100.png"),
        ("fill 200x200 g:ea", fill(200, 200, gravity(East, 0.0, 0.0)), "grav_ea_200x200.png"),
        ("fill 200x200 g:ea:20:0", fill(200, 200, gravity(East, 20.0, 0.0)), "grav_ea_20_0_200x200.png"),
        ("fill 200x200 g:we:0.1:0", fill(200, 200, gravity(West, 0.1, 0.0)), "grav_we_0.1_0_200x200.png"),
        ("fill 200x200 g:fp:0.6:0.5", fill(200, 200, gravity(FocusPoint, 0.6, 0.5)), "grav_fp_0.6_0.5_200x200.png"),
    ];
    for (name, o, r) in &cases {
        golden(name, &c, o, Format::Png, r, RESAMPLED, Some(3.0));
    }
}

#[test]
fn golden_crop_before_resize() {
    let c = coffee();
    let crop = |w, h, g: Option<Gravity>| Some(Crop { width: w, height: h, gravity: g });
    let o = png(Options { crop: crop(300.0, 300.0, None), width: 150, ..Options::default() });
    golden("c:300:300 w:150", &c, &o, Format::Png, "crop_300x300_w150.png", RESAMPLED, Some(3.0));
    let o = png(Options {
        crop: crop(300.0, 200.0, Some(gravity(GravityType::NorthWest, 0.0, 0.0))),
        ..Options::default()
    });
    golden("c:300:200:nowe", &c, &o, Format::Png, "crop_300x200_nowe.png", COPIED, Some(1.0));
    // Without its own gravity the crop uses the request's.
    let o = png(Options {
        crop: crop(300.0, 200.0, None),
        gravity: gravity(GravityType::SouthEast, 0.0, 0.0),
        ..Options::default()
    });
    golden("c:300:200 g:soea", &c, &o, Format::Png, "crop_300x200_soea.png", COPIED, Some(1.0));
    let o = png(Options { crop: crop(0.5, 0.5, None), ..Options::default() });
    golden("c:0.5:0.5", &c, &o, Format::Png, "crop_0.5x0.5.png", COPIED, Some(1.0));
}

// ---------------------------------------------------------------- canvas

#[test]
fn golden_extend_and_padding() {
    use GravityType::*;
    let tiny = src("tiny.png");
    let ext = |w, h, g: Option<Gravity>| {
        png(Options {
            width: w,
            height: h,
            extend: Extend { enabled: true, gravity: g },
            background: Some(BG),
            ..Options::default()
        })
    };
    golden("w:150 h:200 ex:1", &tiny, &ext(150, 200, None), Format::Png, "extend_150x200_ce.png", COPIED, Some(1.0));
    let no = ext(150, 200, Some(gravity(North, 0.0, 0.0)));
    golden("w:150 h:200 ex:1:no", &tiny, &no, Format::Png, "extend_150x200_no.png", COPIED, Some(1.0));
    let so = ext(150, 200, Some(gravity(South, 0.0, 0.0)));
    golden("w:150 h:200 ex:1:so", &tiny, &so, Format::Png, "extend_150x200_so.png", COPIED, Some(1.0));
    let ea = ext(250, 140, Some(gravity(East, 0.0, 0.0)));
    golden("w:250 h:140 ex:1:ea", &tiny, &ea, Format::Png, "extend_250x140_ea.png", COPIED, Some(1.0));

    let exar = |g: Option<Gravity>| {
        png(Options {
            width: 210,
            height: 100,
            extend_aspect_ratio: Extend { enabled: true, gravity: g },
            background: Some(BG),
            ..Options::default()
        })
    };
    golden("w:210 h:100 exar:1", &tiny, &exar(None), Format::Png, "exar_210x100_ce.png", COPIED, Some(1.0));
    let we = exar(Some(gravity(West, 0.0, 0.0)));
    golden("w:210 h:100 exar:1:we", &tiny, &we, Format::Png, "exar_210x100_we.png", COPIED, Some(1.0));

    let pd = png(Options {
        padding: Padding { top: 10, right: 20, bottom: 30, left: 40 },
        background: Some(BG),
        ..Options::default()
    });
    golden("pd:10:20:30:40", &tiny, &pd, Format::Png, "padding_10_20_30_40.png", COPIED, Some(1.0));
}

// ---------------------------------------------------------------- rotate, flip, EXIF

#[test]
fn golden_rotate_and_flip() {
    let tiny = src("tiny.png");
    for (deg, r) in [(90, "rot_90.png"), (180, "rot_180.png"), (270, "rot_270.png")] {
        let o = png(Options { rotate: deg, ..Options::default() });
        golden(&format!("rot:{deg}"), &tiny, &o, Format::Png, r, COPIED, Some(1.0));
    }
    let o = png(Options { flip_horizontal: true, ..Options::default() });
    golden("fl:1:0", &tiny, &o, Format::Png, "flip_h.png", COPIED, Some(1.0));
    let o = png(Options { flip_vertical: true, ..Options::default() });
    golden("fl:0:1", &tiny, &o, Format::Png, "flip_v.png", COPIED, Some(1.0));
}

/// The "F" test: eight files whose stored pixels differ but whose EXIF orientation
/// makes them all display as the same upright 240x160 image.
#[test]
fn golden_exif_orientations() {
    for n in 1..=8 {
        let input = src(&format!("orient_{n}.jpg"));
        // JPEG output too: the orientation must be applied whatever the format.
        golden(
            &format!("orientation {n}"),
            &input,
            &png(Options::default()),
            Format::Png,
            "orient_upright.png",
            0.95,
            Some(3.0),
        );
        // Gravity and crop are in display space, whatever the stored orientation.
        let fill =
            png(Options { gravity: gravity(GravityType::West, 0.0, 0.0), ..sized(ResizingType::Fill, 100, 100) });
        let r = "orient_fill_100x100_we.png";
        golden(&format!("orientation {n} fill 100x100 g:we"), &input, &fill, Format::Png, r, RESAMPLED, Some(3.0));
        let o = Options { quality: Some(90), ..Options::default() };
        golden(&format!("orientation {n} → jpeg"), &input, &o, Format::Jpeg, "orient_upright.png", 0.9, Some(4.0));
    }
}

// ---------------------------------------------------------------- effects

#[test]
fn golden_blur() {
    // Both are Gaussians of sigma 2; libvips truncates its kernel at amplitude 0.2 (of
    // 255, so ~3.3 sigma) and works in integers, hence not COPIED.
    let o = png(Options { blur: 2.0, ..Options::default() });
    golden("bl:2", &src("tiny.png"), &o, Format::Png, "blur_2.png", 0.95, Some(3.0));
}

#[test]
fn golden_sharpen() {
    // libvips sharpens L* in LabS with its own piecewise curve (x1 2, m2 3, y3 20); an
    // unsharp mask on RGB is only similar (and moves colours at edges a little more),
    // so the floor is below RESAMPLED yet above an unsharpened result (0.92, see
    // `bounds_reject_wrong_results`).
    let o = png(Options { sharpen: 1.0, ..Options::default() });
    golden("sh:1", &src("tiny.png"), &o, Format::Png, "sharpen_1.png", 0.95, Some(6.0));
}

#[test]
fn golden_pixelate() {
    let o = png(Options { pixelate: 10, ..Options::default() });
    golden("pix:10", &src("tiny.png"), &o, Format::Png, "pixelate_10.png", COPIED, Some(1.5));
}

#[test]
fn golden_trim() {
    // trim.png is tiny.png on a flat border: trimming must give tiny.png back.
    let o = png(Options {
        trim: Some(Trim { threshold: 10.0, color: None, equal_hor: false, equal_ver: false }),
        ..Options::default()
    });
    golden("t:10", &src("trim.png"), &o, Format::Png, "../src/tiny.png", 0.99, Some(0.5));
}

/// Smart crop: the source's left half (x < 300) is a featureless blur and its right
/// half a coffee cup. The crop must land on the cup. libvips' `attention` crop is the
/// reference for the position only, loosely: saliency measures legitimately differ,
/// and SSIM collapses for windows a few pixels apart, so it says nothing here.
#[test]
fn golden_smart_crop() {
    let input = src("smart.jpg");
    let o = png(Options { gravity: gravity(GravityType::Smart, 0.0, 0.0), ..sized(ResizingType::Fill, 200, 200) });
    let out = render("fill 200x200 g:sm", &input, &o, Format::Png);
    assert_eq!(out.dimensions(), (200, 200));

    // No resize happens (the source is 200 high), so both crops are windows of the
    // source: find where.
    let whole = image::load_from_memory(&input).unwrap();
    let wl = luma(&whole);
    let ww = whole.width() as usize;
    let window_x = |crop: &DynamicImage| -> usize {
        let cl = luma(crop);
        let mae = |x0: usize| -> f64 {
            let mut s = 0.0;
            for y in (0..200).step_by(4) {
                for x in (0..200).step_by(4) {
                    s += (wl[y * ww + x0 + x] - cl[y * 200 + x]).abs();
                }
            }
            s
        };
        (0..=(ww - 200)).min_by(|&a, &b| mae(a).total_cmp(&mae(b))).unwrap()
    };
    let (ours, attention) = (window_x(&out), window_x(&reference("smart_200x200.png")));
    println!("golden g:sm: window at x={ours}, libvips attention at x={attention}");
    // At least 85% of the window on the cup half, and near libvips' choice.
    assert!(ours >= 270, "smart crop at x={ours} misses the salient right half");
    assert!(ours.abs_diff(attention) <= 60, "smart crop at x={ours}, libvips attention at x={attention}");
}

// ---------------------------------------------------------------- alpha, background, CMYK

#[test]
fn golden_alpha_survives_to_webp_and_png() {
    let leaf = read("data/images/leaf_alpha_400x250.png");
    let alpha_ref = reference("leaf_200_alpha.png");
    let (w, h) = (200usize, 125usize);
    for (f, floor) in [(Format::Png, 0.99), (Format::Webp, 0.97)] {
        let name = format!("leaf w:200 → {f}");
        let o = Options { width: 200, format: Some(f), ..Options::default() };
        let out = render(&name, &leaf, &o, f);
        assert_eq!(out.dimensions(), (200, 125), "{name}: dimensions");
        assert!(out.color().has_alpha(), "{name}: alpha channel lost");
        let sa = ssim_plane(&channel(&out, 3), &channel(&alpha_ref, 0), w, h);
        let s = ssim(&out, &reference("leaf_200_on_white.png"));
        let cd = colour_diff(&out, &reference("leaf_200_on_white.png"));
        println!("golden {name}: alpha ssim {sa:.4}, ssim on white {s:.4}, colour {cd:.2}");
        assert!(sa >= floor, "{name}: alpha SSIM {sa:.4} < {floor}");
        assert!(s >= floor - 0.05, "{name}: SSIM over white {s:.4} < {}", floor - 0.05);
        assert!(cd <= 4.0, "{name}: colour difference {cd:.2}");
    }
}

#[test]
fn golden_alpha_flattened_for_jpeg() {
    let leaf = read("data/images/leaf_alpha_400x250.png");
    let o = Options { width: 200, format: Some(Format::Jpeg), quality: Some(90), ..Options::default() };
    golden("leaf w:200 → jpeg", &leaf, &o, Format::Jpeg, "leaf_200_on_white.png", 0.93, Some(4.0));
    let o = Options { background: Some(Rgb(0, 64, 128)), ..o };
    golden("leaf w:200 bg:0:64:128 → jpeg", &leaf, &o, Format::Jpeg, "leaf_200_on_0_64_128.png", 0.93, Some(4.0));
}

#[test]
fn golden_cmyk_colours() {
    // The CMYK file is the RGB original converted naively (no profile): rendered at
    // 240x160 it must look like the RGB original at that size, colours included.
    let cmyk = read("data/images/autumn_cmyk_1200x800.jpg");
    let o = png(Options { width: 240, ..Options::default() });
    golden("cmyk w:240", &cmyk, &o, Format::Png, "autumn_240x160.png", RESAMPLED, Some(4.0));
}

// ---------------------------------------------------------------- output formats

#[test]
fn golden_output_formats() {
    let c = coffee();
    // Lossy floors at the default quality 80 (measured: JPEG 0.94, WebP 0.96, AVIF 0.95,
    // GIF 0.98), with room for encoder version changes; GIF's palette costs colour
    // accuracy more than structure.
    for (f, floor, colour) in [
        (Format::Png, RESAMPLED, 3.0),
        (Format::Jpeg, 0.9, 6.0),
        (Format::Webp, 0.9, 6.0),
        (Format::Avif, 0.9, 6.0),
        (Format::Gif, 0.9, 8.0),
    ] {
        let o = Options { width: 300, format: Some(f), ..Options::default() };
        golden(&format!("w:300 → {f}"), &c, &o, f, "resize_300x200.png", floor, Some(colour));
    }
}

// ---------------------------------------------------------------- the bounds discriminate

/// Plausible wrong answers score below the floors used above, so a passing golden test
/// means something.
#[test]
fn bounds_reject_wrong_results() {
    let tiny = reference("../src/tiny.png");
    let pairs: [(&str, DynamicImage, DynamicImage, f64); 9] = [
        ("centre vs east crop", reference("fill_200x200_ce.png"), reference("grav_ea_200x200.png"), RESAMPLED),
        ("east vs east+20 px", reference("grav_ea_200x200.png"), reference("grav_ea_20_0_200x200.png"), RESAMPLED),
        ("north vs north+20 px", reference("grav_no_300x100.png"), reference("grav_no_0_0.1_300x100.png"), RESAMPLED),
        ("rot 90 vs 270", reference("rot_90.png"), reference("rot_270.png"), COPIED),
        ("flip h vs none", reference("flip_h.png"), tiny.clone(), COPIED),
        ("upright vs mirrored", reference("orient_upright.png"), reference("orient_upright.png").fliph(), 0.9),
        ("blur vs none", reference("blur_2.png"), tiny.clone(), 0.95),
        ("sharpen vs none", reference("sharpen_1.png"), tiny.clone(), 0.95),
        ("pixelate vs none", reference("pixelate_10.png"), tiny, COPIED),
    ];
    for (name, a, b, floor) in &pairs {
        let s = ssim(a, b);
        println!("wrong answer {name}: ssim {s:.4} (floor {floor})");
        assert!(s < *floor, "{name}: SSIM {s:.4} would pass the floor {floor}");
    }
    // Identical images score 1, whatever the content.
    let r = reference("resize_300x200.png");
    assert!((ssim(&r, &r) - 1.0).abs() < 1e-9);
}

// ---------------------------------------------------------------- placeholders

/// One image's reference strings in `tests/golden/placeholders.json`.
#[derive(serde::Deserialize)]
struct PlaceholderRef {
    blurhash_size: [u32; 2],
    blurhash: std::collections::BTreeMap<String, String>,
    thumbhash: String,
}

/// BlurHash and ThumbHash strings equal, character for character, those of woltapp's C
/// encoder and evanw's JavaScript given the same pixels (`scripts/placeholder-refs.sh`).
#[test]
fn placeholder_hashes_match_the_reference_implementations() {
    use base64::Engine;

    use super::colors::{Sample, BLURHASH_SIDE};
    use super::hashes::{blurhash_encode, thumbhash_encode};

    let text = String::from_utf8(read("golden/placeholders.json")).unwrap();
    // JSON is YAML: no JSON parser needed in the core
    let refs: std::collections::BTreeMap<String, PlaceholderRef> = serde_yaml::from_str(&text).unwrap();
    assert!(refs.len() >= 12, "{} images", refs.len());
    let mut alpha = false;
    for (name, want) in &refs {
        let input = match std::fs::read(format!("{}/../../tests/golden/src/{name}", env!("CARGO_MANIFEST_DIR"))) {
            Ok(b) => b,
            Err(_) => read(&format!("data/images/{name}")),
        };
        let sample = Sample::from_source(&input, u64::MAX).unwrap();
        let th = thumbhash_encode(sample.width, sample.height, &sample.rgba).unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(&th), want.thumbhash, "{name} thumbhash");
        alpha |= th[2] & 0x80 != 0;
        let small = sample.fit(BLURHASH_SIDE).unwrap();
        assert_eq!([small.width, small.height], want.blurhash_size, "{name}");
        let rgb = small.rgb_over_white();
        assert!(want.blurhash.len() >= 4);
        for (components, hash) in &want.blurhash {
            let (x, y) = components.split_once(':').unwrap();
            let got = blurhash_encode(x.parse().unwrap(), y.parse().unwrap(), small.width, small.height, &rgb);
            assert_eq!(got.as_deref(), Some(hash.as_str()), "{name} blurhash {components}");
        }
    }
    assert!(alpha, "one reference image has alpha");
}
