//! Codec, colour and metadata tests: every format in and out, ICC handling, EXIF
//! policies, animation I/O and hostile (truncated) inputs.

use std::io::Cursor;

use image::{AnimationDecoder, DynamicImage, ImageDecoder};

use super::super::color::{self, OutputMeta};
use super::super::decode::{self, Header};
use super::super::encode::{self, EncodeParams, Frame};
use super::super::metadata;
use super::super::pixels::{Channels, Pixels};
use super::super::TransformError;
use crate::options::{Format, JpegOptions, Options};

fn data(name: &str) -> Vec<u8> {
    let p = format!("{}/../../tests/data/images/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn decode_all(input: &[u8]) -> Result<(Header, Pixels), TransformError> {
    let h = decode::read_header(input)?;
    decode::check_pixels(&h, 50_000_000)?;
    let px = decode::decode(input, &h, 1)?;
    Ok((h, px))
}

fn params(quality: u8, meta: &OutputMeta) -> EncodeParams<'_> {
    EncodeParams { quality, jpeg: JpegOptions::default(), max_bytes: 0, meta }
}

fn enc(img: &Pixels, f: Format, q: u8) -> Vec<u8> {
    let meta = OutputMeta::default();
    encode::encode(img, f, &params(q, &meta)).unwrap()
}

fn mean(px: &Pixels) -> [f64; 3] {
    let n = px.channels.count();
    let mut s = [0f64; 3];
    let mut c = 0f64;
    for p in px.data().chunks_exact(n) {
        let rgb = if n >= 3 { [p[0], p[1], p[2]] } else { [p[0]; 3] };
        for k in 0..3 {
            s[k] += f64::from(rgb[k]);
        }
        c += 1.0;
    }
    s.map(|v| v / c)
}

fn assert_close(a: [f64; 3], b: [f64; 3], tol: f64) {
    for k in 0..3 {
        assert!((a[k] - b[k]).abs() <= tol, "{a:?} vs {b:?} (tolerance {tol})");
    }
}

fn px_from(img: DynamicImage) -> Pixels {
    let (w, h) = (img.width(), img.height());
    if img.color().has_alpha() {
        Pixels::new(w, h, Channels::Rgba, img.into_rgba8().into_raw()).unwrap()
    } else {
        Pixels::new(w, h, Channels::Rgb, img.into_rgb8().into_raw()).unwrap()
    }
}

fn coffee() -> Pixels {
    decode_all(&data("coffee_600x400.jpg")).unwrap().1
}

fn leaf() -> Pixels {
    let (_, px) = decode_all(&data("leaf_alpha_400x250.png")).unwrap();
    assert_eq!(px.channels, Channels::Rgba);
    px
}

fn alpha_at(px: &Pixels, x: u32, y: u32) -> u8 {
    let n = px.channels.count();
    px.data()[(y as usize * px.width as usize + x as usize) * n + n - 1]
}

/// A pixel of the leaf that is fully transparent, and one that is opaque.
fn leaf_probe(px: &Pixels) -> ((u32, u32), (u32, u32)) {
    let n = px.channels.count();
    let w = px.width as usize;
    let find = |want: u8| {
        px.data().chunks_exact(n).position(|p| p[n - 1] == want).map(|i| ((i % w) as u32, (i / w) as u32)).unwrap()
    };
    (find(0), find(255))
}

// ---------------------------------------------------------------- AVIF

#[test]
fn avif_round_trip_rgb() {
    let src = coffee();
    let out = enc(&src, Format::Avif, 80);
    assert_eq!(decode::sniff(&out), Some(Format::Avif));
    let (h, back) = decode_all(&out).unwrap();
    assert_eq!((h.format, h.width, h.height), (Format::Avif, 600, 400));
    assert_eq!(back.channels, Channels::Rgb);
    assert_close(mean(&back), mean(&src), 4.0);
}

#[test]
fn avif_round_trip_alpha() {
    let src = leaf();
    let out = enc(&src, Format::Avif, 80);
    let (_, back) = decode_all(&out).unwrap();
    assert_eq!((back.width, back.height, back.channels), (400, 250, Channels::Rgba));
    let (clear, solid) = leaf_probe(&src);
    assert!(alpha_at(&back, clear.0, clear.1) < 10);
    assert!(alpha_at(&back, solid.0, solid.1) > 245);
}

