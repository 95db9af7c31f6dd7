//! Facts about a source for `/info`, read from its header and container structure:
//! no pixel is decoded. The container is still checked as far as a decoder would refuse
//! it before its first pixel (PNG chunk checksums, GIF block structure), so a file gets
//! the same status through `/info` as through a transform.

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::decode::{self, be32, le32};
use base64::Engine;

use super::colors::{self, Average, Dominant, Sample, Swatch};
use super::{hashes, TransformError};
use crate::options::info::ColorOptions;
use crate::options::{Format, InfoOptions};

/// The answer of an info request; fields not asked for are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Info {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    /// As displayed: after the EXIF orientation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// As stored, before the EXIF orientation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_height: Option<u32>,
    /// EXIF orientation, 1–8 (1 = as stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orientation: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frames: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashsums: Option<Hashsums>,
    /// Decoded metadata (`exif`, `iptc`, `xmp`): empty maps or `null` when the source has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exif: Option<super::ExifMap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iptc: Option<super::IptcMap>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xmp: Option<Option<String>>,
    #[serde(flatten)]
    pub colors: ColorFacts,
}

/// The facts computed from pixels ([`InfoOptions::colors`]), from one small decode.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ColorFacts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub average: Option<Average>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dominant_colors: Option<Dominant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub palette: Option<Vec<Swatch>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blurhash: Option<String>,
    /// Standard base64 with padding, as evanw's demo prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbhash: Option<String>,
}

