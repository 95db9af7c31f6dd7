//! Watermark golden tests: [`run`] with `wm` against libvips composites
//! (`scripts/golden-watermark.sh`, references `tests/golden/ref/wm_*.png`).
//!
//! The base is lossless (`tests/golden/src/tiny.png`, 150×100) and the output PNG, so only
//! the watermark can differ. Bound: PSNR ≥ [`MIN_PSNR`] dB over RGB. Placed like the
//! reference, the differences are rounding (blending) and, when scaled, our Lanczos3 against
//! Pillow's (measured: 55–61 dB unscaled and tiled, 53–59 dB scaled; `-- --nocapture`
//! prints them). A watermark moved by 2 pixels either way, or missing, fails the bound on
//! every case (`a_watermark_two_pixels_off_fails_the_bound`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::{run, Settings, WatermarkImage};
use crate::options::{Format, Options, Watermark, WatermarkPosition};

const MIN_PSNR: f64 = 45.0;

fn read(rel: &str) -> Vec<u8> {
    let path = format!("{}/../../tests/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let se: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
    let mse = se / a.as_raw().len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0 * 255.0 / mse).log10()
}

fn watermarked(position: &str, x: f64, y: f64, opacity: f64, scale: f64) -> image::RgbImage {
    let wm = WatermarkImage::decode(&read("golden/src/watermark_80x24.png"), u64::MAX).unwrap();
    let settings = Settings { watermark: Some(Arc::new(wm)), ..Settings::default() };
    let opts = Options {
        format: Some(Format::Png),
        watermark: Watermark {
            opacity,
            position: WatermarkPosition::parse(position).unwrap(),
            x_offset: x,
            y_offset: y,
            scale,
            source: None,
        },
        ..Options::default()
    };
    let out = run(&read("golden/src/tiny.png"), &opts, &settings).unwrap();
    assert_eq!((out.width, out.height), (150, 100));
    rgb(&out.bytes)
}

fn reference(name: &str) -> image::RgbImage {
    rgb(&read(&format!("golden/ref/wm_{name}.png")))
}

/// (reference, position, x, y, opacity, scale), as `scripts/golden-watermark.sh` makes them.
const CASES: &[(&str, &str, f64, f64, f64, f64)] = &[
    ("ce", "ce", 10.0, 5.0, 0.8, 0.0),
    ("no", "no", 10.0, 5.0, 0.8, 0.0),
    ("so", "so", 10.0, 5.0, 0.8, 0.0),
    ("ea", "ea", 10.0, 5.0, 0.8, 0.0),
    ("we", "we", 10.0, 5.0, 0.8, 0.0),
    ("noea", "noea", 10.0, 5.0, 0.8, 0.0),
    ("nowe", "nowe", 10.0, 5.0, 0.8, 0.0),
    ("soea", "soea", 10.0, 5.0, 0.8, 0.0),
    ("sowe", "sowe", 10.0, 5.0, 0.8, 0.0),
    ("scale_0.6_soea", "soea", 0.0, 0.0, 1.0, 0.6),
    ("scale_0.4_ce", "ce", 0.0, 0.0, 1.0, 0.4),
    ("re_20_10", "re", 20.0, 10.0, 0.5, 0.0),
];

#[test]
fn watermarks_match_libvips_composites() {
    for &(name, pos, x, y, opacity, scale) in CASES {
        let p = psnr(&watermarked(pos, x, y, opacity, scale), &reference(name));
        println!("wm {name}: PSNR {p:.1} dB");
        assert!(p >= MIN_PSNR, "{name}: PSNR {p:.1} dB < {MIN_PSNR}");
    }
}

#[test]
fn a_watermark_two_pixels_off_fails_the_bound() {
    for &(name, pos, x, y, opacity, scale) in CASES {
        // offsets move the watermark inwards on east/south sides, gaps for `re`: either way,
        // two more pixels is a different picture
        for (dx, dy) in [(2.0, 0.0), (0.0, 2.0)] {
            let p = psnr(&watermarked(pos, x + dx, y + dy, opacity, scale), &reference(name));
            println!("wm {name} moved ({dx}, {dy}): PSNR {p:.1} dB");
            assert!(p < MIN_PSNR, "{name} moved by ({dx}, {dy}) still passes: {p:.1} dB");
        }
    }
    // and no watermark at all fails too
    let plain = rgb(&read("golden/src/tiny.png"));
    for &(name, ..) in CASES {
        assert!(psnr(&plain, &reference(name)) < MIN_PSNR, "{name} without a watermark passes");
    }
}