#[test]
fn avif_8_and_10_bit_decode() {
    let src = coffee();
    let rgb: Vec<ravif::RGB8> = src.data().chunks_exact(3).map(|p| ravif::RGB8::new(p[0], p[1], p[2])).collect();
    for depth in [ravif::BitDepth::Eight, ravif::BitDepth::Ten] {
        let out = ravif::Encoder::new()
            .with_quality(85.0)
            .with_speed(10)
            .with_num_threads(Some(1))
            .with_bit_depth(depth)
            .encode_rgb(ravif::Img::new(&rgb[..], 600, 400))
            .unwrap()
            .avif_file;
        let (_, back) = decode_all(&out).unwrap();
        assert_eq!((back.width, back.height), (600, 400));
        assert_close(mean(&back), mean(&src), 4.0);
    }
}

#[test]
fn grey_goes_to_avif() {
    let src = coffee();
    let grey: Vec<u8> = src.data().chunks_exact(3).map(|p| p[1]).collect();
    let g = Pixels::new(600, 400, Channels::Gray, grey).unwrap();
    let (_, back) = decode_all(&enc(&g, Format::Avif, 80)).unwrap();
    assert_close(mean(&back), mean(&g), 4.0);
}

// ---------------------------------------------------------------- BMP, TIFF, ICO

fn encode_with_image(img: &DynamicImage, f: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, f).unwrap();
    out.into_inner()
}

fn small_rgba() -> DynamicImage {
    let src = leaf();
    let img = image::RgbaImage::from_raw(400, 250, src.data().to_vec()).unwrap();
    DynamicImage::ImageRgba8(image::imageops::thumbnail(&img, 64, 40))
}

#[test]
fn bmp_tiff_ico_read_losslessly() {
    let img = small_rgba();
    for (f, fmt) in [
        (image::ImageFormat::Bmp, Format::Bmp),
        (image::ImageFormat::Tiff, Format::Tiff),
        (image::ImageFormat::Ico, Format::Ico),
    ] {
        let bytes = encode_with_image(&img, f);
        assert_eq!(decode::sniff(&bytes), Some(fmt));
        let (h, px) = decode_all(&bytes).unwrap();
        assert_eq!((h.format, h.width, h.height), (fmt, 64, 40), "{fmt}");
        assert_eq!(px.channels, Channels::Rgba, "{fmt}");
        assert_eq!(px.data(), img.as_bytes(), "{fmt}");
    }
    // RGB TIFF and BMP too.
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    for f in [image::ImageFormat::Bmp, image::ImageFormat::Tiff] {
        let (_, px) = decode_all(&encode_with_image(&rgb, f)).unwrap();
        assert_eq!(px.data(), rgb.as_bytes());
    }
}

#[test]
fn ico_uses_the_largest_entry() {
    use image::codecs::ico::{IcoEncoder, IcoFrame};
    let big = small_rgba().resize_exact(48, 48, image::imageops::FilterType::Triangle).into_rgba8();
    let small = image::imageops::thumbnail(&big, 16, 16);
    let frames = vec![
        IcoFrame::as_png(small.as_raw(), 16, 16, image::ExtendedColorType::Rgba8).unwrap(),
        IcoFrame::as_png(big.as_raw(), 48, 48, image::ExtendedColorType::Rgba8).unwrap(),
    ];
    let mut out = Vec::new();
    IcoEncoder::new(&mut out).encode_images(&frames).unwrap();
    let (h, px) = decode_all(&out).unwrap();
    assert_eq!((h.width, h.height, px.width), (48, 48, 48));
}

#[test]
fn truncated_and_corrupt_files_are_decode_errors() {
    let rgba = small_rgba();
    let files = [
        enc(&coffee(), Format::Avif, 60),
        enc(&leaf(), Format::Avif, 60),
        encode_with_image(&rgba, image::ImageFormat::Bmp),
        encode_with_image(&rgba, image::ImageFormat::Tiff),
        encode_with_image(&rgba, image::ImageFormat::Ico),
    ];
    for f in &files {
        let fmt = decode::sniff(f).unwrap();
        for cut in (32..f.len()).step_by((f.len() / 23).max(1)) {
            match decode_all(&f[..cut]) {
                Err(TransformError::Decode(_)) => {}
                other => panic!("{fmt} cut at {cut}/{}: {other:?}", f.len()),
            }
        }
        // Flipped bytes never panic.
        let mut bad = f.clone();
        for i in (20..bad.len()).step_by(7) {
            bad[i] ^= 0x5a;
        }
        let _ = decode_all(&bad);
    }
}

