//! Sniffing, header probing and decoding.
//!
//! The format comes from magic bytes only (never the extension or Content-Type).
//! Dimensions and EXIF orientation come from a small header walk that touches no pixel
//! data, so the pixel limit is enforced before any decoder allocates.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};
use turbojpeg::{Colorspace, Decompressor, PixelFormat, ScalingFactor};

use super::geometry::Orientation;
use super::pixels::{byte_len, Channels, Pixels};
use super::TransformError;
use crate::options::Format;

/// Progressive JPEGs with more scans than this are refused (the "many scans" CPU
/// bomb); 500 is what libjpeg-turbo's own `-limitscans` uses.
const JPEG_SCAN_LIMIT: u32 = 500;

/// What the header says, read without decoding pixels. Sizes are as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) format: Format,
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) orientation: Orientation,
    /// JPEG with 4 components (CMYK or YCCK): turbojpeg cannot convert those to RGB.
    pub(crate) cmyk: bool,
    /// Animated WebP: libwebp's simple decoder refuses those.
    pub(crate) animated: bool,
}

impl Header {
    fn new(format: Format, width: u32, height: u32) -> Result<Header, TransformError> {
        if width == 0 || height == 0 {
            return Err(TransformError::Decode(format!("{format} header has a zero dimension")));
        }
        Ok(Header { format, width, height, orientation: Orientation::Normal, cmyk: false, animated: false })
    }

    pub(crate) fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

pub(crate) fn sniff(input: &[u8]) -> Option<Format> {
    if input.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if input.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if input.starts_with(b"GIF87a") || input.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if input.len() >= 12 && input.starts_with(b"RIFF") && &input[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if is_avif(input) {
        Some(Format::Avif)
    } else if input.starts_with(b"BM") && input.len() >= 26 {
        Some(Format::Bmp)
    } else if input.starts_with(b"II*\0") || input.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else if input.starts_with(&[0, 0, 1, 0]) && input.get(4..6).is_some_and(|n| n != [0, 0]) {
        Some(Format::Ico)
    } else {
        None
    }
}

/// ISO-BMFF `ftyp` box naming `avif` (still) or `avis` (sequence) as major or
/// compatible brand.
fn is_avif(d: &[u8]) -> bool {
    if d.get(4..8) != Some(b"ftyp") {
        return false;
    }
    let size = be32(d, 0).map_or(0, |s| s as usize).min(d.len()).min(256);
    d.get(8..size)
        .is_some_and(|brands| brands.chunks_exact(4).enumerate().any(|(i, b)| i != 1 && (b == b"avif" || b == b"avis")))
}

pub(crate) fn read_header(input: &[u8]) -> Result<Header, TransformError> {
    match sniff(input) {
        Some(Format::Jpeg) => jpeg_header(input),
        Some(Format::Png) => png_header(input),
        Some(Format::Gif) => gif_header(input),
        Some(Format::Webp) => webp_header(input),
        Some(Format::Avif) => {
            let (w, h) = super::avif::dimensions(input)?;
            Header::new(Format::Avif, w, h)
        }
        Some(f @ (Format::Bmp | Format::Tiff | Format::Ico)) => image_header(input, f),
        None => Err(TransformError::UnsupportedSource),
    }
}

pub(crate) fn check_pixels(h: &Header, max_pixels: u64) -> Result<(), TransformError> {
    if h.pixels() > max_pixels {
        return Err(TransformError::SourceTooLarge { width: h.width, height: h.height, max_pixels });
    }
    Ok(())
}

fn truncated(what: &str) -> TransformError {
    TransformError::Decode(format!("truncated {what} header"))
}

fn be16(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?)))
}

pub(super) fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn le16(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?)))
}

fn le24(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at + 3)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

pub(super) fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// Orientation from a TIFF-structured EXIF block. Broken EXIF (hostile IFD counts,
/// truncation) is ignored rather than failing the image, as browsers do.
fn exif_orientation(tiff: &[u8]) -> Orientation {
    let tiff = tiff.strip_prefix(b"Exif\0\0").unwrap_or(tiff);
    exif::Reader::new()
        .read_raw(tiff.to_vec())
        .ok()
        .and_then(|e| e.get_field(exif::Tag::Orientation, exif::In::PRIMARY).and_then(|f| f.value.get_uint(0)))
        .map_or(Orientation::Normal, Orientation::from_exif)
}

