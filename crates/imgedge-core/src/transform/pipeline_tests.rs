//! End-to-end tests of the full option set through `pipeline::run`: orientation
//! composition, canvases, flattening, crops, shrink-on-load, animation limits.
#![allow(clippy::unwrap_used)]

use image::{DynamicImage, GenericImageView, ImageEncoder};

use super::*;
use crate::options::{Crop, Extend, Gravity, GravityType, Padding, ResizingType, Trim};

use crate::transform::tests::{close, decoded, fixture, run_ok, COFFEE, LEAF_PNG, ORIENT6};

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];

fn png(o: Options) -> Options {
    Options { format: Some(Format::Png), ..o }
}

fn rgba_at(img: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
    img.get_pixel(x, y).0
}

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

/// A 64×32 quadrant JPEG carrying an EXIF APP1 with `orientation` (little-endian TIFF,
/// IFD0 with the single Orientation entry).
fn jpeg_with_orientation(orientation: u16) -> Vec<u8> {
    let px = quadrants(64, 32);
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(95).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::None).unwrap();
    let image = turbojpeg::Image {
        pixels: px.as_slice(),
        width: 64,
        pitch: 64 * 3,
        height: 32,
        format: turbojpeg::PixelFormat::RGB,
    };
    let jpg = c.compress_to_vec(image).unwrap();
    let mut tiff = b"II".to_vec();
    tiff.extend_from_slice(&42u16.to_le_bytes());
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut out = jpg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpg[2..]);
    out
}

type Corners = [[u8; 3]; 4];

/// Corners (TL, TR, BL, BR) after turning the picture 90° clockwise.
fn rot90([tl, tr, bl, br]: Corners) -> Corners {
    [bl, tl, br, tr]
}

fn mirror_h([tl, tr, bl, br]: Corners) -> Corners {
    [tr, tl, br, bl]
}

fn mirror_v([tl, tr, bl, br]: Corners) -> Corners {
    [bl, br, tl, tr]
}

