//! Colour profiles and metadata that travel from the source to the output.
//!
//! `prepare` runs once, right after decoding. A source profile that is not sRGB is
//! either applied (pixels converted to sRGB with moxcms, nothing embedded) when `scp`
//! is on (the default) or the output cannot carry a profile (AVIF through ravif, GIF),
//! or kept: pixels untouched and the profile embedded (JPEG, PNG, WebP).
//!
//! * CMYK JPEGs are left alone: their profile describes CMYK, and the decoder already
//!   turned the pixels into RGB (Adobe inverted CMYK included).
//! * Grey pixels are not converted (a grey profile is only re-embedded).
//! * An unreadable profile is ignored (pixels are treated as sRGB), as browsers do.
//! * EXIF: stripped by default; with `kcr` (default) a minimal block carrying only
//!   Artist and Copyright is written; `sm:0` copies the source's EXIF with Orientation
//!   reset to 1 (the pixels are already upright). At most 64 KB.

use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

use super::decode::Header;
use super::metadata::{self, Colr};
use super::pixels::{Channels, Pixels};
use super::TransformError;
use crate::options::{Format, Options};

/// What the encoder writes besides pixels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OutputMeta {
    /// ICC profile to embed (the pixels are in this profile's space).
    pub(crate) icc: Option<Vec<u8>>,
    /// A complete TIFF-structured EXIF block to embed (orientation already applied
    /// and reset to 1), or `None`.
    pub(crate) exif: Option<Vec<u8>>,
}

/// Rows converted per moxcms call: bounds the scratch buffer.
const ROWS_PER_PASS: usize = 64;

/// Output formats whose encoder embeds an ICC profile.
fn can_embed_icc(f: Format) -> bool {
    matches!(f, Format::Jpeg | Format::Png | Format::Webp)
}

pub(crate) fn prepare(
    img: &mut Pixels,
    input: &[u8],
    header: &Header,
    opts: &Options,
    out: Format,
) -> Result<OutputMeta, TransformError> {
    let mut meta = OutputMeta::default();
    if !header.cmyk {
        if let Some((profile, raw)) = source_profile(input, header) {
            let rgb_px = matches!(img.channels, Channels::Rgb | Channels::Rgba);
            let matches_px = match profile.color_space {
                DataColorSpace::Rgb => rgb_px,
                DataColorSpace::Gray => !rgb_px && out != Format::Webp,
                _ => false,
            };
            if opts.strip_color_profile || !can_embed_icc(out) {
                if rgb_px && profile.color_space == DataColorSpace::Rgb && !is_srgb(&raw) {
                    to_srgb(img, &profile)?;
                }
            } else if matches_px {
                meta.icc = Some(raw);
            }
        }
    }
    if let Some(exif) = metadata::source_exif(input, header) {
        meta.exif = if !opts.strip_metadata {
            metadata::exif_reset_orientation(exif)
                .or_else(|| opts.keep_copyright.then(|| metadata::exif_copyright_only(exif)).flatten())
        } else if opts.keep_copyright {
            metadata::exif_copyright_only(exif)
        } else {
            None
        };
    }
    // GIF has no EXIF.
    if out == Format::Gif {
        meta.exif = None;
    }
    Ok(meta)
}

/// The source's profile, parsed, with its bytes (AVIF CICP Display P3 / BT.2020
/// primaries become the matching built-in profile).
fn source_profile(input: &[u8], header: &Header) -> Option<(ColorProfile, Vec<u8>)> {
    if let Some(raw) = metadata::source_icc(input, header) {
        let p = ColorProfile::new_from_slice(&raw).ok()?;
        return Some((p, raw));
    }
    if header.format == Format::Avif {
        // CICP colour primaries (ISO/IEC 23091-2): 12 = Display P3, 9 = BT.2020;
        // transfer 13 = sRGB curve (what P3 images from phones use).
        if let Some(Colr::Nclx { primaries, transfer }) = metadata::avif_colr(input) {
            let p = match (primaries, transfer) {
                (12, 13) => ColorProfile::new_display_p3(),
                (9, 1 | 6 | 14 | 15) => ColorProfile::new_bt2020(),
                _ => return None,
            };
            let raw = p.encode().ok()?;
            return Some((p, raw));
        }
    }
    None
}

/// True when the profile's description names sRGB (the usual "sRGB IEC61966-2.1" and
/// its v4 variants): converting those would cost time for no visible change.
fn is_srgb(icc: &[u8]) -> bool {
    let be32 = |at: usize| icc.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let Some(n) = be32(128) else {
        return false;
    };
    for k in 0..n.min(256) {
        let e = 132 + k * 12;
        if icc.get(e..e + 4) != Some(b"desc") {
            continue;
        }
        let (Some(off), Some(len)) = (be32(e + 4), be32(e + 8)) else {
            return false;
        };
        let Some(desc) = icc.get(off..off.saturating_add(len)) else {
            return false;
        };
        // textDescriptionType (v2, ASCII) or multiLocalizedUnicode (v4, UTF-16BE).
        return desc.windows(4).any(|w| w == b"sRGB") || desc.windows(8).any(|w| w == b"\0s\0R\0G\0B");
    }
    false
}

/// Converts RGB(A) pixels from `src` to sRGB in place, a band of rows at a time.
fn to_srgb(img: &mut Pixels, src: &ColorProfile) -> Result<(), TransformError> {
    let layout = match img.channels {
        Channels::Rgb => Layout::Rgb,
        Channels::Rgba => Layout::Rgba,
        Channels::Gray | Channels::GrayAlpha => return Ok(()),
    };
    let srgb = ColorProfile::new_srgb();
    // A profile moxcms cannot build a transform for is ignored like an unreadable one.
    let Ok(t) = src.create_transform_8bit(layout, &srgb, layout, TransformOptions::default()) else {
        return Ok(());
    };
    let band = img.stride() * ROWS_PER_PASS;
    let mut scratch = vec![0u8; band.min(img.data().len())];
    for chunk in img.data_mut().chunks_mut(band) {
        let src = &mut scratch[..chunk.len()];
        src.copy_from_slice(chunk);
        t.transform(src, chunk).map_err(|e| TransformError::Decode(format!("colour conversion: {e}")))?;
    }
    Ok(())
}
