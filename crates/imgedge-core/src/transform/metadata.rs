//! Finding the ICC profile and EXIF block inside a source container, and building the
//! EXIF block written to the output. Byte walkers only, all bounded: a hostile length
//! field ends the walk, it never allocates.

use super::decode::Header;
use crate::options::Format;

/// Largest ICC profile carried (real profiles are 0.5–60 KB; CMYK LUT profiles reach
/// a few hundred KB and are never embedded in outputs).
pub(crate) const MAX_ICC: usize = 1 << 20;
/// Largest EXIF block carried to the output.
pub(crate) const MAX_EXIF: usize = 64 << 10;

/// The embedded ICC profile of a JPEG (APP2 chunks reassembled), PNG (iCCP), WebP
/// (ICCP) or AVIF (`colr` of type `prof`/`rICC`).
pub(crate) fn source_icc(input: &[u8], h: &Header) -> Option<Vec<u8>> {
    let icc = match h.format {
        Format::Jpeg => jpeg_icc(input),
        Format::Png => png_icc(input),
        Format::Webp => webp_chunk(input, b"ICCP").map(<[u8]>::to_vec),
        Format::Avif => avif_colr(input).and_then(|c| match c {
            Colr::Icc(p) => Some(p.to_vec()),
            Colr::Nclx { .. } => None,
        }),
        _ => None,
    }?;
    (icc.len() >= 132 && icc.len() <= MAX_ICC).then_some(icc)
}

/// The source's TIFF-structured EXIF (without the `Exif\0\0` prefix).
pub(crate) fn source_exif<'a>(input: &'a [u8], h: &Header) -> Option<&'a [u8]> {
    let exif = match h.format {
        Format::Jpeg => {
            jpeg_segments(input).into_iter().find_map(
                |(m, s)| {
                    if m == 0xE1 {
                        s.strip_prefix(b"Exif\0\0")
                    } else {
                        None
                    }
                },
            )
        }
        Format::Png => png_chunk(input, b"eXIf"),
        Format::Webp => webp_chunk(input, b"EXIF"),
        _ => None,
    }?;
    let exif = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    (exif.len() >= 8).then_some(exif)
}

/// APPn/COM segments before the first SOS (or SOF: metadata precedes the frame).
pub(crate) fn jpeg_segments(d: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 4 <= d.len() && d[i] == 0xFF {
        let marker = d[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if matches!(marker, 0xD8 | 0x01 | 0xD0..=0xD7) {
            i += 2;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        let len = usize::from(u16::from_be_bytes([d[i + 2], d[i + 3]]));
        let Some(seg) = d.get(i + 4..i + 2 + len).filter(|_| len >= 2) else {
            break;
        };
        out.push((marker, seg));
        i += 2 + len;
    }
    out
}

/// APP2 "ICC_PROFILE\0" chunks, each numbered `seq` of `count`, joined in order.
fn jpeg_icc(d: &[u8]) -> Option<Vec<u8>> {
    let mut chunks: Vec<(u8, u8, &[u8])> = jpeg_segments(d)
        .into_iter()
        .filter(|(m, _)| *m == 0xE2)
        .filter_map(|(_, s)| s.strip_prefix(b"ICC_PROFILE\0"))
        .filter_map(|s| Some((*s.first()?, *s.get(1)?, s.get(2..)?)))
        .collect();
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|c| c.0);
    let count = chunks[0].1;
    // Every chunk 1..=count exactly once, all agreeing on the count.
    let complete = usize::from(count) == chunks.len()
        && chunks.iter().enumerate().all(|(i, c)| usize::from(c.0) == i + 1 && c.1 == count);
    if !complete {
        return None;
    }
    let total: usize = chunks.iter().map(|c| c.2.len()).sum();
    if total > MAX_ICC {
        return None;
    }
    Some(chunks.iter().flat_map(|c| c.2.iter().copied()).collect())
}

/// A PNG chunk body by type (the first one).
fn png_chunk<'a>(d: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut i = 8;
    while let (Some(len), Some(k)) = (d.get(i..i + 4), d.get(i + 4..i + 8)) {
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        if k == b"IEND" {
            return None;
        }
        let body = d.get(i + 8..i.checked_add(8 + len)?)?;
        if k == kind {
            return Some(body);
        }
        i += 12 + len;
    }
    None
}