/// Displayed corners of the quadrant image for each EXIF orientation (the EXIF spec's
/// table, independent of the implementation).
fn exif_corners(o: u16) -> Corners {
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

fn corners(img: &DynamicImage) -> Corners {
    let (w, h) = img.dimensions();
    let at = |x, y| {
        let p = rgba_at(img, x, y);
        [p[0], p[1], p[2]]
    };
    [at(1, 1), at(w - 2, 1), at(1, h - 2), at(w - 2, h - 2)]
}

#[test]
fn exif_rot_and_flip_compose_end_to_end() {
    for exif in 1..=8u16 {
        let jpg = jpeg_with_orientation(exif);
        for auto_rotate in [true, false] {
            for rotate in [0u16, 90, 180, 270] {
                for (flip_horizontal, flip_vertical) in [(false, false), (true, false), (false, true), (true, true)] {
                    let o = Options { rotate, flip_horizontal, flip_vertical, auto_rotate, ..Options::default() };
                    let mut want = if auto_rotate { exif_corners(exif) } else { exif_corners(1) };
                    let mut upright = if auto_rotate && exif >= 5 { (32, 64) } else { (64, 32) };
                    for _ in 0..rotate / 90 {
                        want = rot90(want);
                        upright = (upright.1, upright.0);
                    }
                    if flip_horizontal {
                        want = mirror_h(want);
                    }
                    if flip_vertical {
                        want = mirror_v(want);
                    }
                    let what =
                        format!("exif {exif}, ar {auto_rotate}, rot {rotate}, fl {flip_horizontal}:{flip_vertical}");
                    let img = decoded(&run_ok(&jpg, &png(o.clone())));
                    assert_eq!(img.dimensions(), upright, "{what}");
                    for (got, want) in corners(&img).iter().zip(want) {
                        assert!(close(*got, want, 40), "{what}: {got:?} vs {want:?}");
                    }

                    // Box and gravity refer to the final orientation: a north-west fill
                    // crop shows the final top-left colour, south-east the bottom-right.
                    let mut fill = png(Options { resizing_type: ResizingType::Fill, width: 8, height: 8, ..o });
                    fill.gravity.kind = GravityType::NorthWest;
                    let img = decoded(&run_ok(&jpg, &fill));
                    assert_eq!(img.dimensions(), (8, 8));
                    assert!(close(corners(&img)[0], want[0], 40), "fill NW, {what}");
                    fill.gravity.kind = GravityType::SouthEast;
                    let img = decoded(&run_ok(&jpg, &fill));
                    assert!(close(corners(&img)[3], want[3], 40), "fill SE, {what}");
                }
            }
        }
    }
}

#[test]
fn rotation_of_a_real_photo_is_lossless_bookkeeping() {
    // EXIF 6 followed by rot:270 is the stored image; so is ar:0.
    let o = |rotate, auto_rotate| png(Options { width: 240, rotate, auto_rotate, ..Options::default() });
    let stored = run_ok(ORIENT6, &o(0, false));
    assert_eq!((stored.width, stored.height), (240, 160));
    let undone = run_ok(ORIENT6, &o(270, true));
    assert_eq!(stored.bytes, undone.bytes);
    // ar:0 + rot:90 is what EXIF 6 asks for.
    assert_eq!(run_ok(ORIENT6, &o(90, false)).bytes, run_ok(ORIENT6, &o(0, true)).bytes);
}

#[test]
fn fill_extend_padding_sizes_and_fill_colours() {
    let o = Options {
        resizing_type: ResizingType::Fill,
        width: 300,
        height: 300,
        extend: Extend { enabled: true, gravity: None },
        padding: Padding { top: 10, right: 10, bottom: 10, left: 10 },
        ..Options::default()
    };
    // PNG: the padding is transparent.
    let img = decoded(&run_ok(COFFEE, &png(o.clone())));
    assert_eq!(img.dimensions(), (320, 320));
    assert_eq!(rgba_at(&img, 2, 2)[3], 0);
    assert_eq!(rgba_at(&img, 160, 160)[3], 255);
    // JPEG: white.
    let e = run_ok(COFFEE, &Options { format: Some(Format::Jpeg), ..o.clone() });
    let img = decoded(&e);
    assert_eq!(img.dimensions(), (320, 320));
    assert!(close(corners(&img)[0], WHITE, 8));
    // `bg`: that colour, opaque, whatever the format.
    let with_bg = png(Options { background: Some(crate::options::Rgb(0, 0, 255)), ..o });
    let img = decoded(&run_ok(COFFEE, &with_bg));
    assert_eq!(rgba_at(&img, 2, 2), [0, 0, 255, 255]);

    // Fit on a smaller box with extend: letterboxed to the exact box.
    let o = Options {
        width: 300,
        height: 300,
        extend: Extend { enabled: true, gravity: Some(Gravity { kind: GravityType::North, ..Gravity::default() }) },
        ..Options::default()
    };
    let img = decoded(&run_ok(COFFEE, &png(o)));
    assert_eq!(img.dimensions(), (300, 300));
    assert_eq!(rgba_at(&img, 150, 190)[3], 255, "image at the top");
    assert_eq!(rgba_at(&img, 150, 210)[3], 0, "transparent below");

    // exar: the box's aspect ratio without its size, and padding × dpr.
    let o = Options {
        width: 1000,
        height: 500,
        extend_aspect_ratio: Extend { enabled: true, gravity: None },
        padding: Padding { left: 5, ..Padding::default() },
        dpr: 2.0,
        ..Options::default()
    };
    let e = run_ok(fixture!("astronaut_512.jpg"), &o);
    // 512×512 cannot be enlarged: 1024×512 at dpr 1 (it cannot deliver 2×), + 5 px.
    assert_eq!((e.width, e.height), (1029, 512));
}

#[test]
fn background_flattens_every_format() {
    let bg = Some(crate::options::Rgb(255, 0, 0));
    let img = decoded(&run_ok(LEAF_PNG, &png(Options { background: bg, ..Options::default() })));
    assert!(!img.color().has_alpha(), "flattened");
    assert!(close(corners(&img)[0], RED, 2), "{:?}", corners(&img)[0]);
    let img = decoded(&run_ok(LEAF_PNG, &png(Options::default())));
    assert!(img.color().has_alpha());
}

#[test]
fn grey_alpha_on_a_coloured_background_becomes_colour() {
    // left half transparent, right half opaque mid-grey
    let px: Vec<u8> = (0..40 * 20).flat_map(|i| if i % 40 < 20 { [0, 0] } else { [128, 255] }).collect();
    let mut src = Vec::new();
    image::codecs::png::PngEncoder::new(&mut src).write_image(&px, 40, 20, image::ExtendedColorType::La8).unwrap();
    let o = png(Options { background: Some(crate::options::Rgb(255, 0, 0)), ..Options::default() });
    let img = decoded(&run_ok(&src, &o));
    assert!(!img.color().has_alpha());
    assert_eq!(rgba_at(&img, 2, 10), [255, 0, 0, 255], "transparent → the background");
    assert_eq!(rgba_at(&img, 37, 10), [128, 128, 128, 255], "opaque grey stays grey");
    // a grey background keeps a grey image grey
    let o = png(Options { background: Some(crate::options::Rgb(40, 40, 40)), ..Options::default() });
    assert_eq!(decoded(&run_ok(&src, &o)).color(), image::ColorType::L8);
}

#[test]
fn user_crop_then_resize() {
    // Left half of the quadrant image (red over blue), then scaled to 16 wide.
    let jpg = jpeg_with_orientation(1);
    let o = Options {
        width: 16,
        crop: Some(Crop {
            width: 0.5,
            height: 0.0,
            gravity: Some(Gravity { kind: GravityType::West, ..Gravity::default() }),
        }),
        ..Options::default()
    };
    let img = decoded(&run_ok(&jpg, &png(o)));
    assert_eq!(img.dimensions(), (16, 16));
    let c = corners(&img);
    assert!(close(c[1], RED, 40) && close(c[3], BLUE, 40), "{c:?}");
}

#[test]
fn shrink_on_load_keeps_sizes_exact() {
    for (w, want) in [(75, (75, 50)), (100, (100, 67)), (149, (149, 99)), (150, (150, 100)), (301, (301, 201))] {
        let e = run_ok(COFFEE, &Options { width: w, ..Options::default() });
        assert_eq!((e.width, e.height), want, "width {w}");
    }
    // A DCT-shrunk decode looks like the full decode, resized.
    let small = decoded(&run_ok(COFFEE, &png(Options { width: 75, ..Options::default() }))).to_rgb8();
    let reference = image::load_from_memory(COFFEE).unwrap().resize_exact(75, 50, image::imageops::Lanczos3).to_rgb8();
    let diff: f64 = small.as_raw().iter().zip(reference.as_raw()).map(|(&a, &b)| f64::from(a.abs_diff(b))).sum::<f64>()
        / small.as_raw().len() as f64;
    assert!(diff < 6.0, "mean difference {diff}");
}

#[test]
fn result_limit_counts_padding_before_decoding() {
    let settings = Settings { max_result_dim: 610, ..Settings::default() };
    let o = Options { padding: Padding { left: 20, ..Padding::default() }, ..Options::default() };
    assert_eq!(run(COFFEE, &o, &settings).unwrap_err(), TransformError::ResultTooLarge(620, 610));
    // A garbage body after a valid header never gets decoded.
    let mut broken = COFFEE[..1000].to_vec();
    broken.resize(COFFEE.len(), 0);
    assert_eq!(run(&broken, &o, &settings).unwrap_err(), TransformError::ResultTooLarge(620, 610));
}

#[test]
fn a_passed_deadline_stops_the_work_after_decoding() {
    let o = Options { width: 100, ..Options::default() };
    let late = Settings { deadline: Some(std::time::Instant::now()), ..Settings::default() };
    assert_eq!(run(COFFEE, &o, &late).unwrap_err(), TransformError::TimedOut);
    // cheap refusals still come first: they say more than a timeout
    let small = Settings { max_result_dim: 50, ..late };
    assert_eq!(run(COFFEE, &o, &small).unwrap_err(), TransformError::ResultTooLarge(100, 50));
    let later =
        Settings { deadline: Some(std::time::Instant::now() + Duration::from_secs(3600)), ..Settings::default() };
    assert!(run(COFFEE, &o, &later).is_ok());
}

#[test]
fn timings_are_reported() {
    let e = run_ok(COFFEE, &Options { width: 100, ..Options::default() });
    let t = e.timings;
    assert!(t.decode > Duration::ZERO && t.process > Duration::ZERO && t.encode > Duration::ZERO, "{t:?}");
}

#[test]
fn trim_plans_against_the_trimmed_size() {
    // 40×20 red on a 100×60 white frame; with EXIF 6 the frame is 60×100 on display.
    let (w, h) = (100u32, 60u32);
    let mut px = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let inside = (30..70).contains(&x) && (20..40).contains(&y);
            px.extend_from_slice(if inside { &RED } else { &WHITE });
        }
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&px, w, h, image::ExtendedColorType::Rgb8).unwrap();
    let trim = Some(Trim { threshold: 10.0, color: None, equal_hor: false, equal_ver: false });
    let e = run_ok(&out, &Options { trim, ..Options::default() });
    assert_eq!((e.width, e.height), (40, 20));
    let e = run_ok(&out, &Options { trim, width: 20, ..Options::default() });
    assert_eq!((e.width, e.height), (20, 10));
    let img = decoded(&e);
    assert!(close(corners(&img)[0], RED, 8));
}

