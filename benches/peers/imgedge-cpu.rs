//! One-shot CPU timer for imgedge's transform pipeline, the counterpart of
//! `sharp-cpu.mjs` (same jobs, same output line), plus an SSIM tool for the outputs of
//! both. Used by `benches/peers/compare.sh`; build with
//! `cargo build --release --example peer-cpu`.
//!
//! ```text
//! peer-cpu [--reps N=7] [--out DIR] [--images DIR] JOB...
//!     JOB = name:file:width:format:quality      (format jpeg|webp|avif|png)
//!     RESULT peer=imgedge job=.. cpu_ms=<median> cpu_min_ms=.. wall_ms=<median> bytes=.. w=.. h=..
//! peer-cpu ssim SOURCE IMAGE...
//!     SSIM of each IMAGE (PNG, JPEG or WebP) against SOURCE decoded at full size and
//!     downscaled to the image's size with Lanczos3 (no shrink-on-load): the reference
//!     notes/imgstack.md uses. Gaussian window (σ 1.5, 11 taps), RGB mean.
//! ```
//!
//! CPU time is the sum over the process's threads (`/proc/self/task/*/schedstat`, ns), so
//! an encoder that spawns helper threads is still counted in full; pin the process with
//! `taskset -c 1` for a single-core figure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use imgedge_core::options::{Format, Options, ResizingType};
use imgedge_core::transform::{self, Settings};

fn cpu_ns() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

struct Job {
    name: String,
    file: String,
    width: u32,
    format: Format,
    quality: u8,
}

fn parse_job(spec: &str) -> Result<Job, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [name, file, width, format, quality, ..] = parts[..] else {
        return Err(format!("bad job {spec:?}: want name:file:width:format:quality"));
    };
    Ok(Job {
        name: name.to_owned(),
        file: file.to_owned(),
        width: width.parse().map_err(|e| format!("{spec}: width: {e}"))?,
        format: Format::from_ext(format).ok_or_else(|| format!("{spec}: unknown format"))?,
        quality: quality.parse().map_err(|e| format!("{spec}: quality: {e}"))?,
    })
}

fn time_jobs(args: &[String]) -> Result<(), String> {
    let mut reps = 7usize;
    let mut out: Option<PathBuf> = None;
    let mut images = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench/images"));
    let mut jobs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).ok_or("--reps N")?,
            "--out" => out = Some(it.next().ok_or("--out DIR")?.into()),
            "--images" => images = it.next().ok_or("--images DIR")?.into(),
            spec => jobs.push(parse_job(spec)?),
        }
    }
    if jobs.is_empty() {
        return Err("no jobs".into());
    }
    let settings = Settings::default();
    for job in jobs {
        let input = std::fs::read(images.join(&job.file)).map_err(|e| format!("{}: {e}", job.file))?;
        let opts = Options {
            resizing_type: ResizingType::Fit,
            width: job.width,
            format: Some(job.format),
            quality: Some(job.quality),
            ..Options::default()
        };
        // Warm-up, and the output that is kept for the size/SSIM columns.
        let mut last = transform::run(&input, &opts, &settings).map_err(|e| format!("{}: {e}", job.name))?;
        let (mut cpu, mut wall) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
        for _ in 0..reps {
            let (c0, t0) = (cpu_ns(), Instant::now());
            last = transform::run(std::hint::black_box(&input), &opts, &settings)
                .map_err(|e| format!("{}: {e}", job.name))?;
            wall.push(t0.elapsed().as_secs_f64() * 1e3);
            cpu.push((cpu_ns().saturating_sub(c0)) as f64 / 1e6);
        }
        if let Some(dir) = &out {
            let path = dir.join(format!("{}.imgedge.{}", job.name, job.format.ext()));
            std::fs::write(&path, &last.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let min = cpu.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "RESULT peer=imgedge job={} cpu_ms={:.2} cpu_min_ms={min:.2} wall_ms={:.2} bytes={} w={} h={}",
            job.name,
            median(&mut cpu),
            median(&mut wall),
            last.bytes.len(),
            last.width,
            last.height
        );
    }
    Ok(())
}

