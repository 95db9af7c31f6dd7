//! Transform benchmarks on the shared corpus (`../shared/bench/images/`, see its README).
//! Skips with a message when the corpus is not there (`IMGEDGE_BENCH_IMAGES=DIR` points
//! elsewhere). Run: `cargo bench --bench transform` (or `-- --quick` for a rough pass).
//!
//! Criterion measures wall time of one job on one thread; compare with the CPU-time
//! numbers in notes/imgstack.md only when the machine is otherwise idle.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use imgedge_core::options::{Format, Options, ResizingType, Watermark, WatermarkPosition};
use imgedge_core::transform::{self, bench, Settings};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench/images/");

/// `IMGEDGE_BENCH_IMAGES` overrides [`DIR`] (a worktree outside the main checkout).
fn load(name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var("IMGEDGE_BENCH_IMAGES").map_or_else(|_| DIR.to_owned(), |d| format!("{d}/"));
    match std::fs::read(format!("{dir}{name}")) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("skipping benchmarks that need {dir}{name}: {e}");
            None
        }
    }
}

fn fit(width: u32, format: Format, quality: u8) -> Options {
    Options {
        resizing_type: ResizingType::Fit,
        width,
        format: Some(format),
        quality: Some(quality),
        ..Options::default()
    }
}

fn end_to_end(c: &mut Criterion) {
    let settings = Settings::default();
    let mut g = c.benchmark_group("run");
    let jobs = [
        ("cups_4000x3000_q90.jpg", "jpeg4000_to_webp400_q80", fit(400, Format::Webp, 80)),
        ("cups_4000x3000_q90.jpg", "jpeg4000_to_jpeg1200_q80", fit(1200, Format::Jpeg, 80)),
        ("cups_4000x3000_q90.jpg", "jpeg4000_to_avif400_q63", fit(400, Format::Avif, 63)),
        ("path_4000x3000_q90.jpg", "jpeg4000detail_to_webp400_q80", fit(400, Format::Webp, 80)),
        ("autumn_1920x1280_q85.jpg", "jpeg1920_to_jpeg800_q80", fit(800, Format::Jpeg, 80)),
        ("leaf_alpha_1600x1000.png", "png1600rgba_to_webp400_q80", fit(400, Format::Webp, 80)),
        ("autumn_1920x1280_q80.webp", "webp1920_to_webp800_q80", fit(800, Format::Webp, 80)),
    ];
    for (file, name, opts) in jobs {
        let Some(input) = load(file) else { continue };
        g.bench_function(name, |b| {
            b.iter(|| transform::run(black_box(&input), black_box(&opts), &settings).map(|e| e.bytes.len()))
        });
    }
    g.finish();
}

fn decode_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let jobs = [
        ("cups_4000x3000_q90.jpg", "jpeg4000_full", 1),
        ("cups_4000x3000_q90.jpg", "jpeg4000_shrink4", 4),
        ("autumn_1920x1280_q85.jpg", "jpeg1920_full", 1),
        ("autumn_cmyk_1200x800.jpg", "jpeg1200_cmyk_zune", 1),
        ("leaf_alpha_1600x1000.png", "png1600_rgba", 1),
        ("autumn_1920x1280_q80.webp", "webp1920", 1),
    ];
    for (file, name, shrink) in jobs {
        let Some(input) = load(file) else { continue };
        g.bench_function(name, |b| b.iter(|| bench::decode(black_box(&input), shrink).map(|p| p.dims())));
    }
    g.finish();
}

/// 1/8-scale JPEG decoding: the engine's DC-domain decoder (through the same header
/// walk `run` does) against turbojpeg's own 1/8 DCT scaling.
fn decode_eighth(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (file, tag) in [("cups_4000x3000_q90.jpg", "cups"), ("path_4000x3000_q90.jpg", "path")] {
        let Some(input) = load(file) else { continue };
        g.bench_function(format!("jpeg_1_8_fast_{tag}"), |b| {
            b.iter(|| bench::decode(black_box(&input), 8).map(|p| p.dims()))
        });
        g.bench_function(format!("jpeg_1_8_turbo_{tag}"), |b| {
            b.iter(|| {
                let mut dec = turbojpeg::Decompressor::new().ok()?;
                let h = dec.read_header(black_box(&input)).ok()?;
                let f = turbojpeg::ScalingFactor::new(1, 8);
                dec.set_scaling_factor(f).ok()?;
                let (w, hh) = (f.scale(h.width), f.scale(h.height));
                let mut buf = vec![0u8; w * hh * 3];
                let format = turbojpeg::PixelFormat::RGB;
                let image = turbojpeg::Image { pixels: &mut buf[..], width: w, pitch: w * 3, height: hh, format };
                dec.decompress(&input, image).ok().map(|()| buf.len())
            })
        });
    }
    g.finish();
}

