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

use super::info::{ColorOptions, InfoOptions, InfoRequest, INFO_PREFIX};
use super::{
    watermark, Crop, Extend, ForcedWatermark, Format, Gravity, GravityType, ImageRequest, OptionError, Options,
    Placeholder, ResizingType, Rgb, Source, Trim, Watermark,
};

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
    /// The tenant's `watermark.force`: applied after presets and URL options.
    pub watermark_force: Option<&'a ForcedWatermark>,
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
/// Longest `fn`/`filename` in bytes (after base64 decoding): a common file-system limit.
pub const MAX_FILENAME_LEN: usize = 255;
/// Longest cachebuster; it is copied into every cache key.
pub const MAX_CACHEBUSTER_LEN: usize = 256;
/// Largest gravity offset magnitude: offsets are pixels or fractions, so anything bigger
/// than a dimension is meaningless, and the bound keeps canonical strings short.
pub const MAX_OFFSET: f64 = 65535.0;
/// Largest `z`/`zoom` factor.
pub const MAX_ZOOM: f64 = 100.0;
/// Largest blur / sharpen sigma: beyond it every result is a flat colour anyway.
pub const MAX_SIGMA: f64 = 100.0;
/// Largest `pix`/`pixelate` block size in pixels.
pub const MAX_PIXELATE: u32 = 1024;
/// Largest `mb`/`max_bytes` (100 MiB).
pub const MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Largest `t`/`trim` threshold (a colour distance on 8-bit channels).
pub const MAX_TRIM_THRESHOLD: f64 = 255.0;

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

/// Result of parsing a signed `/info` path.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedInfo {
    pub request: InfoRequest,
    /// `exp`/`expires` unix timestamp, checked by the caller.
    pub expires: Option<u64>,
}

/// Parses the path after `/info/{signature}` for one tenant. Transform presets do not
/// apply: an info request has its own options.
pub fn parse_info(path: &str, ctx: &ParseContext<'_>) -> Result<ParsedInfo, OptionError> {
    parse_info_with(path, Mode::Tenant(ctx))
}

/// Parses the output of [`InfoRequest::canonical`] and nothing else.
pub fn parse_info_canonical(canonical: &str) -> Result<InfoRequest, OptionError> {
    let rest = canonical
        .strip_prefix(INFO_PREFIX)
        .ok_or_else(|| OptionError::InvalidPath("not a canonical info request".into()))?;
    let parsed = parse_info_with(rest, Mode::Canonical)?;
    if parsed.expires.is_some() || parsed.request.canonical() != canonical {
        return Err(OptionError::InvalidPath("not a canonical info request".into()));
    }
    Ok(parsed.request)
}

