//! Writers. JPEG: turbojpeg (4:2:0 or 4:4:4, baseline or progressive). PNG: `image`
//! with fast deflate. WebP: libwebp lossy (alpha kept, compressed losslessly). AVIF:
//! ravif (rav1e) at speed 2, 10-bit 4:4:4, on one thread. GIF: the `gif` crate, NeuQuant per frame.
//!
//! Metadata comes from [`OutputMeta`]: the ICC profile goes into JPEG APP2, PNG iCCP and
//! the WebP ICCP chunk (AVIF and GIF never get one: `color::prepare` converts to sRGB
//! for them); EXIF into JPEG APP1, PNG eXIf, the WebP EXIF chunk and AVIF's Exif item.

use std::borrow::Cow;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use turbojpeg::{Compressor, PixelFormat, Subsamp};

use super::color::OutputMeta;
use super::pixels::{Channels, Pixels};
use super::TransformError;
use crate::options::{Format, JpegOptions};

/// rav1e speed (ravif preset). Measured on cups 4000×3000 → 400×300 at q63, 10-bit, against
/// libaom in sharp (q50, effort 4: 6,735 bytes, SSIM .9699): speed 2 writes 6,640 bytes at
/// SSIM .9696, speed 3 6,897 at .9690 (.9699 needs 7,126), speed 6 7,146 at .9682. Speed 2
/// costs ~1.6× speed 6 (bottom-up partition search), speed 1 ~4×. Speeds 5 and 6 write
/// identical files.
const AVIF_SPEED: u8 = 2;
/// NeuQuant sampling factor (1 = best, 30 = fastest); 10 is gif's own default.
const GIF_QUANT_SPEED: i32 = 10;
/// Extra encodes `max_bytes` may spend after the first one (a bisection over 1..q).
const MAX_BYTES_RETRIES: u32 = 5;

/// How to write one image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncodeParams<'a> {
    /// 1..=100, already resolved (`q`, `fq`, tenant default).
    pub(crate) quality: u8,
    pub(crate) jpeg: JpegOptions,
    /// Lower the quality until the result fits (0 = off).
    pub(crate) max_bytes: u64,
    pub(crate) meta: &'a OutputMeta,
}

/// One frame of an animation.
pub(crate) struct Frame {
    pub(crate) img: Pixels,
    pub(crate) delay_ms: u32,
}

fn enc_err(e: impl std::fmt::Display) -> TransformError {
    TransformError::Encode(e.to_string())
}

/// Formats where a lower quality means fewer bytes (what `max_bytes` can act on).
fn lossy(format: Format) -> bool {
    matches!(format, Format::Jpeg | Format::Webp | Format::Avif)
}

/// Encodes, then, when `max_bytes` is set and the result is larger, bisects the quality
/// below the requested one for the best one that fits (at most `MAX_BYTES_RETRIES`
/// more encodes). If nothing fits, the smallest result is returned (as imgproxy does).
fn with_max_bytes(
    format: Format,
    params: &EncodeParams<'_>,
    mut once: impl FnMut(u8) -> Result<Vec<u8>, TransformError>,
) -> Result<Vec<u8>, TransformError> {
    let quality = params.quality.clamp(1, 100);
    let first = once(quality)?;
    let limit = usize::try_from(params.max_bytes).unwrap_or(usize::MAX);
    if params.max_bytes == 0 || first.len() <= limit || !lossy(format) || quality == 1 {
        return Ok(first);
    }
    let (mut lo, mut hi) = (1u8, quality - 1);
    let mut best_fit: Option<Vec<u8>> = None;
    let mut smallest = first;
    for _ in 0..MAX_BYTES_RETRIES {
        if lo > hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        let out = once(mid)?;
        if out.len() <= limit {
            best_fit = Some(out);
            lo = mid + 1;
        } else {
            if out.len() < smallest.len() {
                smallest = out;
            }
            if mid == 1 {
                break;
            }
            hi = mid - 1;
        }
    }
    Ok(best_fit.unwrap_or(smallest))
}

