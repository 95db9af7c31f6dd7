//! `/grid` requests: one image composed of 2–9 sources laid out in equal cells.
//!
//! The path after `/grid/{signature}` (the signature covers it, as for `/info`):
//!
//! ```text
//! /grid:{cols}:{cell_width}:{cell_height}[:{gap}]/[option/…]{source}/{source}[/…]
//! ```
//!
//! Options are `grid` (required), `rt`/`resizing_type` (`fit`, the default: the whole
//! source inside its cell; `fill`: the cell covered, cropped around the centre),
//! `bg`/`background` (`rrggbb` or `rgb`: gaps and letterboxing; default white),
//! `f`/`format`, `q`/`quality`, `exp`/`expires` and `cb`/`cachebuster`. Each source is one
//! segment, the base64url encoding (padding optional) of the source as written after
//! `plain/` in a transform URL, so sources may hold `/`. [`GridRequest::canonical`] is the
//! cache key, ETag and billing input; it starts with [`GRID_PREFIX`].

use std::fmt::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::parse::{normalize_key, parse_source};
use super::{Format, OptionError, ParseContext, Rgb, Source};

/// Prefix of every canonical grid request (and of the public path before the signature).
pub const GRID_PREFIX: &str = "/grid";
pub const MIN_GRID_SOURCES: usize = 2;
pub const MAX_GRID_SOURCES: usize = 9;
/// Largest cell side: 9 cells of it in a row stay within the default result dimension.
pub const MAX_GRID_CELL: u32 = 2048;
pub const MAX_GRID_GAP: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridOptions {
    pub cols: u32,
    pub cell_width: u32,
    pub cell_height: u32,
    pub gap: u32,
    /// Cover each cell (cropped around the centre) instead of fitting inside it.
    pub fill: bool,
    pub background: Rgb,
    /// Output format; `None` = JPEG (a grid has no single source format to keep).
    pub format: Option<Format>,
    /// 0 = the tenant's default.
    pub quality: u8,
    pub cachebuster: Option<String>,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            cols: 0,
            cell_width: 0,
            cell_height: 0,
            gap: 0,
            fill: false,
            background: Rgb(255, 255, 255),
            format: None,
            quality: 0,
            cachebuster: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridRequest {
    pub options: GridOptions,
    pub sources: Vec<Source>,
}

/// A parsed grid path and its `exp`, checked by the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedGrid {
    pub request: GridRequest,
    pub expires: Option<u64>,
}

impl GridRequest {
    /// Rows of the layout: as many as the sources fill, the last one possibly short.
    pub fn rows(&self) -> u32 {
        let cols = self.options.cols.min(self.sources.len() as u32).max(1);
        (self.sources.len() as u32).div_ceil(cols)
    }

    /// Columns actually used: never more than there are sources.
    pub fn used_cols(&self) -> u32 {
        self.options.cols.min(self.sources.len() as u32).max(1)
    }

    /// Width and height of the composed image.
    pub fn dimensions(&self) -> (u32, u32) {
        let o = &self.options;
        let (cols, rows) = (self.used_cols(), self.rows());
        (cols * o.cell_width + (cols - 1) * o.gap, rows * o.cell_height + (rows - 1) * o.gap)
    }

    /// The output format: the URL's, else JPEG.
    pub fn output_format(&self) -> Format {
        self.options.format.unwrap_or(Format::Jpeg)
    }

    /// `/grid` + options sorted by short name, defaults left out + each source as the
    /// base64url of `{origin}:{key}`.
    pub fn canonical(&self) -> String {
        let o = &self.options;
        let d = GridOptions::default();
        let mut s = String::from(GRID_PREFIX);
        if o.background != d.background {
            let _ = write!(s, "/bg:{}", o.background.hex());
        }
        if let Some(cb) = &o.cachebuster {
            let _ = write!(s, "/cb:{cb}");
        }
        if let Some(f) = o.format {
            let _ = write!(s, "/f:{}", f.ext());
        }
        let _ = write!(s, "/grid:{}:{}:{}:{}", o.cols, o.cell_width, o.cell_height, o.gap);
        if o.quality != 0 {
            let _ = write!(s, "/q:{}", o.quality);
        }
        if o.fill {
            s.push_str("/rt:fill");
        }
        for src in &self.sources {
            let _ = write!(s, "/{}", URL_SAFE_NO_PAD.encode(format!("{}:{}", src.origin, src.key)));
        }
        s
    }
}

/// Parses the path after `/grid/{signature}` for one tenant.
pub fn parse_grid(path: &str, ctx: &ParseContext<'_>) -> Result<ParsedGrid, OptionError> {
    // a grid draws no watermark: it would serve a forced tenant's images without one
    if ctx.watermark_force.is_some() {
        return Err(OptionError::Forbidden("grid is not allowed: this tenant watermarks every image".into()));
    }
    parse_with(path, |text| parse_source(text, ctx))
}