fn parse_info_with(path: &str, mode: Mode<'_>) -> Result<ParsedInfo, OptionError> {
    let rest = path.strip_prefix('/').ok_or_else(|| OptionError::InvalidPath("path must start with /".into()))?;
    let segments: Vec<&str> = rest.split('/').collect();
    let source_at = segments.iter().position(|s| !s.contains(':')).unwrap_or(segments.len());
    let mut o = InfoOptions::default();
    let mut expires = None;
    for seg in &segments[..source_at] {
        let (name, arg_text) = seg.split_once(':').unwrap_or((seg, ""));
        let args: Vec<&str> = arg_text.split(':').collect();
        match name {
            "size" | "s" => set_bool(name, "size", &mut o.size, one_arg(name, &args)?)?,
            "format" | "f" => set_bool(name, "format", &mut o.format, one_arg(name, &args)?)?,
            "dimensions" | "d" => set_bool(name, "dimensions", &mut o.dimensions, one_arg(name, &args)?)?,
            "alpha" | "a" => set_bool(name, "alpha", &mut o.alpha, one_arg(name, &args)?)?,
            "frames" | "pages_number" | "pn" => set_bool(name, "frames", &mut o.frames, one_arg(name, &args)?)?,
            "exif" => set_bool(name, "exif", &mut o.metadata.exif, one_arg(name, &args)?)?,
            "iptc" => set_bool(name, "iptc", &mut o.metadata.iptc, one_arg(name, &args)?)?,
            "xmp" => set_bool(name, "xmp", &mut o.metadata.xmp, one_arg(name, &args)?)?,
            "calc_hashsums" | "chs" => {
                // an empty list turns hashing off, as an empty positional argument does
                o.sha256 = false;
                for a in args.iter().filter(|a| !a.is_empty()) {
                    match *a {
                        "sha256" => o.sha256 = true,
                        other => return Err(invalid(name, format!("unsupported hash {}", clip(other)))),
                    }
                }
            }
            "expires" | "exp" => {
                let t = parse_uint(one_arg(name, &args)?)
                    .ok_or_else(|| invalid(name, "expires must be a unix timestamp"))?;
                expires = (t > 0).then_some(t);
            }
            "cachebuster" | "cb" => o.cachebuster = parse_cachebuster(name, &args)?,
            _ if parse_color_option(name, &args, &mut o.colors)? => {}
            _ => return Err(OptionError::UnknownOption(clip(name))),
        }
    }
    // an extension names an output format, which an info answer does not have: it is
    // checked like a transform's and otherwise ignored
    let (decoded, _ext) = decode_source(&segments[source_at..])?;
    let source = resolve_source(&decoded, mode)?;
    Ok(ParsedInfo { request: InfoRequest { options: o, source }, expires })
}

/// `plh:blurhash[:x:y]` (default 4:3) | `plh:thumbhash` | `plh:color`, with the short
/// kinds `bh`, `th`, `c`; an empty `plh:` turns it off.
fn parse_placeholder(name: &str, args: &[&str]) -> Result<Option<Placeholder>, OptionError> {
    let components = |a: &str, default: u8| {
        if a.is_empty() {
            return Some(default);
        }
        parse_uint(a).and_then(|v| u8::try_from(v).ok()).filter(|v| (1..=9).contains(v))
    };
    let err = || invalid(name, "expected blurhash[:x:y] (1-9 each), thumbhash or color");
    Ok(match args {
        [""] => None,
        ["blurhash" | "bh", rest @ ..] if rest.len() <= 2 => {
            let x = components(arg(rest, 0), 4).ok_or_else(err)?;
            let y = components(arg(rest, 1), 3).ok_or_else(err)?;
            Some(Placeholder::BlurHash(x, y))
        }
        ["thumbhash" | "th"] => Some(Placeholder::ThumbHash),
        ["color" | "c"] => Some(Placeholder::Color),
        _ => return Err(err()),
    })
}

/// Largest `palette` size (and the smallest, for a palette that is on).
pub const MAX_PALETTE: u16 = 256;
pub const MIN_PALETTE: u16 = 2;