/// Every PNG chunk up to `IEND` as (type, body); ends at the first that does not fit.
pub(crate) fn png_chunks(d: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut i = 8usize;
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(d.get(i..i + 4)?.try_into().ok()?) as usize;
        let kind = d.get(i + 4..i + 8)?;
        if kind == b"IEND" {
            return None;
        }
        let body = d.get(i + 8..(i + 8).checked_add(len)?)?;
        i += 12 + len;
        Some((kind, body))
    })
}

/// iCCP is zlib-compressed: `png` (through `image`) inflates it, under a memory limit.
fn png_icc(d: &[u8]) -> Option<Vec<u8>> {
    use image::ImageDecoder;
    png_chunk(d, b"iCCP")?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(4 * MAX_ICC as u64);
    let mut dec = image::codecs::png::PngDecoder::with_limits(std::io::Cursor::new(d), limits).ok()?;
    dec.icc_profile().ok().flatten()
}

/// A chunk of a RIFF WebP by fourcc.
pub(crate) fn webp_chunk<'a>(d: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    let mut i = 12;
    while let (Some(k), Some(len)) = (d.get(i..i + 4), d.get(i + 4..i + 8)) {
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let body = d.get(i + 8..i.checked_add(8 + len)?)?;
        if k == kind {
            return Some(body);
        }
        // Chunks are padded to an even size.
        i += 8 + len + (len & 1);
    }
    None
}

/// An AVIF colour box: an ICC profile, or CICP code points.
pub(crate) enum Colr<'a> {
    Icc(&'a [u8]),
    Nclx { primaries: u16, transfer: u16 },
}

/// ISO-BMFF boxes of `d`: (type, body).
fn boxes(d: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(d.get(i..i + 4)?.try_into().ok()?) as usize;
        let kind = d.get(i + 4..i + 8)?;
        let (hdr, size) = match size {
            0 => (8, d.len() - i),
            1 => {
                let big = u64::from_be_bytes(d.get(i + 8..i + 16)?.try_into().ok()?);
                (16, usize::try_from(big).ok()?)
            }
            s => (8, s),
        };
        let body = d.get(i + hdr..i.checked_add(size)?)?;
        if size < hdr {
            return None;
        }
        i += size;
        Some((kind, body))
    })
}

fn child<'a>(d: &'a [u8], kind: &[u8]) -> Option<&'a [u8]> {
    boxes(d).find(|(k, _)| *k == kind).map(|(_, b)| b)
}

/// meta → iprp → ipco → the first `colr` of each kind (ICC preferred). The property
/// is not matched to the primary item: AVIF files carry one colour space.
pub(crate) fn avif_colr(d: &[u8]) -> Option<Colr<'_>> {
    let meta = child(d, b"meta")?.get(4..)?; // full box: version and flags
    let ipco = child(child(meta, b"iprp")?, b"ipco")?;
    let mut nclx = None;
    for (k, b) in boxes(ipco) {
        if k != b"colr" {
            continue;
        }
        match b.get(0..4)? {
            b"prof" | b"rICC" => return Some(Colr::Icc(b.get(4..)?)),
            b"nclx" if nclx.is_none() => {
                let p = u16::from_be_bytes(b.get(4..6)?.try_into().ok()?);
                let t = u16::from_be_bytes(b.get(6..8)?.try_into().ok()?);
                nclx = Some(Colr::Nclx { primaries: p, transfer: t });
            }
            _ => {}
        }
    }
    nclx
}

/// TIFF byte order.
#[derive(Clone, Copy)]
struct Tiff<'a> {
    d: &'a [u8],
    le: bool,
}