/// Parses the output of [`GridRequest::canonical`] and nothing else.
pub fn parse_grid_canonical(canonical: &str) -> Result<GridRequest, OptionError> {
    let not_canonical = || OptionError::InvalidPath("not a canonical grid request".into());
    let rest = canonical.strip_prefix(GRID_PREFIX).ok_or_else(not_canonical)?;
    let parsed = parse_with(rest, |text| match text.split_once(':') {
        Some((origin, key)) if !origin.is_empty() => Ok(Source { origin: origin.to_owned(), key: normalize_key(key)? }),
        _ => Err(OptionError::InvalidSource("origin missing".into())),
    })?;
    if parsed.expires.is_some() || parsed.request.canonical() != canonical {
        return Err(not_canonical());
    }
    Ok(parsed.request)
}

fn invalid(name: &str, reason: &str) -> OptionError {
    OptionError::InvalidArgs { name: name.to_owned(), reason: reason.to_owned() }
}

fn number(name: &str, arg: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, OptionError> {
    match arg.parse::<u32>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(name, &format!("{arg:?} is not a whole number in {}..={}", range.start(), range.end()))),
    }
}

fn colour(name: &str, arg: &str) -> Result<Rgb, OptionError> {
    let hex = |s: &str| u8::from_str_radix(s, 16).map_err(|_| invalid(name, "colour must be rrggbb or rgb hex"));
    match arg.len() {
        6 if arg.is_ascii() => Ok(Rgb(hex(&arg[0..2])?, hex(&arg[2..4])?, hex(&arg[4..6])?)),
        3 if arg.is_ascii() => {
            let d = |i: usize| hex(&arg[i..=i]).map(|v| v * 17);
            Ok(Rgb(d(0)?, d(1)?, d(2)?))
        }
        _ => Err(invalid(name, "colour must be rrggbb or rgb hex")),
    }
}