/// The info options that need pixels; `Ok(false)` when `name` is none of them.
fn parse_color_option(name: &str, args: &[&str], c: &mut ColorOptions) -> Result<bool, OptionError> {
    match name {
        "average" | "avg" => set_bool(name, "average", &mut c.average, one_arg(name, args)?)?,
        "dominant_colors" | "dc" => {
            max_args(name, args, 2)?;
            let mut on = c.dominant.is_some();
            set_bool(name, "dominant_colors", &mut on, arg(args, 0))?;
            let mut build_missed = c.dominant.unwrap_or(false);
            set_bool(name, "build_missed", &mut build_missed, arg(args, 1))?;
            c.dominant = on.then_some(build_missed);
        }
        "palette" | "p" => {
            let n = parse_uint(one_arg(name, args)?)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n == 0 || (MIN_PALETTE..=MAX_PALETTE).contains(n))
                .ok_or_else(|| {
                    invalid(name, format!("palette must be 0 (off) or {MIN_PALETTE}-{MAX_PALETTE} colours"))
                })?;
            c.palette = n;
        }
        "blurhash" | "bh" => {
            let components = |a: &str| parse_uint(a).and_then(|v| u8::try_from(v).ok()).filter(|v| *v <= 9);
            let err = || invalid(name, "blurhash takes x and y components, 1-9 each (0:0 = off)");
            let [x, y] = args else { return Err(err()) };
            c.blurhash = match (components(x).ok_or_else(err)?, components(y).ok_or_else(err)?) {
                (0, 0) => None,
                (0, _) | (_, 0) => return Err(err()),
                (x, y) => Some((x, y)),
            };
        }
        "thumbhash" | "thumb_hash" | "th" => set_bool(name, "thumbhash", &mut c.thumbhash, one_arg(name, args)?)?,
        _ => return Ok(false),
    }
    Ok(true)
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
    /// `wmu`'s decoded source text, resolved against the tenant's origins at the end.
    watermark_source: Option<String>,
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
    if st.options.placeholder.is_some() && (st.options.crop.is_some() || st.options.trim.is_some()) {
        // both are measured in source pixels, which a placeholder does not have
        return Err(invalid("placeholder", "cannot be combined with crop or trim"));
    }
    if let Some(text) = st.watermark_source.take() {
        st.options.watermark.source = Some(resolve_source(&text, mode)?);
    }
    normalize(&mut st.options);
    if let Mode::Tenant(ParseContext { watermark_force: Some(forced), .. }) = mode {
        force_watermark(&mut st.options, forced)?;
    }
    let source = resolve_source(&decoded, mode)?;
    Ok(ParsedPath { request: ImageRequest { options: st.options, source }, expires: st.expires })
}