/// Decodes the source small ([`Sample`]) and computes what `c` asks for.
pub fn color_facts(input: &[u8], c: &ColorOptions, max_pixels: u64) -> Result<ColorFacts, TransformError> {
    if !c.any() {
        return Ok(ColorFacts::default());
    }
    let sample = Sample::from_source(input, max_pixels)?;
    let mut out = ColorFacts::default();
    if c.average {
        out.average = Some(colors::average(&sample));
    }
    if let Some(build_missed) = c.dominant {
        out.dominant_colors = Some(colors::dominant(&sample, build_missed));
    }
    if c.palette != 0 {
        out.palette = Some(colors::palette(&sample, usize::from(c.palette)));
    }
    if let Some((x, y)) = c.blurhash {
        let small = sample.fit(colors::BLURHASH_SIDE)?;
        let rgb = small.rgb_over_white();
        out.blurhash = hashes::blurhash_encode(x.into(), y.into(), small.width, small.height, &rgb);
    }
    if c.thumbhash {
        let hash = hashes::thumbhash_encode(sample.width, sample.height, &sample.rgba);
        out.thumbhash = hash.map(|h| base64::engine::general_purpose::STANDARD.encode(h));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hashsums {
    /// Lowercase hex, as `sha256sum` prints it.
    pub sha256: String,
}

/// Reads what `opts` asks for. `max_pixels` is the tenant's source limit, checked from
/// the header as a transform checks it.
pub fn info(input: &[u8], opts: &InfoOptions, max_pixels: u64) -> Result<Info, TransformError> {
    let h = decode::read_header(input)?;
    decode::check_pixels(&h, max_pixels)?;
    let structure = match h.format {
        Format::Png => Some(png_structure(input)?),
        Format::Gif => Some(gif_structure(input)?),
        _ => None,
    };
    let mut out = Info::default();
    if opts.size {
        out.size = Some(input.len() as u64);
    }
    if opts.format {
        out.format = Some(h.format.ext());
    }
    if opts.dimensions {
        let (w, hh) = h.orientation.display_dims(h.width, h.height);
        out.width = Some(w);
        out.height = Some(hh);
        out.raw_width = Some(h.width);
        out.raw_height = Some(h.height);
        out.orientation = Some(h.orientation as u8);
    }
    if opts.alpha {
        out.alpha = Some(match (h.format, structure) {
            (Format::Jpeg, _) => false,
            (Format::Png | Format::Gif, Some(s)) => s.alpha,
            (Format::Webp, _) => webp_alpha(input),
            (Format::Avif, _) => super::avif::parse(input)?.alpha_item.is_some(),
            _ => image_alpha(input)?,
        });
    }
    if opts.frames {
        out.frames = Some(match (h.format, structure) {
            (Format::Gif, Some(s)) => s.frames,
            (Format::Webp, _) => webp_frames(input).max(1),
            _ => 1,
        });
    }
    if opts.sha256 {
        out.hashsums = Some(Hashsums { sha256: hex::encode(Sha256::digest(input)) });
    }
    metadata_info(input, &h, opts, &mut out);
    out.colors = color_facts(input, &opts.colors, max_pixels)?;
    Ok(out)
}

/// `exif`, `iptc`, `xmp`: read from the container's metadata blocks, never the pixels.
fn metadata_info(input: &[u8], h: &decode::Header, opts: &InfoOptions, out: &mut Info) {
    let m = &opts.metadata;
    if m.exif {
        out.exif = Some(super::info_meta::read_exif(input, h));
    }
    if m.iptc {
        out.iptc = Some(super::info_meta::read_iptc(input, h));
    }
    if m.xmp {
        out.xmp = Some(super::info_meta::read_xmp(input, h));
    }
}

#[derive(Debug, Clone, Copy)]
struct Structure {
    alpha: bool,
    frames: u32,
}

/// Walks the chunks up to `IEND`, checking each checksum as the decoder does; alpha is an
/// alpha colour type or a `tRNS` chunk.
fn png_structure(d: &[u8]) -> Result<Structure, TransformError> {
    let corrupt = |why: &str| TransformError::Decode(format!("PNG {why}"));
    let color_type = *d.get(25).ok_or_else(|| corrupt("truncated"))?;
    let mut alpha = matches!(color_type, 4 | 6);
    let mut i = 8usize;
    // a file cut short ends the walk: the decoder reports the missing data when it gets there
    while let (Some(len), Some(kind)) = (be32(d, i), d.get(i + 4..i + 8)) {
        let end = i.saturating_add(12).saturating_add(len as usize);
        let Some(crc) = be32(d, end.saturating_sub(4)).filter(|_| end <= d.len()) else {
            break;
        };
        if crc32fast::hash(&d[i + 4..end - 4]) != crc {
            return Err(corrupt("chunk checksum mismatch"));
        }
        if kind == b"tRNS" {
            alpha = true;
        }
        if kind == b"IEND" {
            break;
        }
        i = end;
    }
    Ok(Structure { alpha, frames: 1 })
}

/// Reads every frame's descriptor without LZW decoding.
fn gif_structure(d: &[u8]) -> Result<Structure, TransformError> {
    let mut opts = gif::DecodeOptions::new();
    opts.skip_frame_decoding(true);
    opts.set_color_output(gif::ColorOutput::Indexed);
    let err = |e: gif::DecodingError| TransformError::Decode(format!("GIF: {e}"));
    let mut dec = opts.read_info(std::io::Cursor::new(d)).map_err(err)?;
    let (mut frames, mut alpha) = (0u32, false);
    while let Some(f) = dec.read_next_frame().map_err(err)? {
        frames = frames.saturating_add(1);
        alpha |= f.transparent.is_some();
    }
    if frames == 0 {
        return Err(TransformError::Decode("GIF has no frames".into()));
    }
    Ok(Structure { alpha, frames })
}

/// `VP8X` alpha flag, or `VP8L`'s alpha-is-used bit; plain `VP8` has none.
fn webp_alpha(d: &[u8]) -> bool {
    match d.get(12..16) {
        Some(b"VP8X") => d.get(20).is_some_and(|f| f & 0x10 != 0),
        Some(b"VP8L") => le32(d, 21).is_some_and(|bits| bits & (1 << 28) != 0),
        _ => false,
    }
}

/// `ANMF` chunks at the top level of the RIFF container.
fn webp_frames(d: &[u8]) -> u32 {
    let mut n = 0u32;
    let mut i = 12usize;
    while let (Some(kind), Some(len)) = (d.get(i..i + 4), le32(d, i + 4)) {
        if kind == b"ANMF" {
            n = n.saturating_add(1);
        }
        // chunks are padded to an even size
        i = i.saturating_add(8).saturating_add(len as usize).saturating_add(len as usize & 1);
    }
    n
}

/// BMP, TIFF, ICO: the colour type from the image crate's header reader.
fn image_alpha(d: &[u8]) -> Result<bool, TransformError> {
    use image::ImageDecoder;
    let err = |e: image::ImageError| TransformError::Decode(e.to_string());
    let reader = image::ImageReader::new(std::io::Cursor::new(d)).with_guessed_format().map_err(|e| err(e.into()))?;
    let dec = reader.into_decoder().map_err(err)?;
    Ok(dec.color_type().has_alpha())
}