pub(crate) fn encode(img: &Pixels, format: Format, params: &EncodeParams<'_>) -> Result<Vec<u8>, TransformError> {
    let meta = params.meta;
    match format {
        Format::Jpeg => with_max_bytes(format, params, |q| jpeg(img, q, params.jpeg, meta)),
        Format::Png => png(img, meta),
        Format::Webp => with_max_bytes(format, params, |q| webp(img, q).and_then(|o| webp_mux(o, meta))),
        Format::Avif => with_max_bytes(format, params, |q| avif(img, q, meta)),
        Format::Gif => gif_still(img),
        Format::Bmp | Format::Tiff | Format::Ico => Err(TransformError::UnsupportedOutput(format)),
    }
}

/// Writes an animation (GIF or WebP; other formats get the first frame). A single
/// frame is written as a still image.
pub(crate) fn encode_animation(
    frames: &[Frame],
    loop_count: u16,
    format: Format,
    params: &EncodeParams<'_>,
) -> Result<Vec<u8>, TransformError> {
    let first = frames.first().ok_or_else(|| TransformError::Encode("animation without frames".into()))?;
    if frames.len() == 1 {
        return encode(&first.img, format, params);
    }
    let (w, h) = (first.img.width, first.img.height);
    if frames.iter().any(|f| (f.img.width, f.img.height) != (w, h)) {
        return Err(TransformError::Encode("animation frames differ in size".into()));
    }
    match format {
        Format::Gif => gif_animation(frames, loop_count),
        Format::Webp => webp_animation(frames, loop_count, params.quality).and_then(|o| webp_mux(o, params.meta)),
        _ => encode(&first.img, format, params),
    }
}

/// RGBA bytes of any layout (GIF and animated WebP take RGBA only).
fn to_rgba(img: &Pixels) -> Vec<u8> {
    let d = img.data();
    match img.channels {
        Channels::Rgba => d.to_vec(),
        Channels::Rgb => d.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        Channels::Gray => d.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        Channels::GrayAlpha => d.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect(),
    }
}

fn jpeg(img: &Pixels, quality: u8, opts: JpegOptions, meta: &OutputMeta) -> Result<Vec<u8>, TransformError> {
    let (format, subsamp) = match img.channels {
        Channels::Gray => (PixelFormat::GRAY, Subsamp::Gray),
        Channels::Rgb if opts.no_subsample => (PixelFormat::RGB, Subsamp::None),
        Channels::Rgb => (PixelFormat::RGB, Subsamp::Sub2x2),
        // The flatten step runs before every JPEG encode.
        Channels::GrayAlpha | Channels::Rgba => {
            return Err(TransformError::Encode("JPEG cannot carry alpha".into()));
        }
    };
    let mut c = Compressor::new().map_err(enc_err)?;
    c.set_quality(i32::from(quality)).map_err(enc_err)?;
    c.set_subsamp(subsamp).map_err(enc_err)?;
    if opts.progressive {
        c.set_progressive(true).map_err(enc_err)?;
    }
    let image = turbojpeg::Image {
        pixels: img.data(),
        width: img.width as usize,
        pitch: img.stride(),
        height: img.height as usize,
        format,
    };
    let out = c.compress_to_vec(image).map_err(enc_err)?;
    jpeg_insert_meta(out, meta)
}

/// Bytes of ICC data per APP2 segment: 65535 − length field (2) − "ICC_PROFILE\0" (12)
/// − sequence number and count (2).
const ICC_CHUNK: usize = 65_519;

