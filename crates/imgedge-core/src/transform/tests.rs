//! End-to-end tests of `probe` and `run` on real files from `tests/data/images/` and on
//! small synthetic images built here.
#![allow(clippy::unwrap_used)]

use image::{DynamicImage, GenericImageView, ImageEncoder, Rgba};

use super::*;
use crate::options::{Gravity, GravityType, ResizingType};

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/images/", $name)).as_slice()
    };
}
// Shared with the pipeline's own tests, together with the fixtures and helpers below.
pub(super) use fixture;

pub(super) const COFFEE: &[u8] = fixture!("coffee_600x400.jpg");
pub(super) const ORIENT6: &[u8] = fixture!("autumn_orient6_stored1920x1280.jpg");
const AUTUMN: &[u8] = fixture!("autumn_1920x1280_q85.jpg");
const CMYK: &[u8] = fixture!("autumn_cmyk_1200x800.jpg");
const CHELSEA_PNG: &[u8] = fixture!("chelsea_451x300.png");
const CHELSEA_GIF: &[u8] = fixture!("chelsea_451x300.gif");
const LOGO_RGBA: &[u8] = fixture!("skimage_logo_rgba.png");
const ANIM_GIF: &[u8] = fixture!("anim_tiny.gif");
const ANIM_WEBP: &[u8] = fixture!("anim_tiny.webp");
pub(super) const LEAF_PNG: &[u8] = fixture!("leaf_alpha_400x250.png");
const LEAF_WEBP: &[u8] = fixture!("leaf_alpha_400x250_lossy.webp");
const LEAF_WEBP_LOSSLESS: &[u8] = fixture!("leaf_alpha_100x63_lossless.webp");
const COFFEE_WEBP: &[u8] = fixture!("coffee_300x200_lossy.webp");
const COFFEE_WEBP_ORIENT6: &[u8] = fixture!("coffee_300x200_orient6.webp");

fn opts(rt: ResizingType, w: u32, h: u32) -> Options {
    Options { resizing_type: rt, width: w, height: h, ..Options::default() }
}

fn with_format(mut o: Options, f: Format) -> Options {
    o.format = Some(f);
    o
}

pub(super) fn run_ok(input: &[u8], o: &Options) -> Encoded {
    run(input, o, &Settings::default()).unwrap()
}

/// Decodes an output with `image` and checks it against what `run` reported.
pub(super) fn decoded(e: &Encoded) -> DynamicImage {
    let fmt = match e.format {
        Format::Jpeg => image::ImageFormat::Jpeg,
        Format::Png => image::ImageFormat::Png,
        Format::Webp => image::ImageFormat::WebP,
        Format::Gif => image::ImageFormat::Gif,
        other => panic!("no reference decoder for {other}"),
    };
    assert_eq!(image::guess_format(&e.bytes).unwrap(), fmt, "magic bytes");
    let img = image::load_from_memory_with_format(&e.bytes, fmt).unwrap();
    assert_eq!(img.dimensions(), (e.width, e.height), "reported size");
    img
}

fn dims(input: &[u8], o: &Options) -> (u32, u32) {
    let e = run_ok(input, o);
    decoded(&e).dimensions()
}

fn mean_rgb(img: &DynamicImage) -> [f64; 3] {
    let rgb = img.to_rgb8();
    let mut sum = [0f64; 3];
    for p in rgb.pixels() {
        for (s, &v) in sum.iter_mut().zip(&p.0) {
            *s += f64::from(v);
        }
    }
    let n = f64::from(rgb.width() * rgb.height());
    sum.map(|s| s / n)
}

pub(super) fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
    a.iter().zip(b).all(|(&x, y)| x.abs_diff(y) <= tol)
}

