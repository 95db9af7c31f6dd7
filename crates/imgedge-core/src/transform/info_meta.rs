//! `/info`'s `exif`, `iptc` and `xmp`: the source's metadata decoded into JSON-ready
//! maps. Everything is bounded because the blocks are attacker-written: a block over its
//! cap is left out, at most [`MAX_FIELDS`] fields are read (kamadak-exif parses a value
//! only when it is read, so the cap bounds the copies too), strings are clipped to
//! [`MAX_TEXT`] bytes, and a broken block yields what could be read before the break,
//! never an error: the image itself is still sound.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

use super::decode::Header;
use super::metadata;
use crate::options::Format;

/// Largest EXIF block read (a JPEG APP1 holds at most 64 KiB; PNG and WebP have no limit).
pub const MAX_EXIF_BLOCK: usize = 256 << 10;
/// Largest XMP packet answered (and largest compressed or inflated PNG `iTXt`).
pub const MAX_XMP: usize = 256 << 10;
/// Most EXIF fields or IPTC datasets read from one block.
pub const MAX_FIELDS: usize = 512;
/// Longest string value answered, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Bytes of parsed EXIF values read in all (each single value is inside the block).
const MAX_EXIF_VALUES: usize = 256 << 10;

/// One EXIF field as answered: text, or a decimal GPS coordinate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ExifValue {
    Text(String),
    Degrees(Degrees),
}

/// Signed decimal degrees in units of 1e-7 (about 1 cm), answered as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Degrees(pub i64);

impl Serialize for Degrees {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0 as f64 / 1e7)
    }
}

/// EXIF tag name (kamadak-exif's, as in the EXIF standard) → value.
pub type ExifMap = BTreeMap<String, ExifValue>;
/// IPTC IIM dataset name → its values in file order (datasets may repeat).
pub type IptcMap = BTreeMap<String, Vec<String>>;

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The primary image's EXIF fields (IFD0, Exif, GPS and Interop IFDs; not the thumbnail's).
/// ASCII values as text, others as kamadak-exif displays them with their unit
/// (`1/125 s`, `f/2.8`, `43 deg 28 min 2.81 sec`), and `GPSLatitudeDecimal` /
/// `GPSLongitudeDecimal` as signed degrees when the position is complete.
pub fn read_exif(input: &[u8], h: &Header) -> ExifMap {
    match metadata::source_exif(input, h).filter(|b| b.len() <= MAX_EXIF_BLOCK) {
        Some(block) => exif_fields(block),
        None => ExifMap::new(),
    }
}

/// The fields of a TIFF-structured EXIF block (see [`read_exif`]).
fn exif_fields(block: &[u8]) -> ExifMap {
    let mut out = ExifMap::new();
    let parsed = exif::Reader::new()
        .continue_on_error(true)
        .read_raw(block.to_vec())
        .or_else(|e| e.distill_partial_result(|_| {}));
    let Ok(ex) = parsed else { return out };
    let mut budget = MAX_EXIF_VALUES;
    let mut gps: [Option<f64>; 2] = [None, None];
    let mut refs: [Option<u8>; 2] = [None, None];
    for f in ex.fields().take(MAX_FIELDS) {
        let size = value_size(&f.value);
        if size > budget {
            break;
        }
        budget -= size;
        if f.ifd_num != exif::In::PRIMARY {
            continue;
        }
        let value = match &f.value {
            // the maker's private block and other opaque blobs say nothing readable
            exif::Value::Undefined(v, _) if v.len() > 64 || f.tag == exif::Tag::MakerNote => continue,
            exif::Value::Ascii(parts) => {
                let text: Vec<String> =
                    parts.iter().map(|p| String::from_utf8_lossy(p).trim_end_matches('\0').trim().to_owned()).collect();
                text.join(", ")
            }
            _ => f.display_value().with_unit(&ex).to_string(),
        };
        match f.tag {
            exif::Tag::GPSLatitude => gps[0] = dms(&f.value),
            exif::Tag::GPSLongitude => gps[1] = dms(&f.value),
            exif::Tag::GPSLatitudeRef => refs[0] = value.bytes().next(),
            exif::Tag::GPSLongitudeRef => refs[1] = value.bytes().next(),
            _ => {}
        }
        // unknown tags are named by context and number (`Tag(Exif, 50000)` → `Exif.50000`)
        let name = match f.tag.description() {
            Some(_) => f.tag.to_string(),
            None => format!("{:?}.{}", f.tag.context(), f.tag.number()),
        };
        out.insert(name, ExifValue::Text(clip(value)));
    }
    for (i, (name, negative)) in [("GPSLatitudeDecimal", b'S'), ("GPSLongitudeDecimal", b'W')].into_iter().enumerate() {
        if let (Some(deg), Some(r)) = (gps[i], refs[i]) {
            let signed = if r.eq_ignore_ascii_case(&negative) { -deg } else { deg };
            out.insert(name.to_owned(), ExifValue::Degrees(Degrees((signed * 1e7).round() as i64)));
        }
    }
    out
}