/// Walks JPEG markers up to the frame header (SOFn), picking up the first EXIF APP1.
fn jpeg_header(d: &[u8]) -> Result<Header, TransformError> {
    let mut i = 2;
    let mut exif: Option<&[u8]> = None;
    loop {
        // Skip garbage between segments as libjpeg does, then fill bytes.
        while d.get(i).is_some_and(|&b| b != 0xFF) {
            i += 1;
        }
        while d.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *d.get(i).ok_or_else(|| truncated("JPEG"))?;
        i += 1;
        match marker {
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 | 0xDA => {
                return Err(TransformError::Decode("JPEG has no frame header".into()));
            }
            _ => {}
        }
        let len = be16(d, i).ok_or_else(|| truncated("JPEG"))? as usize;
        if len < 2 {
            return Err(TransformError::Decode("bad JPEG segment length".into()));
        }
        let seg = d.get(i + 2..i + len).ok_or_else(|| truncated("JPEG"))?;
        match marker {
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let (h, w) = (be16(seg, 1), be16(seg, 3));
                let comps = seg.get(5).copied();
                let (Some(h), Some(w), Some(comps)) = (h, w, comps) else {
                    return Err(truncated("JPEG"));
                };
                let mut hdr = Header::new(Format::Jpeg, w, h)?;
                hdr.cmyk = comps == 4;
                hdr.orientation = exif.map_or(Orientation::Normal, exif_orientation);
                return Ok(hdr);
            }
            0xE1 if exif.is_none() && seg.starts_with(b"Exif\0\0") => exif = Some(seg),
            _ => {}
        }
        i += len;
    }
}

/// IHDR, then chunks up to the first IDAT looking for eXIf (which must precede IDAT).
fn png_header(d: &[u8]) -> Result<Header, TransformError> {
    if d.get(12..16) != Some(b"IHDR") {
        return Err(TransformError::Decode("PNG does not start with IHDR".into()));
    }
    let (w, h) = (be32(d, 16), be32(d, 20));
    let (Some(w), Some(h)) = (w, h) else {
        return Err(truncated("PNG"));
    };
    let mut hdr = Header::new(Format::Png, w, h)?;
    let mut i = 8;
    while let (Some(len), Some(kind)) = (be32(d, i), d.get(i + 4..i + 8)) {
        if kind == b"IDAT" || kind == b"IEND" {
            break;
        }
        let Some(body) = d.get(i + 8..i + 8 + len as usize) else {
            break;
        };
        if kind == b"eXIf" {
            hdr.orientation = exif_orientation(body);
            break;
        }
        i += 12 + len as usize;
    }
    Ok(hdr)
}

/// The logical screen size. Frames larger than the screen are caught by the decoder's
/// `Limits`.
fn gif_header(d: &[u8]) -> Result<Header, TransformError> {
    let (Some(w), Some(h)) = (le16(d, 6), le16(d, 8)) else {
        return Err(truncated("GIF"));
    };
    Header::new(Format::Gif, w, h)
}