fn rgb_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 3] {
    let p = img.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

// ---------------------------------------------------------------- geometry end to end

#[test]
fn resizing_types_on_a_real_jpeg() {
    use ResizingType::*;
    assert_eq!(dims(COFFEE, &opts(Fit, 300, 0)), (300, 200));
    assert_eq!(dims(COFFEE, &opts(Fit, 0, 100)), (150, 100));
    assert_eq!(dims(COFFEE, &opts(Fit, 300, 300)), (300, 200));
    assert_eq!(dims(COFFEE, &opts(Fill, 200, 200)), (200, 200));
    assert_eq!(dims(COFFEE, &opts(Fill, 300, 100)), (300, 100));
    assert_eq!(dims(COFFEE, &opts(FillDown, 200, 100)), (200, 100));
    assert_eq!(dims(COFFEE, &opts(FillDown, 800, 800)), (400, 400));
    assert_eq!(dims(COFFEE, &opts(Force, 100, 300)), (100, 300));
    assert_eq!(dims(COFFEE, &opts(Auto, 300, 100)), (300, 100));
    assert_eq!(dims(COFFEE, &opts(Auto, 100, 300)), (100, 67));
    // No resize at all.
    assert_eq!(dims(COFFEE, &opts(Fit, 0, 0)), (600, 400));
    // 600/50 = 12 → decoded at 1/4 (150×100) and resized from there.
    assert_eq!(dims(COFFEE, &opts(Fit, 50, 0)), (50, 33));
}

#[test]
fn enlarge_and_dpr() {
    use ResizingType::*;
    assert_eq!(dims(COFFEE, &opts(Fit, 1200, 0)), (600, 400));
    // Fill without enlarge clamps the box to the image; fill-down keeps its aspect.
    assert_eq!(dims(COFFEE, &opts(Fill, 1000, 1000)), (600, 400));
    assert_eq!(dims(COFFEE, &opts(FillDown, 1000, 1000)), (400, 400));
    let mut o = opts(Fit, 1200, 0);
    o.enlarge = true;
    assert_eq!(dims(COFFEE, &o), (1200, 800));
    let mut o = opts(Force, 700, 100);
    o.enlarge = true;
    assert_eq!(dims(COFFEE, &o), (700, 100));
    let mut o = opts(Fit, 200, 0);
    o.dpr = 2.0;
    assert_eq!(dims(COFFEE, &o), (400, 267));
    let mut o = opts(Fit, 400, 0);
    o.dpr = 2.0;
    assert_eq!(dims(COFFEE, &o), (600, 400), "no upscale through dpr");
    let mut o = opts(Fill, 300, 300);
    o.dpr = 3.0;
    assert_eq!(dims(COFFEE, &o), (400, 400), "dpr drops to what the source has");
}

// ---------------------------------------------------------------- formats

#[test]
fn output_formats_from_every_input() {
    let inputs: [(&[u8], Format); 6] = [
        (COFFEE, Format::Jpeg),
        (CHELSEA_PNG, Format::Png),
        (CHELSEA_GIF, Format::Gif),
        (COFFEE_WEBP, Format::Webp),
        (LEAF_WEBP_LOSSLESS, Format::Webp),
        (LEAF_PNG, Format::Png),
    ];
    for (input, default_out) in inputs {
        let o = opts(ResizingType::Fit, 80, 80);
        let e = run_ok(input, &o);
        assert_eq!(e.format, default_out);
        decoded(&e);
        for f in [Format::Jpeg, Format::Png, Format::Webp, Format::Gif] {
            let e = run_ok(input, &with_format(o.clone(), f));
            assert_eq!(e.format, f);
            let img = decoded(&e);
            assert!(img.width() <= 80 && img.height() <= 80);
        }
    }
    // Read-only formats are never written.
    assert_eq!(
        run(COFFEE, &with_format(Options::default(), Format::Bmp), &Settings::default()).unwrap_err(),
        TransformError::UnsupportedOutput(Format::Bmp)
    );
}

#[test]
fn animations_give_their_first_frame() {
    let e = run_ok(ANIM_GIF, &Options::default());
    assert_eq!((e.format, e.width, e.height), (Format::Gif, 14, 25));
    decoded(&e);
    let e = run_ok(ANIM_WEBP, &Options::default());
    assert_eq!((e.format, e.width, e.height), (Format::Webp, 14, 25));
    decoded(&e);
}

#[test]
fn quality_is_applied() {
    let size = |q| {
        let mut o = with_format(opts(ResizingType::Fit, 300, 0), Format::Jpeg);
        o.quality = Some(q);
        run_ok(COFFEE, &o).bytes.len()
    };
    assert!(size(30) < size(90));
    let webp = |q| {
        let mut o = with_format(opts(ResizingType::Fit, 300, 0), Format::Webp);
        o.quality = Some(q);
        run_ok(COFFEE, &o).bytes.len()
    };
    assert!(webp(30) < webp(90));
}

#[test]
fn webp_output_is_lossy() {
    let e = run_ok(COFFEE, &with_format(opts(ResizingType::Fit, 300, 0), Format::Webp));
    assert_eq!(&e.bytes[12..16], b"VP8 ", "lossy bitstream");
}

#[test]
fn output_carries_no_metadata() {
    // The fixture's EXIF has an Artist tag, which `kcr` (on by default) keeps.
    for f in [Format::Jpeg, Format::Png, Format::Webp] {
        let mut o = with_format(opts(ResizingType::Fit, 100, 0), f);
        o.keep_copyright = false;
        let e = run_ok(ORIENT6, &o);
        assert!(!e.bytes.windows(4).any(|w| w == b"Exif"), "{f}: EXIF copied");
    }
}

#[test]
fn grey_and_sixteen_bit_sources() {
    // Grey JPEG from turbojpeg.
    let grey: Vec<u8> = (0..64 * 48).map(|i| (i % 251) as u8).collect();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Gray).unwrap();
    let jpg = c
        .compress_to_vec(turbojpeg::Image {
            pixels: grey.as_slice(),
            width: 64,
            pitch: 64,
            height: 48,
            format: turbojpeg::PixelFormat::GRAY,
        })
        .unwrap();
    for f in [Format::Jpeg, Format::Png, Format::Webp] {
        let e = run_ok(&jpg, &with_format(opts(ResizingType::Fit, 32, 0), f));
        assert_eq!(decoded(&e).dimensions(), (32, 24));
    }
    // 16-bit RGBA PNG with real transparency.
    let img = image::ImageBuffer::from_fn(40, 30, |x, _| image::Rgba([65535u16, 0, 0, if x < 20 { 0 } else { 65535 }]));
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(bytemuck_u16(img.as_raw()).as_slice(), 40, 30, image::ExtendedColorType::Rgba16)
        .unwrap();
    let e = run_ok(&png, &opts(ResizingType::Fit, 20, 0));
    let out = decoded(&e).to_rgba8();
    assert_eq!(out.dimensions(), (20, 15));
    assert_eq!(out.get_pixel(1, 7).0[3], 0);
    assert_eq!(out.get_pixel(18, 7).0, [255, 0, 0, 255]);
}