/// Bytes a parsed value holds (what reading it allocated).
fn value_size(v: &exif::Value) -> usize {
    use exif::Value as V;
    match v {
        V::Byte(x) | V::Undefined(x, _) => x.len(),
        V::SByte(x) => x.len(),
        V::Ascii(x) => x.iter().map(Vec::len).sum(),
        V::Short(x) => x.len() * 2,
        V::SShort(x) => x.len() * 2,
        V::Long(x) => x.len() * 4,
        V::SLong(x) => x.len() * 4,
        V::Float(x) => x.len() * 4,
        V::Rational(x) => x.len() * 8,
        V::SRational(x) => x.len() * 8,
        V::Double(x) => x.len() * 8,
        V::Unknown(..) => 0,
    }
}

/// Degrees, minutes, seconds as three rationals → degrees; `None` unless in range.
fn dms(v: &exif::Value) -> Option<f64> {
    let exif::Value::Rational(r) = v else { return None };
    let [d, m, s] = r.get(..3)? else { return None };
    let part = |x: &exif::Rational| (x.denom != 0).then(|| x.to_f64());
    let deg = part(d)? + part(m)? / 60.0 + part(s)? / 3600.0;
    (deg.is_finite() && (0.0..=180.0).contains(&deg)).then_some(deg)
}

/// Names of the IIM application record (2) datasets in common use.
fn iptc_name(dataset: u8) -> Option<&'static str> {
    Some(match dataset {
        5 => "ObjectName",
        7 => "EditStatus",
        10 => "Urgency",
        15 => "Category",
        20 => "SupplementalCategories",
        25 => "Keywords",
        40 => "SpecialInstructions",
        55 => "DateCreated",
        60 => "TimeCreated",
        62 => "DigitalCreationDate",
        63 => "DigitalCreationTime",
        65 => "OriginatingProgram",
        80 => "By-line",
        85 => "By-lineTitle",
        90 => "City",
        92 => "Sub-location",
        95 => "Province-State",
        100 => "Country-PrimaryLocationCode",
        101 => "Country-PrimaryLocationName",
        103 => "OriginalTransmissionReference",
        105 => "Headline",
        110 => "Credit",
        115 => "Source",
        116 => "CopyrightNotice",
        118 => "Contact",
        120 => "Caption-Abstract",
        122 => "Writer-Editor",
        _ => return None,
    })
}

/// IPTC IIM records of a JPEG: APP13 `Photoshop 3.0` image resource blocks, resource
/// 0x0404. Application-record (2) datasets by name, other records as `record:dataset`;
/// record 2's version number (2:00) is binary and left out. Other formats carry IPTC
/// inside their XMP, which `xmp` answers.
pub fn read_iptc(input: &[u8], h: &Header) -> IptcMap {
    let mut out = IptcMap::new();
    if h.format != Format::Jpeg {
        return out;
    }
    let mut datasets = 0usize;
    for seg in metadata::jpeg_segments(input).into_iter().filter(|(m, _)| *m == 0xED).map(|(_, s)| s) {
        let Some(blocks) = seg.strip_prefix(b"Photoshop 3.0\0") else { continue };
        for iim in photoshop_resources(blocks).filter(|(id, _)| *id == 0x0404).map(|(_, d)| d) {
            for (record, dataset, value) in iim_datasets(iim) {
                if datasets >= MAX_FIELDS {
                    return out;
                }
                datasets += 1;
                if record == 1 || (record == 2 && dataset == 0) {
                    continue;
                }
                let name = match (record, iptc_name(dataset)) {
                    (2, Some(n)) => n.to_owned(),
                    _ => format!("{record}:{dataset}"),
                };
                out.entry(name).or_default().push(clip(String::from_utf8_lossy(value).into_owned()));
            }
        }
    }
    out
}