/// Inserts APP1 (EXIF) and APP2 (ICC_PROFILE) segments after SOI and any APP0 (JFIF
/// must stay first).
fn jpeg_insert_meta(out: Vec<u8>, meta: &OutputMeta) -> Result<Vec<u8>, TransformError> {
    if meta.icc.is_none() && meta.exif.is_none() {
        return Ok(out);
    }
    let mut at = 2;
    if out.get(2..4) == Some(&[0xFF, 0xE0]) {
        let len = out.get(4..6).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        at = 4 + len;
    }
    if at > out.len() {
        return Err(TransformError::Encode("malformed JPEG from the encoder".into()));
    }
    let mut segs = Vec::new();
    if let Some(exif) = &meta.exif {
        let len = exif.len() + 6 + 2;
        let len = u16::try_from(len).map_err(|_| TransformError::Encode("EXIF too large for JPEG".into()))?;
        segs.extend_from_slice(&[0xFF, 0xE1]);
        segs.extend_from_slice(&len.to_be_bytes());
        segs.extend_from_slice(b"Exif\0\0");
        segs.extend_from_slice(exif);
    }
    if let Some(icc) = &meta.icc {
        let chunks: Vec<&[u8]> = icc.chunks(ICC_CHUNK).collect();
        let count = u8::try_from(chunks.len()).map_err(|_| TransformError::Encode("ICC profile too large".into()))?;
        for (i, chunk) in chunks.iter().enumerate() {
            // Both fit: chunk ≤ ICC_CHUNK, i < count ≤ 255.
            let len = (chunk.len() + 16) as u16;
            segs.extend_from_slice(&[0xFF, 0xE2]);
            segs.extend_from_slice(&len.to_be_bytes());
            segs.extend_from_slice(b"ICC_PROFILE\0");
            segs.extend_from_slice(&[i as u8 + 1, count]);
            segs.extend_from_slice(chunk);
        }
    }
    let mut res = Vec::with_capacity(out.len() + segs.len());
    res.extend_from_slice(&out[..at]);
    res.extend_from_slice(&segs);
    res.extend_from_slice(&out[at..]);
    Ok(res)
}

fn png(img: &Pixels, meta: &OutputMeta) -> Result<Vec<u8>, TransformError> {
    let color = match img.channels {
        Channels::Gray => ExtendedColorType::L8,
        Channels::GrayAlpha => ExtendedColorType::La8,
        Channels::Rgb => ExtendedColorType::Rgb8,
        Channels::Rgba => ExtendedColorType::Rgba8,
    };
    let mut out = Vec::new();
    let mut enc = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
    if let Some(icc) = &meta.icc {
        enc.set_icc_profile(icc.clone()).map_err(enc_err)?;
    }
    if let Some(exif) = &meta.exif {
        enc.set_exif_metadata(exif.clone()).map_err(enc_err)?;
    }
    enc.write_image(img.data(), img.width, img.height, color).map_err(enc_err)?;
    Ok(out)
}

fn webp_config(quality: u8) -> Result<webp::WebPConfig, TransformError> {
    let mut config = webp::WebPConfig::new().map_err(|()| TransformError::Encode("libwebp config".into()))?;
    config.lossless = 0;
    config.quality = f32::from(quality);
    config.alpha_compression = 1;
    Ok(config)
}

fn webp(img: &Pixels, quality: u8) -> Result<Vec<u8>, TransformError> {
    // libwebp takes RGB(A) only; grey is widened here, on the already small result.
    let (data, layout): (Cow<'_, [u8]>, webp::PixelLayout) = match img.channels {
        Channels::Rgb => (Cow::Borrowed(img.data()), webp::PixelLayout::Rgb),
        Channels::Rgba => (Cow::Borrowed(img.data()), webp::PixelLayout::Rgba),
        Channels::Gray => (Cow::Owned(img.data().iter().flat_map(|&g| [g, g, g]).collect()), webp::PixelLayout::Rgb),
        Channels::GrayAlpha => (Cow::Owned(to_rgba(img)), webp::PixelLayout::Rgba),
    };
    let config = webp_config(quality)?;
    let mem = webp::Encoder::new(&data, layout, img.width, img.height)
        .encode_advanced(&config)
        .map_err(|e| TransformError::Encode(format!("libwebp: {e:?}")))?;
    Ok(mem.to_vec())
}