// ---------------------------------------------------------------- PNG, WebP inputs

#[test]
fn png_16_bit_and_grey_alpha() {
    let img16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(8, 4, |x, _| image::Rgb([x as u16 * 8000, 65535, 0]));
    let bytes = encode_with_image(&DynamicImage::ImageRgb16(img16), image::ImageFormat::Png);
    let (_, px) = decode_all(&bytes).unwrap();
    assert_eq!(px.channels, Channels::Rgb);
    assert_eq!(&px.data()[3..6], &[31, 255, 0]);
    let la = image::ImageBuffer::<image::LumaA<u8>, _>::from_fn(8, 4, |x, _| image::LumaA([x as u8 * 30, 128]));
    let (_, px) = decode_all(&encode_with_image(&DynamicImage::ImageLumaA8(la), image::ImageFormat::Png)).unwrap();
    assert_eq!(px.channels, Channels::GrayAlpha);
    assert_eq!(&px.data()[2..4], &[30, 128]);
}

#[test]
fn webp_lossless_alpha_input() {
    let (h, px) = decode_all(&data("leaf_alpha_100x63_lossless.webp")).unwrap();
    assert_eq!((h.width, h.height, px.channels), (100, 63, Channels::Rgba));
}

// ---------------------------------------------------------------- outputs

#[test]
fn alpha_survives_to_webp_png_gif() {
    let src = leaf();
    let (clear, solid) = leaf_probe(&src);
    for f in [Format::Webp, Format::Png, Format::Gif] {
        let out = enc(&src, f, 80);
        let back = image::load_from_memory(&out).unwrap().into_rgba8();
        assert_eq!(back.dimensions(), (400, 250), "{f}");
        assert_eq!(back.get_pixel(clear.0, clear.1)[3], 0, "{f}");
        assert_eq!(back.get_pixel(solid.0, solid.1)[3], 255, "{f}");
    }
}

#[test]
fn gif_still_colours_are_close() {
    let src = coffee();
    let out = enc(&src, Format::Gif, 80);
    let back = px_from(image::load_from_memory_with_format(&out, image::ImageFormat::Gif).unwrap());
    assert_close(mean(&back), mean(&src), 6.0);
}

#[test]
fn progressive_and_444_jpeg() {
    let src = coffee();
    let meta = OutputMeta::default();
    let mut p = params(80, &meta);
    p.jpeg = JpegOptions { progressive: true, no_subsample: true };
    let out = encode::encode(&src, Format::Jpeg, &p).unwrap();
    assert!(out.windows(2).any(|w| w == [0xFF, 0xC2]), "no SOF2");
    assert!(!out.windows(2).any(|w| w == [0xFF, 0xC0]), "SOF0 present");
    let h = turbojpeg::read_header(&out).unwrap();
    assert_eq!(h.subsamp, turbojpeg::Subsamp::None);
    let base = enc(&src, Format::Jpeg, 80);
    assert_eq!(turbojpeg::read_header(&base).unwrap().subsamp, turbojpeg::Subsamp::Sub2x2);
}

#[test]
fn max_bytes_lowers_quality_until_it_fits() {
    let src = coffee();
    let meta = OutputMeta::default();
    for f in [Format::Jpeg, Format::Webp] {
        let full = encode::encode(&src, f, &params(95, &meta)).unwrap();
        let mut p = params(95, &meta);
        p.max_bytes = full.len() as u64 / 3;
        let small = encode::encode(&src, f, &p).unwrap();
        assert!(small.len() as u64 <= p.max_bytes, "{f}: {} > {}", small.len(), p.max_bytes);
        assert!(image::load_from_memory(&small).is_ok());
        // Impossible: the smallest attempt comes back.
        p.max_bytes = 10;
        let tiny = encode::encode(&src, f, &p).unwrap();
        assert!(tiny.len() < small.len(), "{f}");
    }
}

// ---------------------------------------------------------------- colour