/// PNG wants 16-bit samples big-endian.
fn bytemuck_u16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|s| s.to_be_bytes()).collect()
}

// ---------------------------------------------------------------- orientation

#[test]
fn orient6_file_comes_out_portrait() {
    let p = probe(ORIENT6).unwrap();
    assert_eq!((p.format, p.width, p.height), (Format::Jpeg, 1280, 1920));
    assert_eq!(dims(ORIENT6, &opts(ResizingType::Fit, 320, 0)), (320, 480));
    assert_eq!(dims(ORIENT6, &opts(ResizingType::Fill, 300, 100)), (300, 100));
    let e = run_ok(ORIENT6, &Options::default());
    assert_eq!((e.width, e.height), (1280, 1920));
}

#[test]
fn webp_exif_orientation_is_applied() {
    let p = probe(COFFEE_WEBP_ORIENT6).unwrap();
    assert_eq!((p.width, p.height), (200, 300));
    assert_eq!(dims(COFFEE_WEBP_ORIENT6, &opts(ResizingType::Fit, 100, 0)), (100, 150));
}

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];

/// `w × h` RGB with red, green, blue and white quadrants (TL, TR, BL, BR).
fn quadrants(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(match (x < w / 2, y < h / 2) {
                (true, true) => &RED,
                (false, true) => &GREEN,
                (true, false) => &BLUE,
                (false, false) => &WHITE,
            });
        }
    }
    v
}

/// A 64×32 quadrant JPEG with an EXIF APP1 carrying `orientation`, written by hand:
/// TIFF header, IFD0 with the single Orientation (0x0112, SHORT) entry.
fn jpeg_with_orientation(orientation: u16, big_endian: bool) -> Vec<u8> {
    let px = quadrants(64, 32);
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(95).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::None).unwrap();
    let jpg = c
        .compress_to_vec(turbojpeg::Image {
            pixels: px.as_slice(),
            width: 64,
            pitch: 64 * 3,
            height: 32,
            format: turbojpeg::PixelFormat::RGB,
        })
        .unwrap();
    type Bytes16 = fn(u16) -> [u8; 2];
    type Bytes32 = fn(u32) -> [u8; 4];
    let (u16b, u32b): (Bytes16, Bytes32) =
        if big_endian { (u16::to_be_bytes, u32::to_be_bytes) } else { (u16::to_le_bytes, u32::to_le_bytes) };
    let mut tiff = Vec::new();
    tiff.extend_from_slice(if big_endian { b"MM" } else { b"II" });
    tiff.extend_from_slice(&u16b(42));
    tiff.extend_from_slice(&u32b(8));
    tiff.extend_from_slice(&u16b(1));
    tiff.extend_from_slice(&u16b(0x0112));
    tiff.extend_from_slice(&u16b(3));
    tiff.extend_from_slice(&u32b(1));
    tiff.extend_from_slice(&u16b(orientation));
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&u32b(0));
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    let mut out = jpg[..2].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpg[2..]);
    out
}