fn webp_header(d: &[u8]) -> Result<Header, TransformError> {
    let kind = d.get(12..16).ok_or_else(|| truncated("WebP"))?;
    let body = d.get(20..).ok_or_else(|| truncated("WebP"))?;
    match kind {
        b"VP8 " => {
            // Frame tag (3 bytes), start code 9d 01 2a, then 14-bit sizes.
            if body.get(3..6) != Some(&[0x9d, 0x01, 0x2a]) {
                return Err(TransformError::Decode("bad VP8 start code".into()));
            }
            let (Some(w), Some(h)) = (le16(body, 6), le16(body, 8)) else {
                return Err(truncated("WebP"));
            };
            Header::new(Format::Webp, w & 0x3fff, h & 0x3fff)
        }
        b"VP8L" => {
            if body.first() != Some(&0x2f) {
                return Err(TransformError::Decode("bad VP8L signature".into()));
            }
            let bits = le32(body, 1).ok_or_else(|| truncated("WebP"))?;
            Header::new(Format::Webp, (bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
        }
        b"VP8X" => {
            let flags = *body.first().ok_or_else(|| truncated("WebP"))?;
            let (Some(w), Some(h)) = (le24(body, 4), le24(body, 7)) else {
                return Err(truncated("WebP"));
            };
            let mut hdr = Header::new(Format::Webp, w + 1, h + 1)?;
            hdr.animated = flags & 0x02 != 0;
            if flags & 0x08 != 0 {
                hdr.orientation = webp_exif(d).map_or(Orientation::Normal, exif_orientation);
            }
            Ok(hdr)
        }
        _ => Err(TransformError::Decode("unknown WebP chunk".into())),
    }
}

/// The EXIF chunk of an extended WebP (it usually follows the image data).
fn webp_exif(d: &[u8]) -> Option<&[u8]> {
    let mut i = 12;
    while let (Some(kind), Some(len)) = (d.get(i..i + 4), le32(d, i + 4)) {
        let len = len as usize;
        let body = d.get(i + 8..i + 8 + len)?;
        if kind == b"EXIF" {
            return Some(body);
        }
        // Chunks are padded to an even size.
        i += 8 + len + (len & 1);
    }
    None
}

fn image_format(f: Format) -> ImageFormat {
    match f {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::Gif => ImageFormat::Gif,
        Format::Webp => ImageFormat::WebP,
        Format::Avif => ImageFormat::Avif,
        Format::Bmp => ImageFormat::Bmp,
        Format::Tiff => ImageFormat::Tiff,
        Format::Ico => ImageFormat::Ico,
    }
}

/// BMP, TIFF and ICO sizes through `image`'s decoders, which read only headers (the
/// BMP info header, the first TIFF IFD, the ICO directory and the chosen entry's
/// header) when constructed. The limits cap what those headers may make them allocate.
fn image_header(d: &[u8], f: Format) -> Result<Header, TransformError> {
    let mut limits = Limits::default();
    limits.max_alloc = Some(64 << 20);
    let mut reader = ImageReader::with_format(Cursor::new(d), image_format(f));
    reader.limits(limits);
    let (w, h) = reader.into_dimensions().map_err(|e| TransformError::Decode(format!("{f}: {e}")))?;
    Header::new(f, w, h)
}

/// A decoded animation: frames at full size, in display order.
pub(crate) struct Animation {
    pub(crate) frames: Vec<super::encode::Frame>,
    /// 0 = forever.
    pub(crate) loop_count: u16,
}

/// Decodes up to `max_frames` frames of an animated GIF or WebP, each composited onto
/// the full canvas (so every frame is `h.width × h.height`). Anything else, or
/// `max_frames` ≤ 1, is one frame. Frames are decoded lazily, so a file with more
/// frames costs nothing beyond `max_frames`; the caller sizes `max_frames` so that
/// `max_frames × h.pixels()` is within its pixel limit.
pub(crate) fn decode_animation(input: &[u8], h: &Header, max_frames: u32) -> Result<Animation, TransformError> {
    use image::codecs::gif::GifDecoder;
    use image::codecs::webp::WebPDecoder;
    use image::{AnimationDecoder, ImageDecoder};

    let animated = match h.format {
        Format::Gif => true,
        Format::Webp => h.animated,
        _ => false,
    };
    if max_frames <= 1 || !animated {
        let img = decode(input, h, 1)?;
        return Ok(Animation { frames: vec![super::encode::Frame { img, delay_ms: 0 }], loop_count: 0 });
    }
    let derr = |e: image::ImageError| TransformError::Decode(e.to_string());
    let mut limits = image_limits(h);
    if h.format == Format::Gif {
        // A GIF frame may overhang the logical screen: browsers clip it, and so do the
        // still decoder and the compositing here. `max_alloc` still bounds each frame's
        // buffer, so only the per-frame size check against the screen is dropped.
        limits.max_image_width = None;
        limits.max_image_height = None;
    }
    let (frames, loops) = if h.format == Format::Gif {
        let mut dec = GifDecoder::new(Cursor::new(input)).map_err(derr)?;
        dec.set_limits(limits).map_err(derr)?;
        let loops = dec.loop_count();
        (dec.into_frames(), loops)
    } else {
        let mut dec = WebPDecoder::new(Cursor::new(input)).map_err(derr)?;
        dec.set_limits(limits).map_err(derr)?;
        let loops = dec.loop_count();
        (dec.into_frames(), loops)
    };
    let loop_count = match loops {
        image::metadata::LoopCount::Infinite => 0,
        image::metadata::LoopCount::Finite(n) => u16::try_from(n.get()).unwrap_or(u16::MAX),
    };
    let mut out = Vec::new();
    for frame in frames.take(max_frames as usize) {
        let frame = frame.map_err(derr)?;
        let (num, den) = frame.delay().numer_denom_ms();
        let delay_ms = num.checked_div(den).unwrap_or(0);
        let buf = frame.into_buffer();
        if buf.dimensions() != (h.width, h.height) {
            return Err(TransformError::Decode("animation frame differs from the canvas".into()));
        }
        let mut img = Pixels::new(h.width, h.height, Channels::Rgba, buf.into_raw())?;
        img.drop_opaque_alpha();
        out.push(super::encode::Frame { img, delay_ms });
    }
    if out.is_empty() {
        return Err(TransformError::Decode("animation has no frames".into()));
    }
    // Frames must share one layout for the steps and the encoders.
    if out.iter().any(|f| f.img.channels != out[0].img.channels) {
        for f in &mut out {
            if !f.img.channels.has_alpha() {
                let px = &f.img;
                let rgba: Vec<u8> = px.data().chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
                f.img = Pixels::new(px.width, px.height, Channels::Rgba, rgba)?;
            }
        }
    }
    Ok(Animation { frames: out, loop_count })
}

/// Limits pinned to the header we already checked: room for a 16-bit RGBA output plus
/// decoder scratch.
fn image_limits(h: &Header) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(h.width);
    limits.max_image_height = Some(h.height);
    limits.max_alloc = Some(h.pixels().saturating_mul(8).saturating_add(64 << 20));
    limits
}

/// Decodes the whole image as stored (no orientation applied). `shrink` (1, 2, 4 or 8)
/// asks for DCT-domain downscaling where the codec supports it (baseline JPEG).
pub(crate) fn decode(input: &[u8], h: &Header, shrink: u32) -> Result<Pixels, TransformError> {
    let mut px = match h.format {
        Format::Jpeg if h.cmyk => decode_with_image(input, ImageFormat::Jpeg, h)?,
        Format::Jpeg => decode_jpeg(input, h, shrink)?,
        Format::Png => decode_with_image(input, ImageFormat::Png, h)?,
        Format::Gif => decode_with_image(input, ImageFormat::Gif, h)?,
        Format::Webp if h.animated => decode_with_image(input, ImageFormat::WebP, h)?,
        Format::Webp => decode_webp(input, h)?,
        Format::Avif => super::avif::decode(input, h.width, h.height)?,
        Format::Bmp => decode_with_image(input, ImageFormat::Bmp, h)?,
        Format::Tiff => decode_with_image(input, ImageFormat::Tiff, h)?,
        Format::Ico => decode_with_image(input, ImageFormat::Ico, h)?,
    };
    px.drop_opaque_alpha();
    Ok(px)
}

fn decode_jpeg(input: &[u8], h: &Header, shrink: u32) -> Result<Pixels, TransformError> {
    // At 1/8 the DC-domain decoder gives turbojpeg's pixels faster; whatever it
    // declines or finds odd goes through turbojpeg as before.
    if shrink == 8 {
        if let Ok(Some(px)) = super::jpeg_dc::decode(input, h.width, h.height) {
            return Ok(px);
        }
    }
    match decode_turbo(input, h, shrink) {
        Ok(px) => Ok(px),
        // The scan-limit refusal must stand (zune's own limit is 100 scans).
        Err(TurboError::Refused(e)) => Err(TransformError::Decode(e)),
        // libjpeg-turbo refuses some files (12-bit, odd sampling) that zune, being
        // lenient, still renders; genuinely corrupt data fails there too and becomes
        // `Decode`.
        Err(TurboError::Other(turbo)) => decode_with_image(input, ImageFormat::Jpeg, h).map_err(|e| match e {
            TransformError::Decode(zune) => TransformError::Decode(format!("{zune} (turbojpeg: {turbo})")),
            other => other,
        }),
    }
}

enum TurboError {
    Refused(String),
    Other(String),
}

impl From<turbojpeg::Error> for TurboError {
    fn from(e: turbojpeg::Error) -> TurboError {
        let msg = e.to_string();
        if msg.contains("scans") {
            TurboError::Refused(msg)
        } else {
            TurboError::Other(msg)
        }
    }
}

fn decode_turbo(input: &[u8], h: &Header, shrink: u32) -> Result<Pixels, TurboError> {
    let mut dec = Decompressor::new()?;
    let th = dec.read_header(input)?;
    if (th.width, th.height) != (h.width as usize, h.height as usize) {
        return Err(TurboError::Other("JPEG size differs between headers".into()));
    }
    let (format, channels) = match th.colorspace {
        Colorspace::Gray => (PixelFormat::GRAY, Channels::Gray),
        Colorspace::YCbCr | Colorspace::RGB => (PixelFormat::RGB, Channels::Rgb),
        Colorspace::CMYK | Colorspace::YCCK => {
            return Err(TurboError::Other("CMYK JPEG".into()));
        }
    };
    // Lossless JPEG cannot be DCT-scaled.
    let shrink = if th.is_lossless { 1 } else { shrink.clamp(1, 8) as usize };
    let factor = ScalingFactor::new(1, shrink);
    dec.set_scaling_factor(factor)?;
    dec.set_scan_limit(JPEG_SCAN_LIMIT)?;
    let (w, hh) = (factor.scale(th.width), factor.scale(th.height));
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(hh)) else {
        return Err(TurboError::Other("JPEG too large".into()));
    };
    let len = byte_len(w32, h32, channels).ok_or_else(|| TurboError::Other("JPEG too large".into()))?;
    let mut buf = vec![0u8; len];
    let image = turbojpeg::Image { pixels: &mut buf[..], width: w, pitch: w * channels.count(), height: hh, format };
    if let Err(e) = dec.decompress(input, image) {
        if !is_libjpeg_warning(&e.to_string()) {
            return Err(e.into());
        }
        // TurboJPEG reports a libjpeg warning as a failure only after decoding every row
        // (the missing data is grey, as libjpeg-based browsers show it): the image is
        // complete. zune, the fallback, gives up on truncated progressive files.
    }
    Pixels::new(w32, h32, channels, buf).map_err(|e| TurboError::Other(e.to_string()))
}