fn encode_only(c: &mut Criterion) {
    let Some(cups) = load("cups_4000x3000_q90.jpg") else { return };
    let Some(leaf) = load("leaf_alpha_1600x1000.png") else { return };
    let (Ok(rgb400), Ok(rgb1200), Ok(rgba400)) = (
        bench::transform(&cups, &fit(400, Format::Png, 80)),
        bench::transform(&cups, &fit(1200, Format::Png, 80)),
        bench::transform(&leaf, &fit(400, Format::Png, 80)),
    ) else {
        eprintln!("skipping encode benchmarks: inputs did not transform");
        return;
    };
    let mut g = c.benchmark_group("encode");
    let jobs = [
        ("rgb400_webp_q80", &rgb400, Format::Webp),
        ("rgb400_jpeg_q80", &rgb400, Format::Jpeg),
        ("rgb400_png_fast", &rgb400, Format::Png),
        ("rgb1200_jpeg_q80", &rgb1200, Format::Jpeg),
        ("rgba400_webp_q80", &rgba400, Format::Webp),
        ("rgba400_png_fast", &rgba400, Format::Png),
        ("rgb400_avif_q63", &rgb400, Format::Avif),
        ("rgba400_avif_q63", &rgba400, Format::Avif),
        ("rgba400_gif", &rgba400, Format::Gif),
    ];
    for (name, px, format) in jobs {
        let q = if format == Format::Avif { 63 } else { 80 };
        g.bench_function(name, |b| b.iter(|| bench::encode(black_box(px), format, q).map(|v| v.len())));
    }
    g.finish();
}

/// Decode + resize + orient without encoding, to split a job's time.
fn transform_only(c: &mut Criterion) {
    let mut g = c.benchmark_group("transform");
    for (file, name, width) in [
        ("cups_4000x3000_q90.jpg", "jpeg4000_to_400", 400),
        ("cups_4000x3000_q90.jpg", "jpeg4000_to_1200", 1200),
        ("leaf_alpha_1600x1000.png", "png1600rgba_to_400", 400),
    ] {
        let Some(input) = load(file) else { continue };
        let opts = fit(width, Format::Png, 80);
        g.bench_function(name, |b| b.iter(|| bench::transform(black_box(&input), &opts).map(|p| p.dims())));
    }
    g.finish();
}

/// The pixel steps on their own, on a 1200×900 RGB image (cups after resize) and the
/// 400×250 RGBA leaf. Resize has no entry of its own: it is `transform` minus `decode`.
fn steps(c: &mut Criterion) {
    let Some(cups) = load("cups_4000x3000_q90.jpg") else { return };
    let Some(leaf) = load("leaf_alpha_1600x1000.png") else { return };
    let (Ok(rgb), Ok(rgba)) =
        (bench::transform(&cups, &fit(1200, Format::Png, 80)), bench::transform(&leaf, &fit(400, Format::Png, 80)))
    else {
        eprintln!("skipping step benchmarks: inputs did not transform");
        return;
    };
    let mut g = c.benchmark_group("step");
    type InPlace = fn(&mut bench::Pixels) -> Result<(), imgedge_core::transform::TransformError>;
    let in_place: [(&str, InPlace); 3] = [
        ("blur_s2_rgb1200", |p| bench::blur(p, 2.0)),
        ("sharpen_s1_rgb1200", |p| bench::sharpen(p, 1.0)),
        ("pixelate_8_rgb1200", |p| bench::pixelate(p, 8)),
    ];
    for (name, f) in in_place {
        g.bench_function(name, |b| {
            b.iter_batched(
                || bench::duplicate(&rgb),
                |p| p.and_then(|mut p| f(&mut p).map(|()| p.dims())),
                BatchSize::LargeInput,
            )
        });
    }
    g.bench_function("rotate90_rgb1200", |b| b.iter(|| bench::rotate90(black_box(&rgb)).map(|p| p.dims())));
    g.bench_function("trim_rgba400", |b| b.iter(|| bench::trim(black_box(&rgba), 10.0)));
    g.bench_function("trim_rgb1200", |b| b.iter(|| bench::trim(black_box(&rgb), 10.0)));
    g.bench_function("smart_rgb1200_to_600", |b| b.iter(|| bench::smart(black_box(&rgb), 600, 600)));
    g.bench_function("embed_rgb1200_in_1400", |b| {
        b.iter(|| bench::embed(black_box(&rgb), 1400, 1100, [255, 255, 255, 255]).map(|p| p.dims()))
    });
    g.bench_function("embed_rgba400_in_500", |b| {
        b.iter(|| bench::embed(black_box(&rgba), 500, 500, [0, 0, 0, 0]).map(|p| p.dims()))
    });
    g.finish();
}