/// Display corners (TL, TR, BL, BR) of the quadrant image for each EXIF orientation.
fn expected_corners(o: u16) -> [[u8; 3]; 4] {
    match o {
        1 => [RED, GREEN, BLUE, WHITE],
        2 => [GREEN, RED, WHITE, BLUE],
        3 => [WHITE, BLUE, GREEN, RED],
        4 => [BLUE, WHITE, RED, GREEN],
        5 => [RED, BLUE, GREEN, WHITE],
        6 => [BLUE, RED, WHITE, GREEN],
        7 => [WHITE, GREEN, BLUE, RED],
        8 => [GREEN, WHITE, RED, BLUE],
        _ => unreachable!(),
    }
}

fn corners(img: &DynamicImage) -> [[u8; 3]; 4] {
    let (w, h) = img.dimensions();
    let (l, t, r, b) = (1, 1, w - 2, h - 2);
    [rgb_at(img, l, t), rgb_at(img, r, t), rgb_at(img, l, b), rgb_at(img, r, b)]
}

#[test]
fn all_eight_orientations() {
    for o in 1..=8u16 {
        for big_endian in [false, true] {
            let jpg = jpeg_with_orientation(o, big_endian);
            let upright = if o >= 5 { (32, 64) } else { (64, 32) };
            let p = probe(&jpg).unwrap();
            assert_eq!((p.width, p.height), upright, "probe, orientation {o}");

            // No resize: pure orientation, lossless output.
            let e = run_ok(&jpg, &with_format(Options::default(), Format::Png));
            let img = decoded(&e);
            assert_eq!(img.dimensions(), upright);
            let want = expected_corners(o);
            for (got, want) in corners(&img).iter().zip(want) {
                assert!(close(*got, want, 40), "orientation {o}: {got:?} vs {want:?}");
            }

            // Resize + crop + orientation: the box is planned in display space, so a
            // north-west fill crop must show the display top-left colour.
            let mut fill = with_format(opts(ResizingType::Fill, 8, 8), Format::Png);
            fill.gravity.kind = GravityType::NorthWest;
            let img = decoded(&run_ok(&jpg, &fill));
            assert_eq!(img.dimensions(), (8, 8));
            assert!(close(rgb_at(&img, 2, 2), want[0], 40), "fill, orientation {o}");
            fill.gravity.kind = GravityType::SouthEast;
            let img = decoded(&run_ok(&jpg, &fill));
            assert!(close(rgb_at(&img, 5, 5), want[3], 40), "fill SE, orientation {o}");
        }
    }
}

/// CRC-32 (IEEE) as PNG chunks need it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn png_exif_orientation_is_applied() {
    // The quadrant image as PNG with an eXIf chunk (orientation 8) right after IHDR.
    let png = png_of(&quadrants(64, 32), 64, 32);
    let jpg = jpeg_with_orientation(8, false);
    let at = jpg.windows(6).position(|w| w == b"Exif\0\0").unwrap() + 6;
    let tiff = &jpg[at..at + 26];
    let mut chunk = (tiff.len() as u32).to_be_bytes().to_vec();
    let mut body = b"eXIf".to_vec();
    body.extend_from_slice(tiff);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    let ihdr_end = 8 + 8 + 13 + 4;
    let mut with_exif = png[..ihdr_end].to_vec();
    with_exif.extend_from_slice(&chunk);
    with_exif.extend_from_slice(&png[ihdr_end..]);

    let p = probe(&with_exif).unwrap();
    assert_eq!((p.width, p.height), (32, 64));
    let img = decoded(&run_ok(&with_exif, &Options::default()));
    assert_eq!(img.dimensions(), (32, 64));
    assert_eq!(corners(&img), expected_corners(8));
}