#[test]
fn animation_frames_are_capped_by_the_pixel_limit() {
    let header = decode::read_header(fixture!("anim_tiny.webp")).unwrap();
    assert!(header.animated);
    let px = header.pixels();
    let s = |max_frames, max_src_pixels| Settings { max_frames, max_src_pixels, ..Settings::default() };
    assert_eq!(animation_frames(&header, Format::Webp, &s(10, px * 100)), Some(10));
    assert_eq!(animation_frames(&header, Format::Gif, &s(10, px * 4)), Some(4));
    // Room for one frame only, a still output format, or one frame allowed: still.
    assert_eq!(animation_frames(&header, Format::Webp, &s(10, px)), None);
    assert_eq!(animation_frames(&header, Format::Png, &s(10, px * 100)), None);
    assert_eq!(animation_frames(&header, Format::Webp, &s(1, px * 100)), None);
    let gif = decode::read_header(fixture!("anim_tiny.gif")).unwrap();
    assert_eq!(animation_frames(&gif, Format::Webp, &s(10, gif.pixels() * 100)), Some(10));

    // Every frame gets the same geometry.
    let settings = s(10, 50_000_000);
    let o = Options { resizing_type: ResizingType::Fill, width: 10, height: 10, ..Options::default() };
    let e = run(fixture!("anim_tiny.webp"), &o, &settings).unwrap();
    assert_eq!((e.format, e.width, e.height), (Format::Webp, 10, 10));
    for input in [fixture!("anim_tiny.webp"), fixture!("anim_tiny.gif")] {
        let r = render(input, &o, &settings).unwrap();
        assert!(r.animated && r.frames.len() > 1, "{} frames", r.frames.len());
        assert!(r.frames.iter().all(|f| (f.img.width, f.img.height) == (10, 10)));
    }
    let gif = run(fixture!("anim_tiny.gif"), &o, &settings).unwrap();
    let frames = image::AnimationDecoder::into_frames(
        image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&gif.bytes)).unwrap(),
    );
    assert!(frames.count() > 1);
    // A still GIF stays a still.
    let still = run(fixture!("chelsea_451x300.gif"), &o, &settings).unwrap();
    assert_eq!((still.format, still.width, still.height), (Format::Gif, 10, 10));
}