/// `8BIM` image resource blocks: (id, data). Ends at the first malformed block.
fn photoshop_resources(d: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if d.get(i..i + 4)? != b"8BIM" {
            return None;
        }
        let id = u16::from_be_bytes(d.get(i + 4..i + 6)?.try_into().ok()?);
        // a Pascal-string name, padded so that length byte + name is even
        let name_len = usize::from(*d.get(i + 6)?);
        let at = i + 6 + (name_len + 1).next_multiple_of(2);
        let len = u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?) as usize;
        let data = d.get(at + 4..(at + 4).checked_add(len)?)?;
        i = at + 4 + len.next_multiple_of(2);
        Some((id, data))
    })
}

/// IIM datasets: `0x1C record dataset size(u16) data`. An extended (over 32 KiB) size or
/// a missing tag marker ends the walk.
fn iim_datasets(d: &[u8]) -> impl Iterator<Item = (u8, u8, &[u8])> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if *d.get(i)? != 0x1C {
            return None;
        }
        let (record, dataset) = (*d.get(i + 1)?, *d.get(i + 2)?);
        let len = u16::from_be_bytes(d.get(i + 3..i + 5)?.try_into().ok()?);
        if len & 0x8000 != 0 {
            return None;
        }
        let value = d.get(i + 5..i + 5 + usize::from(len))?;
        i += 5 + usize::from(len);
        Some((record, dataset, value))
    })
}

const XMP_JPEG: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
const XMP_PNG_KEYWORD: &[u8] = b"XML:com.adobe.xmp";

/// The XMP packet as stored: JPEG APP1 (the standard packet; extended XMP is not
/// joined), PNG `iTXt` `XML:com.adobe.xmp` (inflated when compressed), WebP `XMP `.
/// `None` when absent, not UTF-8 or over [`MAX_XMP`].
pub fn read_xmp(input: &[u8], h: &Header) -> Option<String> {
    let packet: Vec<u8> = match h.format {
        Format::Jpeg => metadata::jpeg_segments(input)
            .into_iter()
            .filter(|(m, _)| *m == 0xE1)
            .find_map(|(_, s)| s.strip_prefix(XMP_JPEG))?
            .to_vec(),
        Format::Png => png_xmp(input)?,
        Format::Webp => metadata::webp_chunk(input, b"XMP ")?.to_vec(),
        _ => return None,
    };
    if packet.len() > MAX_XMP {
        return None;
    }
    let text = String::from_utf8(packet).ok()?;
    // writers pad packets with NULs and whitespace
    Some(text.trim_end_matches(['\0', ' ', '\n', '\r', '\t']).to_owned())
}