#[test]
fn broken_exif_is_ignored() {
    // Out-of-range orientation and an IFD claiming 65535 entries.
    let jpg = jpeg_with_orientation(9, false);
    assert_eq!(dims(&jpg, &Options::default()), (64, 32));
    let mut jpg = jpeg_with_orientation(6, false);
    let at = jpg.windows(6).position(|w| w == b"Exif\0\0").unwrap() + 6 + 8;
    jpg[at..at + 2].copy_from_slice(&[0xFF, 0xFF]);
    assert_eq!(dims(&jpg, &Options::default()), (64, 32));
}

// ---------------------------------------------------------------- alpha

#[test]
fn alpha_survives_to_webp_and_png() {
    for f in [Format::Png, Format::Webp] {
        for src in [LEAF_PNG, LEAF_WEBP] {
            let e = run_ok(src, &with_format(opts(ResizingType::Fit, 200, 0), f));
            let img = decoded(&e).to_rgba8();
            assert_eq!(img.dimensions(), (200, 125));
            // Corners of the leaf image are fully transparent, its centre opaque.
            assert!(img.get_pixel(1, 1).0[3] < 10, "{f}: corner alpha");
            assert!(img.get_pixel(100, 62).0[3] > 245, "{f}: centre alpha");
        }
    }
}

#[test]
fn alpha_is_flattened_onto_white_for_jpeg() {
    for src in [LEAF_PNG, LEAF_WEBP, LEAF_WEBP_LOSSLESS] {
        let e = run_ok(src, &with_format(opts(ResizingType::Fit, 100, 0), Format::Jpeg));
        let img = decoded(&e);
        assert!(close(rgb_at(&img, 1, 1), WHITE, 6), "corner {:?}", rgb_at(&img, 1, 1));
        assert!(!close(rgb_at(&img, 50, 31), WHITE, 40), "centre is the leaf");
    }
}

#[test]
fn opaque_alpha_is_dropped_and_colours_kept() {
    let e = run_ok(LOGO_RGBA, &opts(ResizingType::Fit, 100, 0));
    let img = decoded(&e);
    assert_eq!(img.color(), image::ColorType::Rgb8, "unused alpha channel dropped");
    assert!(close(rgb_at(&img, 0, 0), WHITE, 3));
}

// ---------------------------------------------------------------- CMYK

#[test]
fn cmyk_jpeg_has_plausible_colours() {
    let o = with_format(opts(ResizingType::Fit, 300, 0), Format::Png);
    let cmyk = decoded(&run_ok(CMYK, &o));
    let rgb = decoded(&run_ok(AUTUMN, &o));
    assert_eq!(cmyk.dimensions(), (300, 200));
    assert_eq!(rgb.dimensions(), (300, 200));
    let (a, b) = (mean_rgb(&cmyk), mean_rgb(&rgb));
    for c in 0..3 {
        assert!((a[c] - b[c]).abs() < 12.0, "channel {c}: cmyk {a:?} vs rgb {b:?}");
    }
}

// ---------------------------------------------------------------- gravity

fn png_of(px: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(px, w, h, image::ExtendedColorType::Rgb8).unwrap();
    png
}

/// Four equal bands of red, green, blue, white: left to right, or top to bottom.
fn bands(w: u32, h: u32, across: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let band = if across { x * 4 / w } else { y * 4 / h };
            v.extend_from_slice(&[RED, GREEN, BLUE, WHITE][band as usize]);
        }
    }
    v
}

