//! URL → ImageRequest. One alias `match` over option names; unknown options are errors.
//!
//! Grammar (imgproxy's): `/{opt}/{opt}/.../plain/{percent-encoded source}[@{ext}]` or
//! `/{opt}/.../{base64url source, may be split by /}[.{ext}]`. Options are `name:arg:...`
//! segments; the first segment without `:` starts the source.
use std::collections::HashMap;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{Format, Gravity, GravityType, ImageRequest, OptionError, Options, ResizingType, Source};

/// One configured origin as the parser sees it.
#[derive(Debug, Clone)]
pub struct OriginRef {
    pub name: String,
    /// Absolute URL prefix (with trailing slash) that selects this origin for full-URL
    /// sources, e.g. `https://static.example.com/` or `s3://bucket/`.
    pub url_prefix: Option<String>,
}

/// Tenant state the parser needs: presets and origins.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    /// Preset name → option text (`rs:fill:300:300/q:75`). `default` applies to every request.
    pub presets: &'a HashMap<String, String>,
    pub origins: &'a [OriginRef],
    pub default_origin: Option<&'a str>,
}

/// Result of parsing a signed path.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedPath {
    pub request: ImageRequest,
    /// `exp`/`expires` unix timestamp, checked by the caller.
    pub expires: Option<u64>,
}

/// Longest object key accepted (bytes, after decoding).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest width or height (imgproxy's practical limit and what the codecs accept).
pub const MAX_DIMENSION: u32 = 65535;
/// Largest device pixel ratio.
pub const MAX_DPR: f64 = 8.0;
/// Longest cachebuster; it is copied into every cache key.
pub const MAX_CACHEBUSTER_LEN: usize = 256;
/// Largest gravity offset magnitude: offsets are pixels or fractions, so anything bigger
/// than a dimension is meaningless, and the bound keeps canonical strings short.
pub const MAX_OFFSET: f64 = 65535.0;

/// imgproxy decodes with Go's RawURLEncoding after trimming `=`: no padding required and
/// non-zero trailing bits tolerated, so URLs built by lenient encoders keep working.
const SOURCE_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Parses the path after the signature segment for one tenant.
pub fn parse(path: &str, ctx: &ParseContext<'_>) -> Result<ParsedPath, OptionError> {
    parse_with(path, Mode::Tenant(ctx))
}

/// Parses the output of [`ImageRequest::canonical`] and nothing else: no presets, no
/// expiry, explicit origin (any name), and the string must already be canonical.
pub fn parse_canonical(canonical: &str) -> Result<ImageRequest, OptionError> {
    let parsed = parse_with(canonical, Mode::Canonical)?;
    // Exactness keeps one spelling per request on the edge → render hop; a mismatch
    // means a bug or a forged header, never a valid request.
    if parsed.expires.is_some() || parsed.request.canonical() != canonical {
        return Err(OptionError::InvalidPath("not a canonical request".into()));
    }
    Ok(parsed.request)
}

#[derive(Clone, Copy)]
enum Mode<'a> {
    Tenant(&'a ParseContext<'a>),
    /// Presets off, origin must be explicit but is not checked against a tenant.
    Canonical,
}

/// Options being built plus the expiry, which is not part of the request's identity.
#[derive(Default)]
struct State {
    options: Options,
    expires: Option<u64>,
}

fn parse_with(path: &str, mode: Mode<'_>) -> Result<ParsedPath, OptionError> {
    let rest = path.strip_prefix('/').ok_or_else(|| OptionError::InvalidPath("path must start with /".into()))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let presets = match mode {
        Mode::Tenant(ctx) => Some(ctx.presets),
        Mode::Canonical => None,
    };

    let mut st = State::default();
    if let Some(text) = presets.and_then(|p| p.get("default")) {
        apply_preset("default", text, &mut st)?;
    }

    // imgproxy: options end at the first segment without an argument separator
    let source_at = segments.iter().position(|s| !s.contains(':')).unwrap_or(segments.len());
    for seg in &segments[..source_at] {
        apply_option(seg, &mut st, presets, None)?;
    }

    let (decoded, ext_format) = decode_source(&segments[source_at..])?;
    if ext_format.is_some() {
        // the extension wins over `f:`, as in imgproxy
        st.options.format = ext_format;
    }
    let source = resolve_source(&decoded, mode)?;
    Ok(ParsedPath { request: ImageRequest { options: st.options, source }, expires: st.expires })
}