#[test]
fn cmyk_jpeg_matches_the_rgb_original() {
    let (h, cmyk) = decode_all(&data("autumn_cmyk_1200x800.jpg")).unwrap();
    assert!(h.cmyk);
    let mut c = cmyk;
    let meta =
        color::prepare(&mut c, &data("autumn_cmyk_1200x800.jpg"), &h, &Options::default(), Format::Jpeg).unwrap();
    assert_eq!(meta.icc, None);
    let rgb = decode::decode(
        &data("autumn_1920x1280_q85.jpg"),
        &decode::read_header(&data("autumn_1920x1280_q85.jpg")).unwrap(),
        2,
    )
    .unwrap();
    assert_close(mean(&c), mean(&rgb), 12.0);
}

/// A flat image tagged with `icc`, as a JPEG.
fn tagged_jpeg(rgb: [u8; 3], icc: &[u8]) -> Vec<u8> {
    let px = Pixels::new(16, 16, Channels::Rgb, rgb.repeat(256)).unwrap();
    let meta = OutputMeta { icc: Some(icc.to_vec()), exif: None };
    encode::encode(&px, Format::Jpeg, &params(100, &meta)).unwrap()
}

#[test]
fn display_p3_is_converted_to_srgb() {
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let src = tagged_jpeg([200, 100, 50], &p3);
    let (h, mut px) = decode_all(&src).unwrap();
    let before = mean(&px);
    let meta = color::prepare(&mut px, &src, &h, &Options::default(), Format::Png).unwrap();
    assert_eq!(meta.icc, None);
    let after = mean(&px);
    // P3 is wider: the same numbers are more saturated in sRGB.
    assert!(after[0] > before[0] + 10.0 && after[2] < before[2] - 10.0, "{before:?} → {after:?}");
    // AVIF cannot carry a profile: converted even with scp:0.
    let (h, mut px) = decode_all(&src).unwrap();
    let keep = Options { strip_color_profile: false, ..Options::default() };
    let meta = color::prepare(&mut px, &src, &h, &keep, Format::Avif).unwrap();
    assert_eq!(meta.icc, None);
    assert_close(mean(&px), after, 1.0);
}

#[test]
fn srgb_profile_is_not_converted() {
    let srgb = moxcms::ColorProfile::new_srgb().encode().unwrap();
    let src = tagged_jpeg([200, 100, 50], &srgb);
    let (h, mut px) = decode_all(&src).unwrap();
    let before = px.data().to_vec();
    color::prepare(&mut px, &src, &h, &Options::default(), Format::Png).unwrap();
    assert_eq!(px.data(), &before[..]);
}

#[test]
fn profile_kept_with_scp_0_in_jpeg_png_webp() {
    let p3 = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let src = tagged_jpeg([200, 100, 50], &p3);
    let keep = Options { strip_color_profile: false, ..Options::default() };
    for f in [Format::Jpeg, Format::Png, Format::Webp] {
        let (h, mut px) = decode_all(&src).unwrap();
        let before = px.data().to_vec();
        let meta = color::prepare(&mut px, &src, &h, &keep, f).unwrap();
        assert_eq!(px.data(), &before[..], "{f}: pixels must stay in the source space");
        assert_eq!(meta.icc.as_deref(), Some(&p3[..]));
        let out = encode::encode(&px, f, &params(80, &meta)).unwrap();
        let icc = match f {
            Format::Jpeg => image::codecs::jpeg::JpegDecoder::new(Cursor::new(&out)).unwrap().icc_profile(),
            Format::Png => image::codecs::png::PngDecoder::new(Cursor::new(&out)).unwrap().icc_profile(),
            _ => image::codecs::webp::WebPDecoder::new(Cursor::new(&out)).unwrap().icc_profile(),
        }
        .unwrap();
        assert_eq!(icc.as_deref(), Some(&p3[..]), "{f}");
        // And our own reader finds it again (PNG iCCP, WebP ICCP, JPEG APP2).
        let h2 = decode::read_header(&out).unwrap();
        assert_eq!(metadata::source_icc(&out, &h2).as_deref(), Some(&p3[..]), "{f}");
        // libwebp still decodes the rebuilt container.
        if f == Format::Webp {
            assert!(webp::Decoder::new(&out).decode().is_some());
        }
    }
}