fn webp_animation(frames: &[Frame], loop_count: u16, quality: u8) -> Result<Vec<u8>, TransformError> {
    let config = webp_config(quality)?;
    let (w, h) = (frames[0].img.width, frames[0].img.height);
    let rgba: Vec<Vec<u8>> = frames.iter().map(|f| to_rgba(&f.img)).collect();
    let mut enc = webp::AnimEncoder::new(w, h, &config);
    enc.set_loop_count(i32::from(loop_count));
    let mut t: i32 = 0;
    for (f, px) in frames.iter().zip(&rgba) {
        enc.add_frame(webp::AnimFrame::from_rgba(px, w, h, t));
        t = t.saturating_add(i32::try_from(f.delay_ms).unwrap_or(i32::MAX));
    }
    let mem = enc.try_encode().map_err(|e| TransformError::Encode(format!("libwebp animation: {e:?}")))?;
    Ok(mem.to_vec())
}

/// One RIFF chunk of a WebP file.
struct Chunk<'a> {
    kind: [u8; 4],
    body: Cow<'a, [u8]>,
}

/// Rebuilds libwebp's output as an extended (VP8X) file carrying `ICCP` and `EXIF`
/// chunks in the order the container spec requires: VP8X, ICCP, image data, EXIF.
fn webp_mux(out: Vec<u8>, meta: &OutputMeta) -> Result<Vec<u8>, TransformError> {
    if meta.icc.is_none() && meta.exif.is_none() {
        return Ok(out);
    }
    let bad = || TransformError::Encode("malformed WebP from the encoder".into());
    if out.len() < 12 || &out[..4] != b"RIFF" || &out[8..12] != b"WEBP" {
        return Err(bad());
    }
    let mut chunks = Vec::new();
    let mut i = 12;
    while i + 8 <= out.len() {
        let kind: [u8; 4] = out[i..i + 4].try_into().map_err(|_| bad())?;
        let len = u32::from_le_bytes(out[i + 4..i + 8].try_into().map_err(|_| bad())?) as usize;
        let body = out.get(i + 8..i + 8 + len).ok_or_else(bad)?;
        chunks.push(Chunk { kind, body: Cow::Borrowed(body) });
        i += 8 + len + (len & 1);
    }
    let (mut flags, mut canvas) = (0u8, None);
    if let Some(vp8x) = chunks.iter().find(|c| &c.kind == b"VP8X") {
        flags = *vp8x.body.first().ok_or_else(bad)?;
        canvas = vp8x.body.get(4..10).map(<[u8]>::to_vec);
    }
    let canvas = match canvas {
        Some(c) => c,
        None => {
            let hdr = super::decode::read_header(&out).map_err(|_| bad())?;
            let (w, h) = (hdr.width - 1, hdr.height - 1);
            let mut c = w.to_le_bytes()[..3].to_vec();
            c.extend_from_slice(&h.to_le_bytes()[..3]);
            c
        }
    };
    // A simple lossless file signals alpha in the VP8L header only.
    if chunks.iter().any(|c| &c.kind == b"ALPH")
        || chunks.iter().any(|c| &c.kind == b"VP8L" && c.body.get(4).is_some_and(|b| b & 0x10 != 0))
    {
        flags |= 0x10;
    }
    chunks.retain(|c| !matches!(&c.kind, b"VP8X" | b"ICCP" | b"EXIF"));
    if meta.icc.is_some() {
        flags |= 0x20;
    }
    if meta.exif.is_some() {
        flags |= 0x08;
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&canvas);
    let mut all = vec![Chunk { kind: *b"VP8X", body: Cow::Owned(vp8x) }];
    if let Some(icc) = &meta.icc {
        all.push(Chunk { kind: *b"ICCP", body: Cow::Borrowed(icc) });
    }
    all.extend(chunks);
    if let Some(exif) = &meta.exif {
        all.push(Chunk { kind: *b"EXIF", body: Cow::Borrowed(exif) });
    }
    let mut res = Vec::with_capacity(out.len() + 64);
    res.extend_from_slice(b"RIFF\0\0\0\0WEBP");
    for c in &all {
        let len = u32::try_from(c.body.len()).map_err(|_| bad())?;
        res.extend_from_slice(&c.kind);
        res.extend_from_slice(&len.to_le_bytes());
        res.extend_from_slice(&c.body);
        if c.body.len() & 1 == 1 {
            res.push(0);
        }
    }
    let riff = u32::try_from(res.len() - 8).map_err(|_| bad())?;
    res[4..8].copy_from_slice(&riff.to_le_bytes());
    Ok(res)
}