fn parse_with(path: &str, source: impl Fn(&str) -> Result<Source, OptionError>) -> Result<ParsedGrid, OptionError> {
    let rest = path.strip_prefix('/').ok_or_else(|| OptionError::InvalidPath("path must start with /".into()))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let source_at = segments.iter().position(|s| !s.contains(':')).unwrap_or(segments.len());
    let mut o = GridOptions::default();
    let mut expires = None;
    let mut seen_grid = false;
    for seg in &segments[..source_at] {
        let mut parts = seg.split(':');
        let name = parts.next().unwrap_or("");
        let args: Vec<&str> = parts.collect();
        let one = || match args.as_slice() {
            [a] => Ok(*a),
            _ => Err(invalid(name, "takes one argument")),
        };
        match name {
            "grid" => {
                if !(3..=4).contains(&args.len()) {
                    return Err(invalid(name, "grid:cols:cell_width:cell_height[:gap]"));
                }
                o.cols = number(name, args[0], 1..=MAX_GRID_SOURCES as u32)?;
                o.cell_width = number(name, args[1], 1..=MAX_GRID_CELL)?;
                o.cell_height = number(name, args[2], 1..=MAX_GRID_CELL)?;
                o.gap = match args.get(3) {
                    Some(g) if !g.is_empty() => number(name, g, 0..=MAX_GRID_GAP)?,
                    _ => 0,
                };
                seen_grid = true;
            }
            "rt" | "resizing_type" => {
                o.fill = match one()? {
                    "fit" => false,
                    "fill" => true,
                    other => return Err(invalid(name, &format!("{other:?}: a grid cell is `fit` or `fill`"))),
                }
            }
            "bg" | "background" => o.background = colour(name, one()?)?,
            "f" | "format" | "ext" => {
                let ext = one()?;
                let f = Format::from_ext(ext).ok_or_else(|| OptionError::UnsupportedFormat(ext.into()))?;
                if !f.can_encode() {
                    return Err(OptionError::UnsupportedFormat(f.ext().into()));
                }
                o.format = Some(f);
            }
            "q" | "quality" => o.quality = number(name, one()?, 0..=100)? as u8,
            "exp" | "expires" => {
                let t = one()?.parse::<u64>().map_err(|_| invalid(name, "unix time"))?;
                expires = (t != 0).then_some(t);
            }
            "cb" | "cachebuster" => {
                let cb = one()?;
                let ok = cb.len() <= 256 && cb.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
                if !ok {
                    return Err(invalid(name, "1-256 of [A-Za-z0-9._~-]"));
                }
                o.cachebuster = (!cb.is_empty()).then(|| cb.to_owned());
            }
            other => return Err(OptionError::UnknownOption(other.to_owned())),
        }
    }
    if !seen_grid {
        return Err(invalid("grid", "a grid URL needs grid:cols:cell_width:cell_height[:gap]"));
    }
    let encoded = &segments[source_at..];
    if encoded.len() < MIN_GRID_SOURCES || encoded.len() > MAX_GRID_SOURCES {
        return Err(OptionError::InvalidPath(format!(
            "a grid has {MIN_GRID_SOURCES}..={MAX_GRID_SOURCES} sources, not {}",
            encoded.len()
        )));
    }
    let mut sources = Vec::with_capacity(encoded.len());
    for seg in encoded {
        let bytes = URL_SAFE_NO_PAD
            .decode(seg.trim_end_matches('='))
            .map_err(|_| OptionError::InvalidSource("bad base64 source".into()))?;
        let text = String::from_utf8(bytes).map_err(|_| OptionError::InvalidSource("source is not UTF-8".into()))?;
        sources.push(source(&text)?);
    }
    Ok(ParsedGrid { request: GridRequest { options: o, sources }, expires })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::options::OriginRef;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn parse(path: &str) -> Result<ParsedGrid, OptionError> {
        let presets = std::collections::HashMap::new();
        let origins = [
            OriginRef { name: "local".into(), url_prefix: None },
            OriginRef { name: "media".into(), url_prefix: None },
        ];
        parse_grid(
            path,
            &ParseContext {
                presets: &presets,
                origins: &origins,
                default_origin: Some("local"),
                watermark_force: None,
            },
        )
    }

    #[test]
    fn a_grid_url_parses_and_round_trips_through_its_canonical_form() {
        let path = format!(
            "/grid:2:200:150:4/rt:fill/background:f80/q:70/f:webp/exp:1893456000/{}/{}/{}",
            b64("a/b.jpg"),
            b64("media:c.png"),
            b64("d.jpg")
        );
        let p = parse(&path).unwrap();
        assert_eq!(p.expires, Some(1_893_456_000));
        let r = &p.request;
        assert_eq!((r.options.cols, r.options.cell_width, r.options.cell_height, r.options.gap), (2, 200, 150, 4));
        assert!(r.options.fill);
        assert_eq!(r.options.background, Rgb(255, 136, 0));
        assert_eq!(r.sources[1], Source { origin: "media".into(), key: "c.png".into() });
        assert_eq!((r.used_cols(), r.rows(), r.dimensions()), (2, 2, (404, 304)));
        let canonical = r.canonical();
        assert!(canonical.starts_with("/grid/bg:ff8800/f:webp/grid:2:200:150:4/q:70/rt:fill/"), "{canonical}");
        assert_eq!(parse_grid_canonical(&canonical).unwrap(), *r);
        // another spelling of the same grid is the same request; exp is not in it
        let again = format!(
            "/f:webp/q:70/grid:2:200:150:4/bg:ff8800/rt:fill/{}/{}/{}",
            b64("local:a/b.jpg"),
            b64("media:c.png"),
            b64("d.jpg")
        );
        assert_eq!(parse(&again).unwrap().request.canonical(), canonical);
        assert!(parse_grid_canonical(&format!("{canonical}/")).is_err());
    }

    #[test]
    fn fewer_columns_than_asked_when_the_sources_are_few() {
        let p = parse(&format!("/grid:9:100:100/{}/{}", b64("a.jpg"), b64("b.jpg"))).unwrap().request;
        assert_eq!((p.used_cols(), p.rows(), p.dimensions()), (2, 1, (200, 100)));
        assert_eq!(p.output_format(), Format::Jpeg);
    }

    #[test]
    fn bad_grids_are_refused() {
        let two = format!("{}/{}", b64("a.jpg"), b64("b.jpg"));
        let ten: Vec<String> = (0..10).map(|i| b64(&format!("{i}.jpg"))).collect();
        for (path, why) in [
            (format!("/{two}"), "no grid option"),
            (format!("/grid:2:100/{two}"), "too few arguments"),
            (format!("/grid:0:100:100/{two}"), "no columns"),
            (format!("/grid:2:100:5000/{two}"), "cell too large"),
            (format!("/grid:2:100:100:999/{two}"), "gap too large"),
            (format!("/grid:2:100:100/rt:force/{two}"), "not fit or fill"),
            (format!("/grid:2:100:100/w:100/{two}"), "a transform option"),
            (format!("/grid:2:100:100/f:bmp/{two}"), "a format never written"),
            (format!("/grid:2:100:100/{}", b64("a.jpg")), "one source"),
            (format!("/grid:3:100:100/{}", ten.join("/")), "ten sources"),
            (format!("/grid:2:100:100/{}/{}", b64("a.jpg"), b64("../b.jpg")), "traversal"),
            (format!("/grid:2:100:100/{}/!!", b64("a.jpg")), "not base64"),
        ] {
            assert!(parse(&path).is_err(), "{why}: {path}");
        }
    }
}