/// Applies a preset's option text in place. Presets may not name presets, which also rules
/// out cycles.
fn apply_preset(name: &str, text: &str, st: &mut State) -> Result<(), OptionError> {
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        if !seg.contains(':') {
            return Err(invalid("preset", format!("preset {} has a malformed option", clip(name))));
        }
        apply_option(seg, st, None, Some(name))?;
    }
    Ok(())
}

/// Applies one `name:arg:...` segment. `presets` is `None` where presets are not allowed;
/// `in_preset` names the preset being expanded.
fn apply_option(
    seg: &str,
    st: &mut State,
    presets: Option<&HashMap<String, String>>,
    in_preset: Option<&str>,
) -> Result<(), OptionError> {
    let (name, arg_text) = seg.split_once(':').unwrap_or((seg, ""));
    let args: Vec<&str> = arg_text.split(':').collect();
    let o = &mut st.options;
    match name {
        "resize" | "rs" => {
            max_args(name, &args, 5)?;
            set_resizing_type(name, &mut o.resizing_type, arg(&args, 0))?;
            set_dimension(name, "width", &mut o.width, arg(&args, 1))?;
            set_dimension(name, "height", &mut o.height, arg(&args, 2))?;
            set_bool(name, &mut o.enlarge, arg(&args, 3))?;
            check_extend(name, arg(&args, 4))?;
        }
        "size" | "s" => {
            max_args(name, &args, 4)?;
            set_dimension(name, "width", &mut o.width, arg(&args, 0))?;
            set_dimension(name, "height", &mut o.height, arg(&args, 1))?;
            set_bool(name, &mut o.enlarge, arg(&args, 2))?;
            check_extend(name, arg(&args, 3))?;
        }
        "resizing_type" | "rt" => {
            set_resizing_type(name, &mut o.resizing_type, one_arg(name, &args)?)?;
        }
        "width" | "w" => set_dimension(name, "width", &mut o.width, one_arg(name, &args)?)?,
        "height" | "h" => set_dimension(name, "height", &mut o.height, one_arg(name, &args)?)?,
        "enlarge" | "el" => set_bool(name, &mut o.enlarge, one_arg(name, &args)?)?,
        "gravity" | "g" => o.gravity = parse_gravity(name, &args)?,
        "quality" | "q" => {
            let q = parse_uint(one_arg(name, &args)?)
                .filter(|q| *q <= 100)
                .ok_or_else(|| invalid(name, "quality must be an integer in 0..=100"))?;
            // 0 means "the tenant's default", like imgproxy
            o.quality = u8::try_from(q).ok().filter(|q| *q > 0);
        }
        "format" | "f" | "ext" => o.format = Some(parse_format(one_arg(name, &args)?)?),
        "dpr" => {
            let d = parse_float(one_arg(name, &args)?)
                .filter(|d| *d > 0.0 && *d <= MAX_DPR)
                .ok_or_else(|| invalid(name, "dpr must be a number in (0, 8]"))?;
            o.dpr = d;
        }
        "expires" | "exp" => {
            let t =
                parse_uint(one_arg(name, &args)?).ok_or_else(|| invalid(name, "expires must be a unix timestamp"))?;
            // imgproxy treats 0 as "no expiry"
            st.expires = (t > 0).then_some(t);
        }
        "cachebuster" | "cb" => {
            let cb = one_arg(name, &args)?;
            let ok = cb.len() <= MAX_CACHEBUSTER_LEN
                && cb.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
            if !ok {
                return Err(invalid(name, "cachebuster must be 1-256 characters of [A-Za-z0-9._~-]"));
            }
            o.cachebuster = Some(cb.to_owned());
        }
        "preset" | "pr" => {
            if let Some(outer) = in_preset {
                return Err(invalid(name, format!("preset {} may not use presets", clip(outer))));
            }
            for preset in &args {
                if preset.is_empty() {
                    return Err(invalid(name, "empty preset name"));
                }
                let text =
                    presets.and_then(|p| p.get(*preset)).ok_or_else(|| OptionError::UnknownPreset(clip(preset)))?;
                apply_preset(preset, text, st)?;
            }
        }
        _ => return Err(OptionError::UnknownOption(clip(name))),
    }
    Ok(())
}

fn invalid(name: &str, reason: impl Into<String>) -> OptionError {
    OptionError::InvalidArgs { name: clip(name), reason: reason.into() }
}

/// Error messages are shown to clients; keep echoed input short.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The i-th argument; missing and empty both mean "leave unchanged".
fn arg<'s>(args: &[&'s str], i: usize) -> &'s str {
    args.get(i).copied().unwrap_or("")
}