/// libjpeg's warnings (`JWRN_*`) that TurboJPEG turns into an error after finishing the
/// image: truncated data, garbage between markers, corrupt entropy-coded data. Fatal
/// errors (the scan limit among them) stop the decode and never read like these.
fn is_libjpeg_warning(msg: &str) -> bool {
    msg.contains("Premature end of JPEG file") || msg.contains("Corrupt JPEG data")
}

fn decode_webp(input: &[u8], h: &Header) -> Result<Pixels, TransformError> {
    let img =
        webp::Decoder::new(input).decode().ok_or_else(|| TransformError::Decode("invalid or truncated WebP".into()))?;
    if (img.width(), img.height()) != (h.width, h.height) {
        return Err(TransformError::Decode("WebP size differs between headers".into()));
    }
    Pixels::from_webp(img)
}

/// PNG, GIF (first frame), CMYK JPEG, animated WebP (first frame), BMP, TIFF and ICO
/// (largest entry) through `image`,
/// always with limits pinned to the header we already checked.
fn decode_with_image(input: &[u8], format: ImageFormat, h: &Header) -> Result<Pixels, TransformError> {
    let mut reader = ImageReader::with_format(Cursor::new(input), format);
    reader.limits(image_limits(h));
    let img = reader.decode().map_err(|e| TransformError::Decode(e.to_string()))?;
    from_dynamic(img)
}

fn from_dynamic(img: DynamicImage) -> Result<Pixels, TransformError> {
    let (w, h) = (img.width(), img.height());
    // 8-bit layouts move without copying; deeper ones are converted once.
    match img {
        DynamicImage::ImageLuma8(b) => Pixels::new(w, h, Channels::Gray, b.into_raw()),
        DynamicImage::ImageLumaA8(b) => Pixels::new(w, h, Channels::GrayAlpha, b.into_raw()),
        DynamicImage::ImageRgb8(b) => Pixels::new(w, h, Channels::Rgb, b.into_raw()),
        DynamicImage::ImageRgba8(b) => Pixels::new(w, h, Channels::Rgba, b.into_raw()),
        DynamicImage::ImageLuma16(_) => Pixels::new(w, h, Channels::Gray, img.into_luma8().into_raw()),
        DynamicImage::ImageLumaA16(_) => Pixels::new(w, h, Channels::GrayAlpha, img.into_luma_alpha8().into_raw()),
        other if other.color().has_alpha() => Pixels::new(w, h, Channels::Rgba, other.into_rgba8().into_raw()),
        other => Pixels::new(w, h, Channels::Rgb, other.into_rgb8().into_raw()),
    }
}