impl Tiff<'_> {
    fn parse(d: &[u8]) -> Option<Tiff<'_>> {
        let le = match d.get(0..4)? {
            b"II*\0" => true,
            b"MM\0*" => false,
            _ => return None,
        };
        Some(Tiff { d, le })
    }

    fn u16(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.d.get(at..at + 2)?.try_into().ok()?;
        Some(if self.le { u16::from_le_bytes(b) } else { u16::from_be_bytes(b) })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.d.get(at..at + 4)?.try_into().ok()?;
        Some(if self.le { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) })
    }

    /// Offsets of IFD0's 12-byte entries.
    fn ifd0_entries(&self) -> Option<impl Iterator<Item = usize>> {
        let ifd = self.u32(4)? as usize;
        let n = usize::from(self.u16(ifd)?);
        self.d.get(ifd + 2..ifd + 2 + n * 12)?;
        Some((0..n).map(move |k| ifd + 2 + k * 12))
    }
}

/// The source EXIF with Orientation set to 1 (the pixels are already upright), or
/// `None` when it is too large or not valid TIFF.
pub(crate) fn exif_reset_orientation(exif: &[u8]) -> Option<Vec<u8>> {
    if exif.len() > MAX_EXIF {
        return None;
    }
    let t = Tiff::parse(exif)?;
    let mut out = exif.to_vec();
    for e in t.ifd0_entries()? {
        // Orientation: SHORT, count 1, value inline in the first two bytes.
        if t.u16(e)? == 0x0112 && t.u16(e + 2)? == 3 {
            let one = if t.le { 1u16.to_le_bytes() } else { 1u16.to_be_bytes() };
            out[e + 8..e + 10].copy_from_slice(&one);
        }
    }
    Some(out)
}

/// A minimal big-endian EXIF block with only the source's Artist (0x013B) and
/// Copyright (0x8298) from IFD0, or `None` if it has neither.
pub(crate) fn exif_copyright_only(exif: &[u8]) -> Option<Vec<u8>> {
    let t = Tiff::parse(exif)?;
    let mut fields: Vec<(u16, &[u8])> = Vec::new();
    for e in t.ifd0_entries()? {
        let tag = t.u16(e)?;
        if tag != 0x013B && tag != 0x8298 {
            continue;
        }
        // ASCII only; values over 4 bytes live at an offset.
        if t.u16(e + 2)? != 2 {
            continue;
        }
        let count = t.u32(e + 4)? as usize;
        if count == 0 || count > MAX_EXIF / 4 {
            continue;
        }
        let at = if count <= 4 { e + 8 } else { t.u32(e + 8)? as usize };
        let Some(v) = exif.get(at..at + count) else {
            continue;
        };
        // Trailing NULs are re-added below; inner NULs (copyright's photographer /
        // editor split) are kept.
        let end = v.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        if end > 0 {
            fields.push((tag, &v[..end]));
        }
    }
    if fields.is_empty() {
        return None;
    }
    fields.sort_by_key(|f| f.0);
    let n = fields.len();
    let ifd_len = 2 + n * 12 + 4;
    let mut out = Vec::with_capacity(8 + ifd_len + 256);
    out.extend_from_slice(b"MM\0*");
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&(n as u16).to_be_bytes());
    let mut data = Vec::new();
    for (tag, v) in &fields {
        let count = v.len() + 1;
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&2u16.to_be_bytes());
        out.extend_from_slice(&(count as u32).to_be_bytes());
        if count <= 4 {
            let mut inline = [0u8; 4];
            inline[..v.len()].copy_from_slice(v);
            out.extend_from_slice(&inline);
        } else {
            let at = 8 + ifd_len + data.len();
            out.extend_from_slice(&(at as u32).to_be_bytes());
            data.extend_from_slice(v);
            data.push(0);
            if data.len() & 1 == 1 {
                data.push(0);
            }
        }
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&data);
    (out.len() <= MAX_EXIF).then_some(out)
}