fn max_args(name: &str, args: &[&str], max: usize) -> Result<(), OptionError> {
    if args.len() > max {
        return Err(invalid(name, format!("at most {max} arguments")));
    }
    Ok(())
}

fn one_arg<'s>(name: &str, args: &[&'s str]) -> Result<&'s str, OptionError> {
    match args {
        [a] if !a.is_empty() => Ok(*a),
        _ => Err(invalid(name, "expected one argument")),
    }
}

fn set_resizing_type(name: &str, dst: &mut ResizingType, a: &str) -> Result<(), OptionError> {
    *dst = match a {
        "" => return Ok(()),
        "fit" => ResizingType::Fit,
        "fill" => ResizingType::Fill,
        "fill-down" => ResizingType::FillDown,
        "force" => ResizingType::Force,
        "auto" => ResizingType::Auto,
        other => return Err(invalid(name, format!("unknown resizing type: {}", clip(other)))),
    };
    Ok(())
}

fn set_dimension(name: &str, what: &str, dst: &mut u32, a: &str) -> Result<(), OptionError> {
    if a.is_empty() {
        return Ok(());
    }
    if !a.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(name, format!("{what} must be a non-negative integer")));
    }
    *dst = parse_uint(a)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v <= MAX_DIMENSION)
        .ok_or_else(|| invalid(name, format!("{what} must be at most {MAX_DIMENSION}")))?;
    Ok(())
}

/// Go's `strconv.ParseBool` spellings, as imgproxy accepts them.
fn parse_bool(a: &str) -> Option<bool> {
    match a {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn set_bool(name: &str, dst: &mut bool, a: &str) -> Result<(), OptionError> {
    if a.is_empty() {
        return Ok(());
    }
    *dst = parse_bool(a).ok_or_else(|| invalid(name, "enlarge must be 1/t/true or 0/f/false"))?;
    Ok(())
}

/// Extending the canvas is not implemented; accept only the spellings of "off" so that
/// URLs written for imgproxy with an explicit `:0` keep working.
fn check_extend(name: &str, a: &str) -> Result<(), OptionError> {
    if a.is_empty() || parse_bool(a) == Some(false) {
        Ok(())
    } else {
        Err(invalid(name, "extend is not supported"))
    }
}

/// Plain decimal digits only: `u64::from_str` would also take `+5`.
fn parse_uint(a: &str) -> Option<u64> {
    if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    a.parse().ok()
}

/// A finite decimal number; `inf`/`nan` (which `f64::from_str` takes) are not.
fn parse_float(a: &str) -> Option<f64> {
    if !a.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) {
        return None;
    }
    let v: f64 = a.parse().ok()?;
    // -0 and 0 mean the same; keep one so the canonical form has one spelling
    v.is_finite().then_some(if v == 0.0 { 0.0 } else { v })
}

fn parse_gravity(name: &str, args: &[&str]) -> Result<Gravity, OptionError> {
    let kind = match arg(args, 0) {
        "ce" => GravityType::Center,
        "no" => GravityType::North,
        "so" => GravityType::South,
        "ea" => GravityType::East,
        "we" => GravityType::West,
        "noea" => GravityType::NorthEast,
        "nowe" => GravityType::NorthWest,
        "soea" => GravityType::SouthEast,
        "sowe" => GravityType::SouthWest,
        "sm" => return Err(invalid(name, "smart gravity (sm) is not supported")),
        "fp" => return Err(invalid(name, "focus point gravity (fp) is not supported")),
        "" => return Err(invalid(name, "missing gravity type")),
        other => return Err(invalid(name, format!("unknown gravity type: {}", clip(other)))),
    };
    max_args(name, args, 3)?;
    let offset = |a: &str| -> Result<f64, OptionError> {
        if a.is_empty() {
            return Ok(0.0);
        }
        parse_float(a)
            .filter(|v| v.abs() <= MAX_OFFSET)
            .ok_or_else(|| invalid(name, "offsets must be numbers in -65535..=65535"))
    };
    Ok(Gravity { kind, x_offset: offset(arg(args, 1))?, y_offset: offset(arg(args, 2))? })
}

fn parse_format(a: &str) -> Result<Format, OptionError> {
    match Format::from_ext(a) {
        Some(f) if f.can_encode() => Ok(f),
        _ => Err(OptionError::UnsupportedFormat(clip(a))),
    }
}

/// Decodes the source segments (after the options) to text plus the format named by the
/// optional extension.
fn decode_source(segs: &[&str]) -> Result<(String, Option<Format>), OptionError> {
    let (decoded, ext) = match segs {
        [] | [""] => return Err(OptionError::MissingSource),
        // `//plain/...` would otherwise read as base64 "plain..."; say what is wrong instead
        ["", ..] => return Err(OptionError::InvalidPath("empty path segment".into())),
        ["plain", rest @ ..] => {
            let joined = rest.join("/");
            // the extension is split off before decoding, so `%40` stays part of the key
            let (raw, ext) = split_ext(&joined, '@');
            if raw.is_empty() {
                return Err(OptionError::MissingSource);
            }
            (percent_decode_strict(raw)?, ext.map(parse_format).transpose()?)
        }
        _ => {
            let joined = segs.concat();
            let (raw, ext) = split_ext(&joined, '.');
            let raw = raw.trim_end_matches('=');
            if raw.is_empty() {
                return Err(OptionError::MissingSource);
            }
            let bytes = SOURCE_B64.decode(raw).map_err(|_| OptionError::InvalidSource("bad base64 source".into()))?;
            let decoded =
                String::from_utf8(bytes).map_err(|_| OptionError::InvalidSource("source is not valid UTF-8".into()))?;
            (decoded, ext.map(parse_format).transpose()?)
        }
    };
    Ok((decoded, ext))
}

/// Splits at the last `sep`; an empty extension counts as none.
fn split_ext(s: &str, sep: char) -> (&str, Option<&str>) {
    match s.rsplit_once(sep) {
        Some((raw, ext)) => (raw, (!ext.is_empty()).then_some(ext)),
        None => (s, None),
    }
}

/// Percent-decodes once, rejecting malformed escapes (as Go's `url.PathUnescape` does in
/// imgproxy) and non-UTF-8 results.
fn percent_decode_strict(raw: &str) -> Result<String, OptionError> {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).unwrap_or(&[]);
            if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(OptionError::InvalidSource("bad percent-encoding".into()));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| OptionError::InvalidSource("source is not valid UTF-8".into()))
}