fn load_rgb(path: &Path) -> Result<image::RgbImage, String> {
    image::open(path).map(|i| i.to_rgb8()).map_err(|e| format!("{}: {e}", path.display()))
}

fn resize_rgb(src: &image::RgbImage, w: u32, h: u32) -> Result<image::RgbImage, String> {
    let s = Image::from_vec_u8(src.width(), src.height(), src.as_raw().clone(), PixelType::U8x3)
        .map_err(|e| e.to_string())?;
    let mut d = Image::new(w, h, PixelType::U8x3);
    let o = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3));
    Resizer::new().resize(&s, &mut d, &o).map_err(|e| e.to_string())?;
    image::RgbImage::from_raw(w, h, d.into_vec()).ok_or_else(|| "resize buffer".to_owned())
}

/// Separable Gaussian blur, σ 1.5, 11 taps, "valid" region only (as the window must fit).
fn blur(p: &[f64], w: usize, h: usize) -> (Vec<f64>, usize, usize) {
    const R: usize = 5;
    let k: Vec<f64> = (0..=2 * R).map(|i| (-((i as f64 - R as f64).powi(2)) / (2.0 * 1.5 * 1.5)).exp()).collect();
    let sum: f64 = k.iter().sum();
    let k: Vec<f64> = k.iter().map(|v| v / sum).collect();
    let (vw, vh) = (w - 2 * R, h - 2 * R);
    let mut tmp = vec![0.0; vw * h];
    for y in 0..h {
        for x in 0..vw {
            tmp[y * vw + x] = (0..=2 * R).map(|i| k[i] * p[y * w + x + i]).sum();
        }
    }
    let mut out = vec![0.0; vw * vh];
    for y in 0..vh {
        for x in 0..vw {
            out[y * vw + x] = (0..=2 * R).map(|i| k[i] * tmp[(y + i) * vw + x]).sum();
        }
    }
    (out, vw, vh)
}

/// Mean SSIM over the RGB channels (Wang et al. 2004, K1 .01, K2 .03, range 255).
fn ssim(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    let (w, h) = (a.width() as usize, a.height() as usize);
    if w < 11 || h < 11 {
        return f64::NAN;
    }
    let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
    let mut total = 0.0;
    for c in 0..3 {
        let x: Vec<f64> = a.pixels().map(|p| f64::from(p[c])).collect();
        let y: Vec<f64> = b.pixels().map(|p| f64::from(p[c])).collect();
        let prod = |f: &dyn Fn(usize) -> f64| (0..w * h).map(f).collect::<Vec<f64>>();
        let (mx, vw, vh) = blur(&x, w, h);
        let (my, ..) = blur(&y, w, h);
        let (xx, ..) = blur(&prod(&|i| x[i] * x[i]), w, h);
        let (yy, ..) = blur(&prod(&|i| y[i] * y[i]), w, h);
        let (xy, ..) = blur(&prod(&|i| x[i] * y[i]), w, h);
        let n = vw * vh;
        let s: f64 = (0..n)
            .map(|i| {
                let (sx, sy, sxy) = (xx[i] - mx[i] * mx[i], yy[i] - my[i] * my[i], xy[i] - mx[i] * my[i]);
                ((2.0 * mx[i] * my[i] + c1) * (2.0 * sxy + c2))
                    / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (sx + sy + c2))
            })
            .sum();
        total += s / n as f64;
    }
    total / 3.0
}

fn ssim_cmd(args: &[String]) -> Result<(), String> {
    let (src, outs) = args.split_first().ok_or("ssim SOURCE IMAGE...")?;
    let full = load_rgb(Path::new(src))?;
    for out in outs {
        let img = load_rgb(Path::new(out))?;
        let reference = resize_rgb(&full, img.width(), img.height())?;
        println!("SSIM file={out} ssim={:.4} w={} h={}", ssim(&reference, &img), img.width(), img.height());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ssim") => ssim_cmd(&args[1..]),
        _ => time_jobs(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-cpu: {e}");
            ExitCode::FAILURE
        }
    }
}