/// A forced watermark replaces whatever the URL said about watermarks, after presets and
/// every URL option, so no spelling removes it; passthrough (`raw`, `skp`) would serve
/// the source without it, so it is refused.
fn force_watermark(o: &mut Options, forced: &ForcedWatermark) -> Result<(), OptionError> {
    if o.raw || !o.skip_processing.is_empty() {
        return Err(OptionError::Forbidden("raw and skp are not allowed: this tenant watermarks every image".into()));
    }
    o.watermark = forced.watermark();
    Ok(())
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
/// `in_preset` names the preset being expanded. Argument rules follow imgproxy's
/// `options/parser`: an empty positional argument leaves that value unchanged unless noted.
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
            // rs:type:width:height:enlarge:extend:gravity:x:y
            max_args(name, &args, 8)?;
            set_resizing_type(name, &mut o.resizing_type, arg(&args, 0))?;
            apply_size(name, o, args.get(1..).unwrap_or(&[]))?;
        }
        "size" | "s" => {
            max_args(name, &args, 7)?;
            apply_size(name, o, &args)?;
        }
        "resizing_type" | "rt" => {
            set_resizing_type(name, &mut o.resizing_type, one_arg(name, &args)?)?;
        }
        "width" | "w" => set_dimension(name, "width", &mut o.width, one_arg(name, &args)?)?,
        "height" | "h" => set_dimension(name, "height", &mut o.height, one_arg(name, &args)?)?,
        "min-width" | "mw" => set_dimension(name, "min-width", &mut o.min_width, one_arg(name, &args)?)?,
        "min-height" | "mh" => set_dimension(name, "min-height", &mut o.min_height, one_arg(name, &args)?)?,
        "zoom" | "z" => {
            if args.len() > 2 {
                return Err(invalid(name, "expected zoom or zoom_x:zoom_y"));
            }
            let zoom = |a: &str| {
                parse_float(a)
                    .filter(|z| *z > 0.0 && *z <= MAX_ZOOM)
                    .ok_or_else(|| invalid(name, "zoom must be a number in (0, 100]"))
            };
            o.zoom_x = zoom(arg(&args, 0))?;
            // one argument zooms both axes, as in imgproxy
            o.zoom_y = if args.len() == 2 { zoom(arg(&args, 1))? } else { o.zoom_x };
        }
        "dpr" => {
            let d = parse_float(one_arg(name, &args)?)
                .filter(|d| *d > 0.0 && *d <= MAX_DPR)
                .ok_or_else(|| invalid(name, "dpr must be a number in (0, 8]"))?;
            o.dpr = d;
        }
        "enlarge" | "el" => set_bool(name, "enlarge", &mut o.enlarge, one_arg(name, &args)?)?,
        "extend" | "ex" => apply_extend(name, &mut o.extend, &args)?,
        "extend_aspect_ratio" | "extend_ar" | "exar" => apply_extend(name, &mut o.extend_aspect_ratio, &args)?,
        "gravity" | "g" => o.gravity = parse_gravity(name, &args, true)?,
        "crop" | "c" => {
            // c:width:height:gravity:x:y
            max_args(name, &args, 5)?;
            let mut crop = o.crop.unwrap_or(Crop { width: 0.0, height: 0.0, gravity: None });
            crop.width = crop_size(name, arg(&args, 0))?;
            if args.len() > 1 {
                crop.height = crop_size(name, arg(&args, 1))?;
            }
            if args.len() > 2 {
                crop.gravity = Some(parse_gravity(name, &args[2..], true)?);
            }
            o.crop = Some(crop);
        }
        "trim" | "t" => {
            // t:threshold:color:equal_hor:equal_ver
            max_args(name, &args, 4)?;
            let prev = o.trim;
            let mut trim = Trim {
                threshold: 0.0,
                color: None,
                equal_hor: prev.is_some_and(|t| t.equal_hor),
                equal_ver: prev.is_some_and(|t| t.equal_ver),
            };
            let threshold = arg(&args, 0);
            let c = arg(&args, 1);
            if !c.is_empty() {
                trim.color = Some(parse_hex_color(c).ok_or_else(|| invalid(name, "color must be hex rgb or rrggbb"))?);
            }
            set_bool(name, "equal_hor", &mut trim.equal_hor, arg(&args, 2))?;
            set_bool(name, "equal_ver", &mut trim.equal_ver, arg(&args, 3))?;
            // imgproxy: trimming is on exactly when a threshold is given
            o.trim = if threshold.is_empty() {
                None
            } else {
                trim.threshold = parse_float(threshold)
                    .filter(|t| (0.0..=MAX_TRIM_THRESHOLD).contains(t))
                    .ok_or_else(|| invalid(name, "threshold must be a number in 0..=255"))?;
                Some(trim)
            };
        }
        "padding" | "pd" => {
            max_args(name, &args, 4)?;
            // imgproxy's CSS-like fill-in: right = top, bottom = top, left = right
            let p = &mut o.padding;
            set_dimension(name, "padding", &mut p.top, arg(&args, 0))?;
            p.right = p.top;
            set_dimension(name, "padding", &mut p.right, arg(&args, 1))?;
            p.bottom = p.top;
            set_dimension(name, "padding", &mut p.bottom, arg(&args, 2))?;
            p.left = p.right;
            set_dimension(name, "padding", &mut p.left, arg(&args, 3))?;
        }
        "auto_rotate" | "ar" => set_bool(name, "auto_rotate", &mut o.auto_rotate, one_arg(name, &args)?)?,
        "rotate" | "rot" => {
            let deg = parse_int(one_arg(name, &args)?)
                .filter(|d| d % 90 == 0)
                .ok_or_else(|| invalid(name, "angle must be a multiple of 90"))?;
            // `rem_euclid(360)` of a multiple of 90 is 0, 90, 180 or 270
            o.rotate = u16::try_from(deg.rem_euclid(360)).unwrap_or(0);
        }
        "flip" | "fl" => {
            max_args(name, &args, 2)?;
            set_bool(name, "flip", &mut o.flip_horizontal, arg(&args, 0))?;
            set_bool(name, "flip", &mut o.flip_vertical, arg(&args, 1))?;
        }
        "background" | "bg" => {
            o.background = match args.as_slice() {
                // imgproxy: an empty `bg:` resets the background
                [""] => None,
                [hex] => Some(parse_hex_color(hex).ok_or_else(|| invalid(name, "color must be hex rgb or rrggbb"))?),
                [r, g, b] => {
                    let c = |a: &str| {
                        parse_uint(a)
                            .and_then(|v| u8::try_from(v).ok())
                            .ok_or_else(|| invalid(name, "R, G and B must be integers in 0..=255"))
                    };
                    Some(Rgb(c(r)?, c(g)?, c(b)?))
                }
                _ => return Err(invalid(name, "expected a hex color or R:G:B")),
            };
        }
        "blur" | "bl" => o.blur = parse_sigma(name, one_arg(name, &args)?)?,
        "sharpen" | "sh" => o.sharpen = parse_sigma(name, one_arg(name, &args)?)?,
        "pixelate" | "pix" => {
            o.pixelate = parse_uint(one_arg(name, &args)?)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v <= MAX_PIXELATE)
                .ok_or_else(|| invalid(name, "size must be an integer in 0..=1024"))?;
        }
        "placeholder" | "plh" => o.placeholder = parse_placeholder(name, &args)?,
        "strip_metadata" | "sm" => set_bool(name, "strip_metadata", &mut o.strip_metadata, one_arg(name, &args)?)?,
        "keep_copyright" | "kcr" => set_bool(name, "keep_copyright", &mut o.keep_copyright, one_arg(name, &args)?)?,
        "strip_color_profile" | "scp" => {
            set_bool(name, "strip_color_profile", &mut o.strip_color_profile, one_arg(name, &args)?)?
        }
        "quality" | "q" => o.quality = parse_quality(name, one_arg(name, &args)?)?,
        "format_quality" | "fq" => {
            if !args.len().is_multiple_of(2) || args.iter().any(|a| a.is_empty()) {
                return Err(invalid(name, "expected format:quality pairs"));
            }
            for pair in args.chunks_exact(2) {
                let format = parse_format(pair[0])?;
                let q = parse_quality(name, pair[1])?;
                // last one wins; quality 0 means "the default" and removes the entry
                o.format_quality.retain(|(f, _)| *f != format);
                if let Some(q) = q {
                    o.format_quality.push((format, q));
                }
            }
            o.format_quality.sort_unstable();
        }
        "format" | "f" | "ext" => o.format = Some(parse_format(one_arg(name, &args)?)?),
        "max_bytes" | "mb" => {
            o.max_bytes = parse_uint(one_arg(name, &args)?)
                .filter(|v| *v <= MAX_BYTES)
                .ok_or_else(|| invalid(name, "max_bytes must be an integer in 0..=104857600"))?;
        }
        "jpeg_options" | "jpgo" => {
            max_args(name, &args, 2)?;
            set_bool(name, "progressive", &mut o.jpeg.progressive, arg(&args, 0))?;
            set_bool(name, "no_subsample", &mut o.jpeg.no_subsample, arg(&args, 1))?;
        }
        "skip_processing" | "skp" => {
            for a in &args {
                if a.is_empty() {
                    return Err(invalid(name, "empty format"));
                }
                // formats imgproxy names but imgedge never reads: such a source is a 415
                // whatever `skp` says, so skipping them changes nothing
                if ["svg", "heic", "jxl"].iter().any(|f| a.eq_ignore_ascii_case(f)) {
                    continue;
                }
                let f = Format::from_ext(a).ok_or_else(|| OptionError::UnsupportedFormat(clip(a)))?;
                o.skip_processing.push(f);
            }
            o.skip_processing.sort_unstable();
            o.skip_processing.dedup();
        }
        "raw" => set_bool(name, "raw", &mut o.raw, one_arg(name, &args)?)?,
        "expires" | "exp" => {
            let t =
                parse_uint(one_arg(name, &args)?).ok_or_else(|| invalid(name, "expires must be a unix timestamp"))?;
            // imgproxy treats 0 as "no expiry"
            st.expires = (t > 0).then_some(t);
        }
        "cachebuster" | "cb" => o.cachebuster = parse_cachebuster(name, &args)?,
        "filename" | "fn" => {
            // fn:name[:encoded]; the name is taken as written (imgproxy does not
            // percent-decode it), or base64url when `encoded` is true
            max_args(name, &args, 2)?;
            let encoded = match arg(&args, 1) {
                "" => false,
                e => parse_bool(e).ok_or_else(|| invalid(name, "encoded must be 1/t/true or 0/f/false"))?,
            };
            let text = arg(&args, 0);
            let filename = if encoded {
                let bytes =
                    SOURCE_B64.decode(text.trim_end_matches('=')).map_err(|_| invalid(name, "bad base64 filename"))?;
                String::from_utf8(bytes).map_err(|_| invalid(name, "filename is not valid UTF-8"))?
            } else {
                text.to_owned()
            };
            if filename.len() > MAX_FILENAME_LEN || filename.chars().any(char::is_control) {
                return Err(invalid(name, "filename must be at most 255 bytes without control characters"));
            }
            // imgproxy: an empty name falls back to the source's
            o.filename = (!filename.is_empty()).then_some(filename);
        }
        "return_attachment" | "att" => {
            set_bool(name, "return_attachment", &mut o.return_attachment, one_arg(name, &args)?)?
        }
        // Accepted without effect. imgproxy uses an embedded thumbnail (HEIC/AVIF) instead
        // of the main image when asked; imgedge always decodes the main image, so the
        // result has the requested size either way.
        "enforce_thumbnail" | "eth" => {
            let mut ignored = false;
            set_bool(name, "enforce_thumbnail", &mut ignored, one_arg(name, &args)?)?;
        }
        // Accepted without effect: imgproxy keeps high bit depth "if possible"; imgedge's
        // results are always 8 bits per channel.
        "preserve_hdr" | "ph" => {
            let mut ignored = false;
            set_bool(name, "preserve_hdr", &mut ignored, one_arg(name, &args)?)?;
        }
        "watermark" | "wm" => watermark::apply_wm(name, &mut o.watermark, &args, parse_float, invalid)?,
        "watermark_url" | "wmu" => {
            let text = one_arg(name, &args)?;
            let bytes =
                SOURCE_B64.decode(text.trim_end_matches('=')).map_err(|_| invalid(name, "bad base64 source"))?;
            let src = String::from_utf8(bytes).map_err(|_| invalid(name, "source is not valid UTF-8"))?;
            // only a source of the tenant's origins, resolved as the image's own source is
            st.watermark_source = Some(src);
        }
        // imgproxy Pro's other watermark options: text needs fonts, and size, rotation and
        // shadow would each add a pass over the watermark imgedge does not make
        "watermark_text" | "wmt" | "watermark_size" | "wms" | "watermark_rotate" | "wm_rot" | "wmr"
        | "watermark_shadow" | "wmsh" => {
            return Err(invalid(name, "not supported (wm and wmu are)"));
        }
        "max_src_resolution"
        | "msr"
        | "max_src_file_size"
        | "msfs"
        | "max_animation_frames"
        | "maf"
        | "max_animation_frame_resolution"
        | "mafr"
        | "max_result_dimension"
        | "mrd" => {
            return Err(OptionError::SecurityOption(clip(name)));
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

/// Drops values that cannot matter, so each request has one canonical spelling. Runs once,
/// after all options, because imgproxy lets later options build on earlier ones (`ex:0:no`
/// then `ex:1` extends towards north).
fn normalize(o: &mut Options) {
    for ex in [&mut o.extend, &mut o.extend_aspect_ratio] {
        if !ex.enabled || ex.gravity == Some(Gravity::default()) {
            ex.gravity = None;
        }
    }
    // 0 × 0 crops the whole source, whatever the gravity
    if o.crop.is_some_and(|c| c.width == 0.0 && c.height == 0.0) {
        o.crop = None;
    }
    // opacity 0 is no watermark, whatever else was said about it
    if !o.watermark.enabled() {
        o.watermark = Watermark::default();
    }
}

/// `width:height:enlarge:extend:gravity:x:y`, the tail shared by `s` and `rs`.
fn apply_size(name: &str, o: &mut Options, args: &[&str]) -> Result<(), OptionError> {
    set_dimension(name, "width", &mut o.width, arg(args, 0))?;
    set_dimension(name, "height", &mut o.height, arg(args, 1))?;
    set_bool(name, "enlarge", &mut o.enlarge, arg(args, 2))?;
    match args.get(3..) {
        Some(ext) if !arg(ext, 0).is_empty() => apply_extend(name, &mut o.extend, ext),
        // imgproxy ignores extend gravity without the flag; refusing it keeps typos visible
        Some(ext) if ext.iter().any(|a| !a.is_empty()) => Err(invalid(name, "extend gravity without extend")),
        _ => Ok(()),
    }
}

/// `extend:gravity:x:y` (`ex`, `exar`, and the tail of `rs`/`s`). The gravity is kept when
/// not given, as in imgproxy; smart gravity makes no sense for extending.
fn apply_extend(name: &str, dst: &mut Extend, args: &[&str]) -> Result<(), OptionError> {
    max_args(name, args, 4)?;
    let a = arg(args, 0);
    dst.enabled = parse_bool(a).ok_or_else(|| invalid(name, "extend must be 1/t/true or 0/f/false"))?;
    if args.len() > 1 {
        dst.gravity = Some(parse_gravity(name, &args[1..], false)?);
    }
    Ok(())
}

/// `cb`/`cachebuster`, for transforms and `/info` alike: `None` for an empty `cb:`
/// (imgproxy removes the cachebuster then), else 1-256 URL-safe characters, which are
/// copied into every cache key.
fn parse_cachebuster(name: &str, args: &[&str]) -> Result<Option<String>, OptionError> {
    if args == [""] {
        return Ok(None);
    }
    let cb = one_arg(name, args)?;
    let ok = cb.len() <= MAX_CACHEBUSTER_LEN
        && cb.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if !ok {
        return Err(invalid(name, "cachebuster must be 1-256 characters of [A-Za-z0-9._~-]"));
    }
    Ok(Some(cb.to_owned()))
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

fn set_bool(name: &str, what: &str, dst: &mut bool, a: &str) -> Result<(), OptionError> {
    if a.is_empty() {
        return Ok(());
    }
    *dst = parse_bool(a).ok_or_else(|| invalid(name, format!("{what} must be 1/t/true or 0/f/false")))?;
    Ok(())
}

/// Plain decimal digits only: `u64::from_str` would also take `+5`.
fn parse_uint(a: &str) -> Option<u64> {
    if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    a.parse().ok()
}

/// A finite decimal number; `inf`/`nan` (which `f64::from_str` takes) are not. Kept to
/// [`FLOAT_DECIMALS`] places (see [`round_float`]).
fn parse_float(a: &str) -> Option<f64> {
    if !a.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) {
        return None;
    }
    let v: f64 = a.parse().ok()?;
    v.is_finite().then(|| round_float(v))
}

/// Decimal places a parsed number keeps: far below a pixel for any size, and it keeps
/// canonical strings (cache keys, unique-transform counts) short — `1e-300` would
/// otherwise be written out as 300 digits — and spelled one way.
pub const FLOAT_DECIMALS: i32 = 6;

/// Rounds to [`FLOAT_DECIMALS`] places, never across 1 in magnitude (offsets and crop
/// sizes below 1 are fractions, from 1 on pixels) and with one zero (-0 and 0 mean the same).
pub fn round_float(v: f64) -> f64 {
    let scale = 10f64.powi(FLOAT_DECIMALS);
    let mut r = (v * scale).round() / scale;
    if v.abs() < 1.0 && r.abs() >= 1.0 {
        r = (1.0 - 1.0 / scale).copysign(v);
    }
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// `type:x:y`. Compass types take optional offsets (pixels when >= 1, fractions when < 1);
/// `fp` needs both coordinates in 0..=1; `sm` takes none and only where `allow_smart`.
fn parse_gravity(name: &str, args: &[&str], allow_smart: bool) -> Result<Gravity, OptionError> {
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
        "fp" => GravityType::FocusPoint,
        "sm" if allow_smart => GravityType::Smart,
        "sm" => return Err(invalid(name, "smart gravity (sm) is not allowed here")),
        "" => return Err(invalid(name, "missing gravity type")),
        other => return Err(invalid(name, format!("unknown gravity type: {}", clip(other)))),
    };
    match kind {
        GravityType::Smart if args.len() > 1 => Err(invalid(name, "smart gravity (sm) takes no offsets")),
        GravityType::Smart => Ok(Gravity { kind, x_offset: 0.0, y_offset: 0.0 }),
        GravityType::FocusPoint => {
            if args.len() != 3 {
                return Err(invalid(name, "focus point gravity needs fp:x:y"));
            }
            let coord = |a: &str| -> Result<f64, OptionError> {
                if a.is_empty() {
                    return Ok(0.0);
                }
                parse_float(a)
                    .filter(|v| (0.0..=1.0).contains(v))
                    .ok_or_else(|| invalid(name, "focus point coordinates must be numbers in 0..=1"))
            };
            Ok(Gravity { kind, x_offset: coord(args[1])?, y_offset: coord(args[2])? })
        }
        _ => {
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
    }
}

/// Signed decimal integer, as Go's `strconv.Atoi` reads it.
fn parse_int(a: &str) -> Option<i64> {
    let digits = a.strip_prefix(['-', '+']).unwrap_or(a);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    a.parse().ok()
}

/// `q` and the qualities of `fq`: 0..=100, where 0 means "the default" (`None`).
fn parse_quality(name: &str, a: &str) -> Result<Option<u8>, OptionError> {
    let q =
        parse_uint(a).filter(|q| *q <= 100).ok_or_else(|| invalid(name, "quality must be an integer in 0..=100"))?;
    Ok(u8::try_from(q).ok().filter(|q| *q > 0))
}

/// Blur and sharpen sigma: 0 (off) ..= [`MAX_SIGMA`].
fn parse_sigma(name: &str, a: &str) -> Result<f64, OptionError> {
    parse_float(a)
        .filter(|s| (0.0..=MAX_SIGMA).contains(s))
        .ok_or_else(|| invalid(name, "sigma must be a number in 0..=100"))
}

/// A crop side: pixels when >= 1, a fraction of the source when < 1, 0 = the whole side.
fn crop_size(name: &str, a: &str) -> Result<f64, OptionError> {
    parse_float(a)
        .filter(|v| (0.0..=f64::from(MAX_DIMENSION)).contains(v))
        .ok_or_else(|| invalid(name, "crop sizes must be numbers in 0..=65535"))
}

/// `rgb` or `rrggbb` hex, as imgproxy's `RGBFromHex`.
fn parse_hex_color(a: &str) -> Option<Rgb> {
    if !matches!(a.len(), 3 | 6) || !a.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = u32::from_str_radix(a, 16).ok()?;
    // the shifts and masks keep every value in 0..=255
    let byte = |x: u32| u8::try_from(x & 0xff).unwrap_or(0);
    Some(if a.len() == 3 {
        Rgb(byte((v >> 8) * 17), byte(((v >> 4) & 0xf) * 17), byte((v & 0xf) * 17))
    } else {
        Rgb(byte(v >> 16), byte(v >> 8), byte(v))
    })
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
/// The tenant's source named by `src` — a key, `origin:key` or a URL under an origin, as
/// after `plain/` once decoded — resolved as a URL's source is (purge by source).
pub fn parse_source(src: &str, ctx: &ParseContext<'_>) -> Result<Source, OptionError> {
    resolve_source(src, Mode::Tenant(ctx))
}

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