/// `scheme://` per RFC 3986 (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`).
fn has_scheme(src: &str) -> bool {
    let Some((scheme, _)) = src.split_once("://") else {
        return false;
    };
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn is_origin_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// Picks the origin and the raw key for a decoded source. Only configured origins are ever
/// chosen: a full URL must match one of their prefixes.
fn resolve_source(src: &str, mode: Mode<'_>) -> Result<Source, OptionError> {
    let (origin, raw_key) = match mode {
        Mode::Canonical => match src.split_once(':') {
            Some((name, rest)) if is_origin_name(name) => (name, rest),
            _ => return Err(OptionError::InvalidSource("origin missing".into())),
        },
        Mode::Tenant(ctx) => {
            if has_scheme(src) {
                let best = ctx
                    .origins
                    .iter()
                    .filter_map(|o| {
                        let prefix = o.url_prefix.as_deref()?;
                        let rest = src.strip_prefix(prefix)?;
                        // without a trailing slash in the prefix, `https://a.com` must not
                        // match `https://a.com.evil.net/` or `https://a.com@evil.net/`
                        (prefix.ends_with('/') || rest.starts_with('/')).then_some((
                            prefix.len(),
                            o.name.as_str(),
                            rest,
                        ))
                    })
                    .max_by_key(|(len, _, _)| *len);
                match best {
                    Some((_, name, rest)) => (name, rest),
                    None => return Err(OptionError::InvalidSource("URL does not match any configured origin".into())),
                }
            } else {
                match src.split_once(':') {
                    Some((name, rest)) if is_origin_name(name) && ctx.origins.iter().any(|o| o.name == name) => {
                        (name, rest)
                    }
                    _ => match ctx.default_origin {
                        Some(d) => (d, src),
                        None => return Err(OptionError::UnknownOrigin("none given and no default origin".into())),
                    },
                }
            }
        }
    };
    Ok(Source { origin: origin.to_owned(), key: normalize_key(raw_key)? })
}

/// Validates a decoded key once, here, so no later stage has to: relative, no traversal,
/// no empty segments, no control characters or backslashes, bounded length.
pub fn normalize_key(raw: &str) -> Result<String, OptionError> {
    let key = raw.trim_start_matches('/');
    if key.is_empty() {
        return Err(OptionError::MissingSource);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(OptionError::InvalidSource("key is too long".into()));
    }
    if key.chars().any(char::is_control) {
        return Err(OptionError::InvalidSource("control character in key".into()));
    }
    if key.contains('\\') {
        return Err(OptionError::InvalidSource("backslash in key".into()));
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(OptionError::InvalidSource("empty, . or .. segment in key".into()));
    }
    Ok(key.to_owned())
}