/// Blur's two kernels (direct Gaussian up to sigma 8, three box passes above) and its
/// premultiplied-alpha path, plus sharpen on alpha.
fn blur_kernels(c: &mut Criterion) {
    let Some(cups) = load("cups_4000x3000_q90.jpg") else { return };
    let Some(leaf) = load("leaf_alpha_1600x1000.png") else { return };
    let (Ok(rgb), Ok(rgba)) =
        (bench::transform(&cups, &fit(1200, Format::Png, 80)), bench::transform(&leaf, &fit(1200, Format::Png, 80)))
    else {
        eprintln!("skipping blur benchmarks: inputs did not transform");
        return;
    };
    let mut g = c.benchmark_group("blur");
    type InPlace = fn(&mut bench::Pixels) -> Result<(), imgedge_core::transform::TransformError>;
    let jobs: [(&str, &bench::Pixels, InPlace); 5] = [
        ("s0.5_rgb1200", &rgb, |p| bench::blur(p, 0.5)),
        ("s20_box_rgb1200", &rgb, |p| bench::blur(p, 20.0)),
        ("s100_box_rgb1200", &rgb, |p| bench::blur(p, 100.0)),
        ("s2_rgba1200", &rgba, |p| bench::blur(p, 2.0)),
        ("sharpen_s1_rgba1200", &rgba, |p| bench::sharpen(p, 1.0)),
    ];
    for (name, px, f) in jobs {
        g.bench_function(name, |b| {
            b.iter_batched(
                || bench::duplicate(px),
                |p| p.and_then(|mut p| f(&mut p).map(|()| p.dims())),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// The same 4000x3000 → 400w WebP with and without a watermark, in one run: the watermark
/// is drawn on the 400-pixel result, so it must cost little next to decoding and encoding
/// (README § URLs, Watermark: at most 1.1×). `cargo bench --bench transform -- watermark`.
fn watermark(c: &mut Criterion) {
    let Some(input) = load("cups_4000x3000_q90.jpg") else { return };
    let logo = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/demo-images/watermark.png");
    let wm = match std::fs::read(logo).map(|b| transform::WatermarkImage::decode(&b, u64::MAX)) {
        Ok(Ok(wm)) => std::sync::Arc::new(wm),
        other => {
            eprintln!("skipping watermark benchmarks: {logo}: {other:?}");
            return;
        }
    };
    let settings = Settings { watermark: Some(wm), ..Settings::default() };
    let plain = fit(400, Format::Webp, 80);
    let mark = |position: &str, x: f64, scale: f64| Options {
        watermark: Watermark {
            opacity: 0.6,
            position: WatermarkPosition::parse(position).unwrap_or_default(),
            x_offset: x,
            y_offset: x,
            scale,
            source: None,
        },
        ..plain.clone()
    };
    let mut g = c.benchmark_group("watermark");
    let jobs = [
        ("jpeg4000_to_webp400", plain.clone()),
        ("jpeg4000_to_webp400_wm_soea_scale0.25", mark("soea", 10.0, 0.25)),
        ("jpeg4000_to_webp400_wm_re_tiled", mark("re", 20.0, 0.0)),
    ];
    for (name, opts) in jobs {
        g.bench_function(name, |b| {
            b.iter(|| transform::run(black_box(&input), black_box(&opts), &settings).map(|e| e.bytes.len()))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = end_to_end, transform_only, decode_only, decode_eighth, encode_only, steps, blur_kernels, watermark
}
criterion_main!(benches);