#[test]
fn gravity_crops_the_right_region() {
    use GravityType::*;
    let crop = |png: &[u8], kind, x, y, w, h| {
        let mut o = opts(ResizingType::Fill, w, h);
        o.gravity = Gravity { kind, x_offset: x, y_offset: y };
        decoded(&run_ok(png, &o))
    };
    // 200×100 with 50 px wide vertical bands; a 50×100 box needs no scaling.
    let across = png_of(&bands(200, 100, true), 200, 100);
    let mid = |img: &DynamicImage| rgb_at(img, img.width() / 2, img.height() / 2);
    let img = crop(&across, West, 0.0, 0.0, 50, 100);
    assert_eq!(img.dimensions(), (50, 100));
    assert!(close(mid(&img), RED, 2));
    assert!(close(mid(&crop(&across, East, 0.0, 0.0, 50, 100)), WHITE, 2));
    assert!(close(mid(&crop(&across, NorthWest, 0.0, 0.0, 50, 100)), RED, 2));
    assert!(close(mid(&crop(&across, SouthEast, 0.0, 0.0, 50, 100)), WHITE, 2));
    // Centre straddles the green/blue edge at x = 100.
    let img = crop(&across, Center, 0.0, 0.0, 50, 100);
    assert!(close(rgb_at(&img, 10, 50), GREEN, 2) && close(rgb_at(&img, 40, 50), BLUE, 2));
    // Offsets: pixels when >= 1, a fraction of the width when < 1; east counts inwards.
    assert!(close(mid(&crop(&across, West, 100.0, 0.0, 50, 100)), BLUE, 2));
    assert!(close(mid(&crop(&across, West, 0.25, 0.0, 50, 100)), GREEN, 2));
    assert!(close(mid(&crop(&across, East, 50.0, 0.0, 50, 100)), BLUE, 2));
    assert!(close(mid(&crop(&across, Center, -50.0, 0.0, 50, 100)), GREEN, 2));
    // Offsets cannot push the box out of the image.
    assert!(close(mid(&crop(&across, West, 1000.0, 0.0, 50, 100)), WHITE, 2));
    // The same with downscaling: 400×200 → 100×50 box, scaled to 200×100 first.
    let big = png_of(&bands(400, 200, true), 400, 200);
    let img = crop(&big, East, 0.0, 0.0, 25, 50);
    assert_eq!(img.dimensions(), (25, 50));
    assert!(close(mid(&img), WHITE, 8));
    assert!(close(mid(&crop(&big, West, 0.0, 0.0, 25, 50)), RED, 8));

    // 100×200 with horizontal bands for north / south.
    let down = png_of(&bands(100, 200, false), 100, 200);
    assert!(close(mid(&crop(&down, North, 0.0, 0.0, 100, 50)), RED, 2));
    assert!(close(mid(&crop(&down, South, 0.0, 0.0, 100, 50)), WHITE, 2));
    assert!(close(mid(&crop(&down, NorthEast, 0.0, 50.0, 100, 50)), GREEN, 2));
    assert!(close(mid(&crop(&down, South, 0.0, 0.5, 100, 50)), GREEN, 2));
}

// ---------------------------------------------------------------- probe and limits

#[test]
fn probe_reads_headers_only() {
    let cases: [(&[u8], Format, u32, u32); 7] = [
        (COFFEE, Format::Jpeg, 600, 400),
        (CHELSEA_PNG, Format::Png, 451, 300),
        (CHELSEA_GIF, Format::Gif, 451, 300),
        (COFFEE_WEBP, Format::Webp, 300, 200),
        (LEAF_WEBP, Format::Webp, 400, 250),
        (LEAF_WEBP_LOSSLESS, Format::Webp, 100, 63),
        (ANIM_WEBP, Format::Webp, 14, 25),
    ];
    for (bytes, format, width, height) in cases {
        assert_eq!(probe(bytes).unwrap(), Probe { format, width, height });
        // The header alone is enough: cut the file right after it.
        let head = &bytes[..bytes.len().min(1024)];
        assert_eq!(probe(head).unwrap(), Probe { format, width, height });
    }
    assert_eq!(probe(ORIENT6).unwrap().width, 1280);
}

/// A PNG that is only a signature and an IHDR claiming `w × h` RGBA.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    v
}

#[test]
fn oversized_sources_are_refused_before_decoding() {
    let settings = Settings { max_src_pixels: 100_000, ..Settings::default() };
    assert_eq!(
        run(COFFEE, &Options::default(), &settings).unwrap_err(),
        TransformError::SourceTooLarge { width: 600, height: 400, max_pixels: 100_000 }
    );
    // Headers claiming absurd sizes, with (almost) no pixel data behind them.
    let bomb = png_header_only(100_000, 100_000);
    assert!(matches!(
        run(&bomb, &Options::default(), &Settings::default()),
        Err(TransformError::SourceTooLarge { width: 100_000, height: 100_000, .. })
    ));
    let mut sof = COFFEE.to_vec();
    let at = sof.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    sof[at + 5..at + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    assert!(matches!(
        run(&sof, &Options::default(), &Settings::default()),
        Err(TransformError::SourceTooLarge { width: 65500, height: 65500, .. })
    ));
    let gif_screen = b"GIF89a\xff\xff\xff\xff\x00\x00\x00;";
    assert!(matches!(
        run(gif_screen, &Options::default(), &Settings::default()),
        Err(TransformError::SourceTooLarge { .. })
    ));
}

#[test]
fn gif_frame_larger_than_its_screen_is_refused() {
    // 1×1 screen, one frame claiming 65535×65535 with a byte of LZW data.
    let mut gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00".to_vec();
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00]);
    gif.extend_from_slice(&[0x02, 0x01, 0x44, 0x00, 0x3B]);
    assert!(matches!(run(&gif, &Options::default(), &Settings::default()), Err(TransformError::Decode(_))));
}