#[test]
fn large_icc_profile_spans_several_app2_segments() {
    let mut icc = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    // Pad: readers take the declared tags, the size spans three segments.
    icc.resize(150_000, 0);
    let src = tagged_jpeg([10, 20, 30], &icc);
    let h = decode::read_header(&src).unwrap();
    assert_eq!(metadata::source_icc(&src, &h).map(|p| p.len()), Some(150_000));
}

// ---------------------------------------------------------------- EXIF

/// Little-endian EXIF: Make "Canon", Orientation 6, Artist "Jane Doe", Copyright
/// "(c) Jane Doe 2024".
fn sample_exif() -> Vec<u8> {
    let strings: [(u16, &[u8]); 3] = [(0x010F, b"Canon\0"), (0x013B, b"Jane Doe\0"), (0x8298, b"(c) Jane Doe 2024\0")];
    let n = 4u16;
    let data_at = 8 + 2 + 12 * usize::from(n) + 4;
    let mut ifd = Vec::new();
    let mut blob = Vec::new();
    let mut entries: Vec<(u16, Vec<u8>)> = Vec::new();
    for (tag, s) in strings {
        let mut e = Vec::new();
        e.extend_from_slice(&tag.to_le_bytes());
        e.extend_from_slice(&2u16.to_le_bytes());
        e.extend_from_slice(&(s.len() as u32).to_le_bytes());
        e.extend_from_slice(&((data_at + blob.len()) as u32).to_le_bytes());
        blob.extend_from_slice(s);
        entries.push((tag, e));
    }
    let mut o = Vec::new();
    o.extend_from_slice(&0x0112u16.to_le_bytes());
    o.extend_from_slice(&3u16.to_le_bytes());
    o.extend_from_slice(&1u32.to_le_bytes());
    o.extend_from_slice(&[6, 0, 0, 0]);
    entries.push((0x0112, o));
    entries.sort_by_key(|e| e.0);
    ifd.extend_from_slice(&n.to_le_bytes());
    for (_, e) in entries {
        ifd.extend_from_slice(&e);
    }
    ifd.extend_from_slice(&0u32.to_le_bytes());
    let mut out = b"II*\0\x08\0\0\0".to_vec();
    out.extend_from_slice(&ifd);
    out.extend_from_slice(&blob);
    out
}

fn exif_fields(tiff: &[u8]) -> Vec<(exif::Tag, String)> {
    let e = exif::Reader::new().read_raw(tiff.to_vec()).unwrap();
    e.fields().map(|f| (f.tag, f.display_value().to_string())).collect()
}

fn jpeg_with_exif() -> Vec<u8> {
    let meta = OutputMeta { icc: None, exif: Some(sample_exif()) };
    encode::encode(&coffee(), Format::Jpeg, &params(70, &meta)).unwrap()
}

#[test]
fn copyright_kept_by_default_everything_else_stripped() {
    let src = jpeg_with_exif();
    let (h, mut px) = decode_all(&src).unwrap();
    assert_eq!(h.orientation, super::super::geometry::Orientation::from_exif(6));
    let meta = color::prepare(&mut px, &src, &h, &Options::default(), Format::Jpeg).unwrap();
    let exif = meta.exif.clone().unwrap();
    let fields = exif_fields(&exif);
    let tags: Vec<exif::Tag> = fields.iter().map(|f| f.0).collect();
    assert_eq!(tags, vec![exif::Tag::Artist, exif::Tag::Copyright]);
    assert!(fields[1].1.contains("(c) Jane Doe 2024"), "{fields:?}");
    // It reaches every output format that carries EXIF.
    for f in [Format::Jpeg, Format::Png, Format::Webp, Format::Avif] {
        let out = encode::encode(&px, f, &params(60, &meta)).unwrap();
        let found = out.windows(17).any(|w| w == b"(c) Jane Doe 2024");
        assert!(found, "{f}");
        if f != Format::Avif {
            let h2 = decode::read_header(&out).unwrap();
            assert_eq!(metadata::source_exif(&out, &h2), Some(&exif[..]), "{f}");
        }
    }
    let no_kcr = Options { keep_copyright: false, ..Options::default() };
    assert_eq!(color::prepare(&mut px, &src, &h, &no_kcr, Format::Jpeg).unwrap().exif, None);
}