/// `iTXt`: keyword NUL, compression flag, method, language NUL, translated keyword NUL, text.
fn png_xmp(d: &[u8]) -> Option<Vec<u8>> {
    let body = metadata::png_chunks(d).find_map(|(k, b)| {
        (k == b"iTXt")
            .then_some(b)
            .filter(|b| b.strip_prefix(XMP_PNG_KEYWORD).is_some_and(|rest| rest.first() == Some(&0)))
    })?;
    let rest = &body[XMP_PNG_KEYWORD.len() + 1..];
    let (compressed, rest) = (*rest.first()? == 1, rest.get(2..)?);
    let lang_end = rest.iter().position(|b| *b == 0)?;
    let rest = rest.get(lang_end + 1..)?;
    let key_end = rest.iter().position(|b| *b == 0)?;
    let text = rest.get(key_end + 1..)?;
    if !compressed {
        return Some(text.to_vec());
    }
    if text.len() > MAX_XMP {
        return None;
    }
    // the limit stops a zlib bomb: inflation ends with an error at MAX_XMP + 1 bytes
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(text, MAX_XMP + 1).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A PNG signature and one `iTXt` chunk (the CRC is not read here).
    fn png_itxt(compressed: bool, text: &[u8]) -> Vec<u8> {
        let mut body = XMP_PNG_KEYWORD.to_vec();
        body.extend_from_slice(&[0, u8::from(compressed), 0]);
        body.extend_from_slice(b"en\0\0");
        body.extend_from_slice(text);
        let mut d = b"\x89PNG\r\n\x1a\n".to_vec();
        d.extend_from_slice(&(body.len() as u32).to_be_bytes());
        d.extend_from_slice(b"iTXt");
        d.extend_from_slice(&body);
        d.extend_from_slice(&[0; 4]);
        d
    }

    #[test]
    fn png_xmp_is_inflated_within_its_cap() {
        let packet = b"<x:xmpmeta/>";
        assert_eq!(png_xmp(&png_itxt(false, packet)).unwrap(), packet);
        let z = miniz_oxide::deflate::compress_to_vec_zlib(packet, 6);
        assert_eq!(png_xmp(&png_itxt(true, &z)).unwrap(), packet);
        // 64 MiB of spaces compress to about 64 KiB: refused at the cap, not inflated
        let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![b' '; 64 << 20], 9);
        assert!(bomb.len() < MAX_XMP);
        assert_eq!(png_xmp(&png_itxt(true, &bomb)), None);
        // another keyword is not XMP
        let mut other = png_itxt(false, packet);
        other[12] = b'Y';
        assert_eq!(png_xmp(&other), None);
    }

    #[test]
    fn iptc_walkers_stop_at_malformed_blocks() {
        // a named resource (odd name length: no pad), then one with a length past the end
        let mut d = b"8BIM\x04\x04\x03abc".to_vec();
        d.extend_from_slice(&5u32.to_be_bytes());
        d.extend_from_slice(b"\x1c\x02\x19\x00\x00\0");
        d.extend_from_slice(b"8BIM\x04\x04\0\0\xff\xff\xff\xff");
        let blocks: Vec<_> = photoshop_resources(&d).collect();
        assert_eq!(blocks, [(0x0404, &b"\x1c\x02\x19\x00\x00"[..])]);
        assert_eq!(iim_datasets(blocks[0].1).collect::<Vec<_>>(), [(2, 25, &b""[..])]);
        // an extended-length dataset and a missing marker end the walk
        assert_eq!(iim_datasets(b"\x1c\x02\x05\x80\x04abcd").count(), 0);
        assert_eq!(iim_datasets(b"\x1c\x02\x05\x00\x01a\x00\x02").count(), 1);
    }

    #[test]
    fn exif_entries_sharing_one_large_value_are_read_within_the_budget() {
        // 5000 ASCII entries with distinct (unknown) tags, all pointing at one 50 000-byte
        // string: reading every one would copy 250 MB
        let (n, len) = (5000u16, 50_000u32);
        let data_at = 8 + 2 + u32::from(n) * 12 + 4;
        let mut t = b"II*\0\x08\0\0\0".to_vec();
        t.extend_from_slice(&n.to_le_bytes());
        for i in 0..n {
            t.extend_from_slice(&(0xD000 + i).to_le_bytes());
            t.extend_from_slice(&2u16.to_le_bytes());
            t.extend_from_slice(&len.to_le_bytes());
            t.extend_from_slice(&data_at.to_le_bytes());
        }
        t.extend_from_slice(&0u32.to_le_bytes());
        t.resize(data_at as usize + len as usize, b'A');
        let out = exif_fields(&t);
        // the values read stop at the budget, far below MAX_FIELDS; each is clipped
        assert!(!out.is_empty() && out.len() <= MAX_EXIF_VALUES / len as usize + 1, "{} fields", out.len());
        assert_eq!(out.get("Tiff.53248"), Some(&ExifValue::Text("A".repeat(MAX_TEXT))));
        // a block that is not TIFF, or is cut short, is no field and no error
        assert!(exif_fields(b"not tiff").is_empty());
        assert!(exif_fields(&t[..100]).is_empty());
    }

    #[test]
    fn strings_are_clipped_on_a_char_boundary() {
        let s = clip("é".repeat(MAX_TEXT));
        assert!(s.len() <= MAX_TEXT && s.len() >= MAX_TEXT - 1);
        assert_eq!(clip("short".into()), "short");
    }
}