#[test]
fn garbage_is_unsupported() {
    for bytes in [
        b"".as_slice(),
        b"hello",
        b"<html><script>alert(1)</script></html>",
        b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>",
        b"BM\x00\x00",
        b"RIFF\x00\x00\x00\x00WAVE",
    ] {
        assert_eq!(probe(bytes).unwrap_err(), TransformError::UnsupportedSource);
        assert_eq!(
            run(bytes, &Options::default(), &Settings::default()).unwrap_err(),
            TransformError::UnsupportedSource
        );
    }
}

#[test]
fn truncated_sources() {
    // JPEG: libjpeg-turbo only warns and fills the missing rows: a valid image.
    let cut = &AUTUMN[..AUTUMN.len() * 4 / 10];
    let e = run(cut, &opts(ResizingType::Fit, 480, 0), &Settings::default()).unwrap();
    assert_eq!(decoded(&e).dimensions(), (480, 320));
    // The same for a progressive JPEG cut after its first scans (zune refuses those).
    let rgb = turbojpeg::decompress(COFFEE, turbojpeg::PixelFormat::RGB).unwrap();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_progressive(true).unwrap();
    let progressive = c.compress_to_vec(rgb.as_deref()).unwrap();
    for cut in [progressive.len() / 4, progressive.len() / 2] {
        let e = run(&progressive[..cut], &opts(ResizingType::Fit, 300, 0), &Settings::default());
        assert_eq!(decoded(&e.unwrap()).dimensions(), (300, 200), "cut at {cut}");
    }
    // PNG, WebP, GIF: decode errors.
    for (name, bytes) in [("png", CHELSEA_PNG), ("webp", LEAF_WEBP), ("gif", CHELSEA_GIF)] {
        let cut = &bytes[..bytes.len() / 2];
        let r = run(cut, &Options::default(), &Settings::default());
        assert!(matches!(r, Err(TransformError::Decode(_))), "{name}: {r:?}");
    }
    // Cut inside the header: never a panic.
    for bytes in [COFFEE, CHELSEA_PNG, CHELSEA_GIF, LEAF_WEBP] {
        for n in 0..64 {
            let _ = run(&bytes[..n], &Options::default(), &Settings::default());
        }
    }
}

#[test]
fn result_too_large() {
    let mut o = opts(ResizingType::Fit, 9000, 0);
    assert_eq!(run(COFFEE, &o, &Settings::default()).unwrap_err(), TransformError::ResultTooLarge(9000, 8192));
    o.width = 5000;
    o.dpr = 2.0;
    assert_eq!(run(COFFEE, &o, &Settings::default()).unwrap_err(), TransformError::ResultTooLarge(10000, 8192));
    let small = Settings { max_result_dim: 500, ..Settings::default() };
    assert_eq!(run(COFFEE, &Options::default(), &small).unwrap_err(), TransformError::ResultTooLarge(600, 500));
    assert!(run(COFFEE, &opts(ResizingType::Fit, 500, 0), &small).is_ok());
}

#[test]
fn alpha_pixels_are_premultiplied_when_resizing() {
    // Half transparent red, half opaque blue: without premultiplication the invisible
    // red bleeds into the blue edge.
    let img =
        image::RgbaImage::from_fn(64, 8, |x, _| if x < 32 { Rgba([255, 0, 0, 0]) } else { Rgba([0, 0, 255, 255]) });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(img.as_raw(), 64, 8, image::ExtendedColorType::Rgba8)
        .unwrap();
    let out = decoded(&run_ok(&png, &opts(ResizingType::Fit, 16, 0))).to_rgba8();
    for x in 0..16 {
        let p = out.get_pixel(x, 1).0;
        if p[3] > 16 {
            assert!(p[0] < 8, "red bleeds into visible pixel {x}: {p:?}");
        }
    }
}