#[test]
fn strip_metadata_off_copies_exif_with_orientation_reset() {
    let src = jpeg_with_exif();
    let (h, mut px) = decode_all(&src).unwrap();
    let keep = Options { strip_metadata: false, ..Options::default() };
    let meta = color::prepare(&mut px, &src, &h, &keep, Format::Jpeg).unwrap();
    let fields = exif_fields(&meta.exif.unwrap());
    assert!(fields.iter().any(|f| f.0 == exif::Tag::Make && f.1.contains("Canon")));
    let o = fields.iter().find(|f| f.0 == exif::Tag::Orientation).unwrap();
    assert!(o.1.contains("row 0 at top and column 0 at left") || o.1 == "1", "{o:?}");
}

#[test]
fn no_exif_no_metadata() {
    let src = data("coffee_600x400.jpg");
    let (h, mut px) = decode_all(&src).unwrap();
    let meta = color::prepare(&mut px, &src, &h, &Options::default(), Format::Webp).unwrap();
    assert_eq!(meta, OutputMeta::default());
}

// ---------------------------------------------------------------- animation

#[test]
fn animated_gif_max_frames() {
    let src = data("anim_tiny.gif");
    let h = decode::read_header(&src).unwrap();
    let total = image::codecs::gif::GifDecoder::new(Cursor::new(&src)).unwrap().into_frames().count();
    assert!(total > 5, "fixture has {total} frames");
    let anim = decode::decode_animation(&src, &h, 5).unwrap();
    assert_eq!(anim.frames.len(), 5);
    assert!(anim.frames.iter().all(|f| (f.img.width, f.img.height) == (h.width, h.height)));
    let meta = OutputMeta::default();
    for f in [Format::Gif, Format::Webp] {
        let out = encode::encode_animation(&anim.frames, anim.loop_count, f, &params(80, &meta)).unwrap();
        let h2 = decode::read_header(&out).unwrap();
        assert_eq!((h2.width, h2.height), (h.width, h.height));
        let back = decode::decode_animation(&out, &h2, 100).unwrap();
        assert_eq!(back.frames.len(), 5, "{f}");
        assert!(back.frames[1].delay_ms > 0);
        assert_close(mean(&back.frames[3].img), mean(&anim.frames[3].img), 8.0);
    }
    // A still format gets the first frame.
    let out = encode::encode_animation(&anim.frames, 0, Format::Png, &params(80, &meta)).unwrap();
    assert_eq!(decode::read_header(&out).unwrap().format, Format::Png);
    // max_frames 1 is a still image.
    assert_eq!(decode::decode_animation(&src, &h, 1).unwrap().frames.len(), 1);
}

#[test]
fn animated_webp_input() {
    let src = data("anim_tiny.webp");
    let h = decode::read_header(&src).unwrap();
    assert!(h.animated);
    let anim = decode::decode_animation(&src, &h, 3).unwrap();
    assert_eq!(anim.frames.len(), 3);
}

#[test]
fn animation_frames_must_match() {
    let a = Frame { img: Pixels::new(4, 4, Channels::Rgb, vec![0; 48]).unwrap(), delay_ms: 10 };
    let b = Frame { img: Pixels::new(2, 2, Channels::Rgb, vec![0; 12]).unwrap(), delay_ms: 10 };
    let meta = OutputMeta::default();
    assert!(matches!(
        encode::encode_animation(&[a, b], 0, Format::Gif, &params(80, &meta)),
        Err(TransformError::Encode(_))
    ));
}

#[test]
fn bmp_output_is_unsupported() {
    assert_eq!(
        encode::encode(&coffee(), Format::Bmp, &params(80, &OutputMeta::default())),
        Err(TransformError::UnsupportedOutput(Format::Bmp))
    );
}

#[test]
fn gif_frames_overhanging_the_screen_are_clipped_in_animations() {
    // 4x4 screen; the 2nd frame is 4x4 at (2, 2), the 3rd 8x1 at (3, 0)
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/hostile/gen_gif_anim_frames_past_screen.gif");
    let bytes = std::fs::read(path).unwrap();
    let h = decode::read_header(&bytes).unwrap();
    let anim = decode::decode_animation(&bytes, &h, 10).unwrap();
    assert_eq!(anim.frames.len(), 3);
    assert!(anim.frames.iter().all(|f| (f.img.width, f.img.height) == (4, 4)));
}