fn avif(img: &Pixels, quality: u8, meta: &OutputMeta) -> Result<Vec<u8>, TransformError> {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut enc = ravif::Encoder::new()
        .with_quality(f32::from(quality))
        .with_speed(AVIF_SPEED)
        // 10-bit even for 8-bit sources: at equal SSIM 8-bit needs ~13 % more bytes (speed 2).
        .with_bit_depth(ravif::BitDepth::Ten)
        .with_num_threads(Some(1))
        // Colour under fully transparent pixels is invisible: let rav1e simplify it.
        .with_alpha_color_mode(ravif::AlphaColorMode::UnassociatedClean);
    if let Some(exif) = &meta.exif {
        enc = enc.with_exif(exif.as_slice());
    }
    let d = img.data();
    let res = match img.channels {
        Channels::Rgb => {
            let px: Vec<ravif::RGB8> = d.chunks_exact(3).map(|p| ravif::RGB8::new(p[0], p[1], p[2])).collect();
            enc.encode_rgb(ravif::Img::new(&px[..], w, h))
        }
        Channels::Gray => {
            let px: Vec<ravif::RGB8> = d.iter().map(|&g| ravif::RGB8::new(g, g, g)).collect();
            enc.encode_rgb(ravif::Img::new(&px[..], w, h))
        }
        Channels::Rgba | Channels::GrayAlpha => {
            let px: Vec<ravif::RGBA8> =
                to_rgba(img).chunks_exact(4).map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3])).collect();
            enc.encode_rgba(ravif::Img::new(&px[..], w, h))
        }
    };
    Ok(res.map_err(enc_err)?.avif_file)
}

/// GIF has one transparent palette entry and no partial alpha: alpha is cut at 50 %.
fn gif_frame(img: &Pixels) -> Result<gif::Frame<'static>, TransformError> {
    let (Ok(w), Ok(h)) = (u16::try_from(img.width), u16::try_from(img.height)) else {
        return Err(TransformError::Encode("GIF dimensions are limited to 65535".into()));
    };
    let mut rgba = to_rgba(img);
    for p in rgba.chunks_exact_mut(4) {
        p[3] = if p[3] < 128 { 0 } else { 255 };
    }
    Ok(gif::Frame::from_rgba_speed(w, h, &mut rgba, GIF_QUANT_SPEED))
}

fn gif_still(img: &Pixels) -> Result<Vec<u8>, TransformError> {
    let frame = gif_frame(img)?;
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, frame.width, frame.height, &[]).map_err(enc_err)?;
        enc.write_frame(&frame).map_err(enc_err)?;
    }
    Ok(out)
}

fn gif_animation(frames: &[Frame], loop_count: u16) -> Result<Vec<u8>, TransformError> {
    let mut out = Vec::new();
    {
        let first = gif_frame(&frames[0].img)?;
        let mut enc = gif::Encoder::new(&mut out, first.width, first.height, &[]).map_err(enc_err)?;
        let repeat = if loop_count == 0 { gif::Repeat::Infinite } else { gif::Repeat::Finite(loop_count) };
        enc.set_repeat(repeat).map_err(enc_err)?;
        for (i, f) in frames.iter().enumerate() {
            let mut frame = if i == 0 { first.clone() } else { gif_frame(&f.img)? };
            // GIF delays are in 1/100 s.
            frame.delay = u16::try_from(f.delay_ms.div_ceil(10)).unwrap_or(u16::MAX);
            // Every frame is a full composited canvas: clear before the next one so
            // transparent pixels do not show the previous frame.
            frame.dispose = gif::DisposalMethod::Background;
            enc.write_frame(&frame).map_err(enc_err)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
