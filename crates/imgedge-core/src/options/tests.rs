//! Parser and canonical-form tests: data-driven cases from `tests/data/urls/` plus
//! property tests for `parse_canonical(&r.canonical()) == r`.
//!
//! `UPDATE_EXPECT=1 cargo test --lib options` rewrites the expectations in the data files
//! with the actual results (review the diff before keeping it).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fmt::Write as _;

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use proptest::prelude::*;

use super::parse::round_float;
use super::*;

const OK_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/urls/ok.txt");
const ERR_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/urls/err.txt");

fn origins() -> Vec<OriginRef> {
    let o = |name: &str, prefix: Option<&str>| OriginRef { name: name.into(), url_prefix: prefix.map(Into::into) };
    vec![
        o("photos", Some("https://photos.example.com/")),
        o("media", Some("s3://media-bucket/")),
        // a longer prefix inside photos' one: longest match wins
        o("thumbs", Some("https://photos.example.com/thumbs/")),
        // configured without the trailing slash: must still match only on a `/` boundary
        o("legacy", Some("https://legacy.example.com")),
    ]
}

fn presets(with_default: bool) -> HashMap<String, String> {
    let mut p: HashMap<String, String> = [
        ("thumb", "rs:fill:200:200/q:70"),
        ("webp", "f:webp"),
        // presets may use every option
        (
            "everything",
            "rs:fill:10:10:0:1:no/mw:1/mh:2/z:2/ex:1/exar:1:so/g:fp:0.5:0.5/c:0.5:0.5:sm/t:5:fff:1/pd:1:2/rot:90/\
             fl:1/ar:0/bg:fff/bl:1/sh:2/pix:4/q:50/fq:webp:60/f:avif/mb:1000/jpgo:1:1/sm:0/kcr:0/scp:0/skp:gif/raw:1",
        ),
        // broken presets, normally refused by config validation
        ("nested", "pr:thumb"),
        ("broken", "q:80/plain"),
        ("badopt", "bogus:1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if with_default {
        p.insert("default".into(), "rt:fill/q:90/cb:v1".into());
    }
    p
}

/// The contexts the data files can select with a `[tag]`.
struct Contexts {
    origins: Vec<OriginRef>,
    plain: HashMap<String, String>,
    with_default: HashMap<String, String>,
    forced: crate::options::ForcedWatermark,
}

impl Contexts {
    fn new() -> Self {
        let forced = crate::options::ForcedWatermark {
            opacity: 0.5,
            position: crate::options::WatermarkPosition::parse("soea").unwrap(),
            x_offset: 10.0,
            y_offset: 10.0,
            scale: 0.25,
        };
        Contexts { origins: origins(), plain: presets(false), with_default: presets(true), forced }
    }

    fn standard(&self) -> ParseContext<'_> {
        ParseContext {
            presets: &self.plain,
            origins: &self.origins,
            default_origin: Some("photos"),
            watermark_force: None,
        }
    }

    fn get(&self, tag: Option<&str>) -> ParseContext<'_> {
        match tag {
            None => self.standard(),
            Some("default") => ParseContext { presets: &self.with_default, ..self.standard() },
            Some("nodefault") => ParseContext { default_origin: None, ..self.standard() },
            Some("forced") => ParseContext { watermark_force: Some(&self.forced), ..self.get(Some("default")) },
            Some(other) => panic!("unknown tag [{other}]"),
        }
    }
}

struct Case<'a> {
    line: usize,
    tag: Option<&'a str>,
    input: &'a str,
    expected: &'a str,
}

fn read_cases(text: &str) -> Vec<Case<'_>> {
    let mut cases = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (lhs, expected) =
            line.split_once(" => ").unwrap_or_else(|| panic!("line {}: expected `INPUT => EXPECTED`", i + 1));
        let (tag, input) = match lhs.strip_prefix('[') {
            Some(rest) => {
                let (tag, input) = rest.split_once("] ").unwrap();
                (Some(tag), input)
            }
            None => (None, lhs),
        };
        cases.push(Case { line: i + 1, tag, input, expected: expected.trim() });
    }
    cases
}

/// What a case line expects: canonical (+ ` exp=N`) on success, Display text on error.
fn run(ctxs: &Contexts, tag: Option<&str>, input: &str) -> Result<String, String> {
    if tag == Some("canonical") {
        return parse_canonical(input).map(|r| r.canonical()).map_err(|e| e.to_string());
    }
    let parsed = parse(input, &ctxs.get(tag)).map_err(|e| e.to_string())?;
    let mut out = parsed.request.canonical();
    if let Some(exp) = parsed.expires {
        let _ = write!(out, " exp={exp}");
    }
    Ok(out)
}

/// Runs every case of one file, collecting all failures; rewrites the file with the actual
/// results when `UPDATE_EXPECT=1`.
fn check_file(path: &str, want_ok: bool, extra: impl Fn(&Case<'_>, &str) -> Option<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let ctxs = Contexts::new();
    let cases = read_cases(&text);
    let mut failures = Vec::new();
    let mut updates: HashMap<usize, String> = HashMap::new();
    for case in &cases {
        let got = run(&ctxs, case.tag, case.input);
        let actual = match (&got, want_ok) {
            (Ok(s), true) | (Err(s), false) => s.clone(),
            (Ok(s), false) => {
                failures.push(format!("line {}: {} => unexpectedly Ok: {s}", case.line, case.input));
                continue;
            }
            (Err(s), true) => {
                failures.push(format!("line {}: {} => unexpected error: {s}", case.line, case.input));
                continue;
            }
        };
        if actual != case.expected {
            failures.push(format!(
                "line {}: {}\n    expected: {}\n    actual:   {actual}",
                case.line, case.input, case.expected
            ));
            updates.insert(case.line, actual.clone());
        }
        if let Some(problem) = extra(case, &actual) {
            failures.push(format!("line {}: {}: {problem}", case.line, case.input));
        }
    }
    if std::env::var_os("UPDATE_EXPECT").is_some() && !updates.is_empty() {
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.lines().enumerate() {
            match updates.get(&(i + 1)) {
                Some(actual) => {
                    let lhs = line.split_once(" => ").unwrap().0;
                    let _ = writeln!(out, "{lhs} => {actual}");
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        std::fs::write(path, out).unwrap();
        eprintln!("updated {} expectations in {path}", updates.len());
        return;
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases in {path} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn ok_cases() {
    let ctxs = Contexts::new();
    check_file(OK_CASES, true, |case, actual| {
        // every successful parse must survive the edge → render hop and a re-parse
        let canonical = actual.split(" exp=").next().unwrap_or(actual);
        let again = parse_canonical(canonical).map(|r| r.canonical());
        if again.as_deref() != Ok(canonical) {
            return Some(format!("parse_canonical round trip gave {again:?}"));
        }
        if case.tag.is_none() {
            let reparsed = parse(canonical, &ctxs.standard()).map(|p| p.request.canonical());
            if reparsed.as_deref() != Ok(canonical) {
                return Some(format!("re-parse of canonical gave {reparsed:?}"));
            }
        }
        None
    });
}

#[test]
fn err_cases() {
    check_file(ERR_CASES, false, |_, _| None);
}

#[test]
fn case_files_are_big_enough() {
    let ok = std::fs::read_to_string(OK_CASES).unwrap();
    let err = std::fs::read_to_string(ERR_CASES).unwrap();
    assert!(read_cases(&ok).len() >= 40);
    assert!(read_cases(&err).len() >= 30);
}

#[test]
fn long_keys() {
    let ctxs = Contexts::new();
    let at_limit = "k".repeat(parse::MAX_KEY_LEN);
    let r = parse(&format!("/plain/{at_limit}"), &ctxs.standard()).unwrap();
    assert_eq!(r.request.source.key, at_limit);
    let over = format!("/plain/{at_limit}k");
    assert_eq!(parse(&over, &ctxs.standard()).unwrap_err().to_string(), "invalid source: key is too long");
}

#[test]
fn error_messages_are_short() {
    let ctxs = Contexts::new();
    let name = "x".repeat(1000);
    let e = parse(&format!("/{name}:1/plain/a.jpg"), &ctxs.standard()).unwrap_err();
    assert!(e.to_string().len() < 100, "{e}");
}

#[test]
fn spec_example_fields() {
    let ctxs = Contexts::new();
    let p = parse("/rs:fill:400:300/g:no/q:80/exp:1767225600/plain/products/shoe.jpg@webp", &ctxs.standard()).unwrap();
    let expected = ImageRequest {
        options: Options {
            resizing_type: ResizingType::Fill,
            width: 400,
            height: 300,
            gravity: Gravity { kind: GravityType::North, ..Gravity::default() },
            quality: Some(80),
            format: Some(Format::Webp),
            ..Options::default()
        },
        source: Source { origin: "photos".into(), key: "products/shoe.jpg".into() },
    };
    assert_eq!(p.request, expected);
    assert_eq!(p.expires, Some(1_767_225_600));
    assert_eq!(expected.canonical(), "/f:webp/g:no/h:300/q:80/rt:fill/w:400/plain/photos:products/shoe.jpg");
}

#[test]
fn full_option_set_fields() {
    let ctxs = Contexts::new();
    let p = parse("/pr:everything/plain/a.jpg", &ctxs.standard()).unwrap();
    let o = p.request.options;
    let g = |kind, x_offset, y_offset| Gravity { kind, x_offset, y_offset };
    let expected = Options {
        resizing_type: ResizingType::Fill,
        width: 10,
        height: 10,
        min_width: 1,
        min_height: 2,
        zoom_x: 2.0,
        zoom_y: 2.0,
        extend: Extend { enabled: true, gravity: Some(g(GravityType::North, 0.0, 0.0)) },
        extend_aspect_ratio: Extend { enabled: true, gravity: Some(g(GravityType::South, 0.0, 0.0)) },
        gravity: g(GravityType::FocusPoint, 0.5, 0.5),
        crop: Some(Crop { width: 0.5, height: 0.5, gravity: Some(g(GravityType::Smart, 0.0, 0.0)) }),
        trim: Some(Trim { threshold: 5.0, color: Some(Rgb(255, 255, 255)), equal_hor: true, equal_ver: false }),
        padding: Padding { top: 1, right: 2, bottom: 1, left: 2 },
        rotate: 90,
        flip_horizontal: true,
        auto_rotate: false,
        background: Some(Rgb(255, 255, 255)),
        blur: 1.0,
        sharpen: 2.0,
        pixelate: 4,
        quality: Some(50),
        format_quality: vec![(Format::Webp, 60)],
        format: Some(Format::Avif),
        max_bytes: 1000,
        jpeg: JpegOptions { progressive: true, no_subsample: true },
        strip_metadata: false,
        keep_copyright: false,
        strip_color_profile: false,
        skip_processing: vec![Format::Gif],
        raw: true,
        ..Options::default()
    };
    assert_eq!(o, expected);
    assert_eq!(o.quality_for(Format::Webp, 80), 50);
}

#[test]
fn hex_colors_expand_like_imgproxy() {
    let ctxs = Contexts::new();
    let bg = |hex: &str| parse(&format!("/bg:{hex}/plain/a.jpg"), &ctxs.standard()).unwrap().request.options.background;
    assert_eq!(bg("f0a"), Some(Rgb(0xff, 0x00, 0xaa)));
    assert_eq!(bg("123"), Some(Rgb(0x11, 0x22, 0x33)));
    assert_eq!(bg("0A0b0C"), Some(Rgb(10, 11, 12)));
    assert_eq!(bg("1:2:3"), Some(Rgb(1, 2, 3)));
}

#[test]
fn all_defaults_canonical() {
    let r =
        ImageRequest { options: Options::default(), source: Source { origin: "photos".into(), key: "a.jpg".into() } };
    assert_eq!(r.canonical(), "/plain/photos:a.jpg");
}

#[test]
fn config_validation_probe_parses() {
    // config/validate.rs checks each preset by parsing `/pr:{name}/plain/check.jpg`
    let refs = [OriginRef { name: "check".into(), url_prefix: None }];
    let p = presets(false);
    let ctx = ParseContext { presets: &p, origins: &refs, default_origin: Some("check"), watermark_force: None };
    assert!(parse("/pr:thumb/plain/check.jpg", &ctx).is_ok());
    assert!(parse("/pr:badopt/plain/check.jpg", &ctx).is_err());
    assert!(parse("/pr:nested/plain/check.jpg", &ctx).is_err());
}

#[test]
fn info_requests_have_one_canonical_form_of_their_own() {
    let refs = [OriginRef { name: "check".into(), url_prefix: None }];
    let p = presets(true);
    let ctx = ParseContext { presets: &p, origins: &refs, default_origin: Some("check"), watermark_force: None };
    let a = parse_info("/chs:sha256/alpha:true/size:0/exp:1893456000/plain/a%20b.jpg", &ctx).unwrap();
    let b = parse_info("/s:0/a:1/calc_hashsums:sha256/plain/check:a%20b.jpg", &ctx).unwrap();
    assert_eq!(a.expires, Some(1_893_456_000));
    assert_eq!(a.request, b.request);
    let c = a.request.canonical();
    assert_eq!(c, "/info/a:1/chs:sha256/s:0/plain/check:a%20b.jpg");
    assert_eq!(parse_info_canonical(&c).unwrap(), a.request);
    let cleared = parse_info("/cb:v1/cb:/plain/x.jpg", &ctx).unwrap().request;
    assert_eq!(cleared.options.cachebuster, None, "an empty cb: removes it");
    // transform presets (`default` included) never apply to info
    assert_eq!(parse_info("/plain/x.jpg", &ctx).unwrap().request.canonical(), "/info/plain/check:x.jpg");
    // not canonical, or a transform's canonical form
    assert!(parse_info_canonical("/info/s:1/plain/check:x.jpg").is_err());
    assert!(parse_info_canonical("/plain/check:x.jpg").is_err());
    assert!(parse_canonical("/info/plain/check:x.jpg").is_err());
    for bad in
        ["/w:1/plain/x.jpg", "/chs:md5/plain/x.jpg", "/a:2/plain/x.jpg", "/s/plain/x.jpg", "/cb:a%20/plain/x.jpg"]
    {
        assert!(parse_info(bad, &ctx).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------------------------------
// Property tests

fn resizing_type() -> impl Strategy<Value = ResizingType> {
    prop::sample::select(vec![
        ResizingType::Fit,
        ResizingType::Fill,
        ResizingType::FillDown,
        ResizingType::Force,
        ResizingType::Auto,
    ])
}

/// Offsets for compass gravities: pixels, fractions, extremes.
fn offset() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => Just(0.0),
        1 => (-1.0f64..1.0).prop_map(round_float),
        1 => (-65535.0f64..=65535.0).prop_map(round_float),
        1 => (-500i32..500).prop_map(f64::from),
    ]
}

/// Any valid gravity; `smart` only where it is allowed (not for extend).
fn gravity_with(smart: bool) -> impl Strategy<Value = Gravity> {
    let compass = (
        prop::sample::select(vec![
            GravityType::Center,
            GravityType::North,
            GravityType::South,
            GravityType::East,
            GravityType::West,
            GravityType::NorthEast,
            GravityType::NorthWest,
            GravityType::SouthEast,
            GravityType::SouthWest,
        ]),
        offset(),
        offset(),
    )
        .prop_map(|(kind, x_offset, y_offset)| Gravity { kind, x_offset, y_offset });
    let coord = prop_oneof![Just(0.0), Just(1.0), Just(0.5), (0.0f64..=1.0).prop_map(round_float)];
    let focus = (coord.clone(), coord).prop_map(|(x_offset, y_offset)| Gravity {
        kind: GravityType::FocusPoint,
        x_offset,
        y_offset,
    });
    let sm = Just(Gravity { kind: GravityType::Smart, x_offset: 0.0, y_offset: 0.0 });
    if smart {
        prop_oneof![6 => compass, 1 => focus, 1 => sm].boxed()
    } else {
        prop_oneof![6 => compass, 1 => focus].boxed()
    }
}

fn gravity() -> impl Strategy<Value = Gravity> {
    gravity_with(true)
}

fn dpr() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => Just(1.0),
        1 => (1u32..=800).prop_map(|n| f64::from(n) / 100.0),
        1 => (0.0f64..=8.0).prop_map(round_float).prop_filter("dpr > 0", |d| *d > 0.0),
    ]
}

/// A value that is mostly the default, so several fields are set at once only sometimes.
fn mostly<T: Clone + std::fmt::Debug + 'static>(
    default: T,
    other: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![3 => Just(default), 1 => other].boxed()
}

fn extend() -> impl Strategy<Value = Extend> {
    // normalised as the parser leaves it: no gravity when off, centre without offsets is `None`
    let on = prop::option::of(gravity_with(false))
        .prop_map(|g| Extend { enabled: true, gravity: g.filter(|g| *g != Gravity::default()) });
    mostly(Extend::default(), on)
}

fn crop() -> impl Strategy<Value = Option<Crop>> {
    let side = prop_oneof![
        Just(0.0),
        (0.0f64..1.0).prop_map(round_float),
        (1u32..=65535).prop_map(f64::from),
        (0.0f64..=65535.0).prop_map(round_float)
    ];
    let crop = (side.clone(), side, prop::option::of(gravity()))
        .prop_filter("0 x 0 is no crop", |(w, h, _)| *w != 0.0 || *h != 0.0)
        .prop_map(|(width, height, gravity)| Some(Crop { width, height, gravity }));
    mostly(None, crop)
}

fn rgb() -> impl Strategy<Value = Rgb> {
    any::<(u8, u8, u8)>().prop_map(|(r, g, b)| Rgb(r, g, b))
}

fn trim() -> impl Strategy<Value = Option<Trim>> {
    let threshold = prop_oneof![Just(0.0), Just(10.0), Just(255.0), (0.0f64..=255.0).prop_map(round_float)];
    let trim = (threshold, prop::option::of(rgb()), any::<bool>(), any::<bool>())
        .prop_map(|(threshold, color, equal_hor, equal_ver)| Some(Trim { threshold, color, equal_hor, equal_ver }));
    mostly(None, trim)
}

fn padding() -> impl Strategy<Value = Padding> {
    let side = prop_oneof![Just(0u32), 0u32..=100, 0u32..=65535];
    let any_padding = (side.clone(), side.clone(), side.clone(), side).prop_map(|(top, right, bottom, left)| Padding {
        top,
        right,
        bottom,
        left,
    });
    let css = (0u32..=50, 0u32..=50).prop_map(|(v, h)| Padding { top: v, right: h, bottom: v, left: h });
    mostly(Padding::default(), prop_oneof![any_padding, css])
}

fn sigma() -> impl Strategy<Value = f64> {
    mostly(0.0, prop_oneof![(1u32..=100).prop_map(f64::from), (0.0f64..=100.0).prop_map(round_float)])
}

fn encodable() -> impl Strategy<Value = Format> {
    prop::sample::select(Format::ALL.iter().copied().filter(|f| f.can_encode()).collect::<Vec<_>>())
}

fn format_quality() -> impl Strategy<Value = Vec<(Format, u8)>> {
    let fq = prop::collection::vec((encodable(), 1u8..=100), 1..5).prop_map(|mut v| {
        v.sort_by_key(|(f, _)| *f);
        v.dedup_by_key(|(f, _)| *f);
        v
    });
    mostly(Vec::new(), fq)
}

fn skip_processing() -> impl Strategy<Value = Vec<Format>> {
    let skp = prop::sample::subsequence(Format::ALL.to_vec(), 1..=Format::ALL.len());
    mostly(Vec::new(), skp)
}

fn geometry() -> impl Strategy<Value = Options> {
    let dim = || prop_oneof![Just(0u32), 0u32..=65535];
    let size = (resizing_type(), dim(), dim(), any::<bool>(), mostly(0, 0u32..=65535), mostly(0, 0u32..=65535));
    let zoom = prop_oneof![
        3 => Just((1.0, 1.0)),
        1 => (1u32..=10000).prop_map(|n| (f64::from(n) / 100.0, f64::from(n) / 100.0)),
        1 => ((0.0f64..=100.0), (0.0f64..=100.0))
            .prop_map(|(x, y)| (round_float(x), round_float(y)))
            .prop_filter("zoom > 0", |(x, y)| *x > 0.0 && *y > 0.0),
    ];
    let more = (zoom, dpr(), extend(), extend(), gravity(), crop(), trim(), padding());
    let turn =
        (prop::sample::select(vec![0u16, 0, 90, 180, 270]), any::<bool>(), any::<bool>(), mostly(true, Just(false)));
    (size, more, turn).prop_map(
        |(
            (resizing_type, width, height, enlarge, min_width, min_height),
            ((zoom_x, zoom_y), dpr, extend, extend_aspect_ratio, gravity, crop, trim, padding),
            (rotate, flip_horizontal, flip_vertical, auto_rotate),
        )| Options {
            resizing_type,
            width,
            height,
            min_width,
            min_height,
            zoom_x,
            zoom_y,
            dpr,
            enlarge,
            extend,
            extend_aspect_ratio,
            gravity,
            crop,
            trim,
            padding,
            rotate,
            flip_horizontal,
            flip_vertical,
            auto_rotate,
            ..Options::default()
        },
    )
}

fn options() -> impl Strategy<Value = Options> {
    let effects = (prop::option::of(rgb()), sigma(), sigma(), mostly(0, 0u32..=1024));
    let output = (
        prop::option::of(1u8..=100),
        format_quality(),
        prop::option::of(encodable()),
        mostly(0, 0u64..=100 * 1024 * 1024),
        any::<(bool, bool)>().prop_map(|(progressive, no_subsample)| JpegOptions { progressive, no_subsample }),
    );
    let handling = (
        mostly(true, Just(false)),
        mostly(true, Just(false)),
        mostly(true, Just(false)),
        skip_processing(),
        mostly(false, Just(true)),
        prop::option::of("[A-Za-z0-9._~-]{1,16}"),
        mostly(None, prop::option::of("[^\\p{Cc}]{1,12}")),
        mostly(false, Just(true)),
    );
    (geometry(), effects, output, handling).prop_map(
        |(
            geometry,
            (background, blur, sharpen, pixelate),
            (quality, format_quality, format, max_bytes, jpeg),
            (
                strip_metadata,
                keep_copyright,
                strip_color_profile,
                skip_processing,
                raw,
                cachebuster,
                filename,
                return_attachment,
            ),
        )| Options {
            background,
            blur,
            sharpen,
            pixelate,
            quality,
            format_quality,
            format,
            max_bytes,
            jpeg,
            strip_metadata,
            keep_copyright,
            strip_color_profile,
            skip_processing,
            raw,
            cachebuster,
            filename,
            return_attachment,
            ..geometry
        },
    )
}

fn key_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._-]{1,12}",
        // any non-control character but the separators
        "[^/\\\\\\p{Cc}]{1,8}",
        prop::sample::select(vec![
            " ", "@", "%", "%25", "%2e%2e", "a b", "x@2x", "?q=1", "#frag", "é", "漢字", "🦀", ":", "a:b", "...", ".x",
            "media:x", "https:",
        ])
        .prop_map(String::from),
    ]
    .prop_filter("dot segments are rejected", |s| s != "." && s != "..")
}

fn request() -> impl Strategy<Value = ImageRequest> {
    let source = (
        prop::sample::select(vec!["photos", "media"]),
        prop::collection::vec(key_segment(), 1..5).prop_map(|v| v.join("/")),
    );
    (options(), source).prop_map(|(options, (origin, key))| ImageRequest {
        options,
        source: Source { origin: origin.to_owned(), key },
    })
}

/// Tiny deterministic choice source so one `u64` drives all spelling choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let n = items.len() as u64;
        items[usize::try_from(self.next() % n).unwrap()]
    }
}

/// Percent-encodes at least what `parse` needs (`%`, `@`, controls, ...) and, at random,
/// everything else but `/` or even `/` itself (decoding happens once, so `%2F` is a `/`).
fn encode_plain(s: &str, c: &mut Choices) -> String {
    const MINIMAL: &AsciiSet = &CONTROLS.add(b'%').add(b'@').add(b' ').add(b'?').add(b'#');
    const MOST: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/');
    match c.next() % 3 {
        0 => utf8_percent_encode(s, MINIMAL).to_string(),
        1 => utf8_percent_encode(s, MOST).to_string(),
        _ => utf8_percent_encode(s, NON_ALPHANUMERIC).to_string(),
    }
}

/// A gravity's arguments in one of their accepted spellings.
fn gravity_text(c: &mut Choices, g: &Gravity) -> String {
    match g.kind {
        GravityType::Smart => "sm".into(),
        _ if g.kind != GravityType::FocusPoint && g.x_offset == 0.0 && g.y_offset == 0.0 && c.flip() => {
            g.kind.name().into()
        }
        _ => format!("{}:{}:{}", g.kind.name(), g.x_offset, g.y_offset),
    }
}

fn bool_word(c: &mut Choices, b: bool) -> &'static str {
    if b {
        c.pick(&["1", "t", "true", "TRUE"])
    } else {
        c.pick(&["0", "f", "false", "False"])
    }
}

/// A colour as `rrggbb`, `RRGGBB`, `rgb` when it has that form, or (for `bg`) `R:G:B`.
fn color_text(c: &mut Choices, rgb: Rgb, decimal_ok: bool) -> String {
    let Rgb(r, g, b) = rgb;
    let short = [r, g, b].iter().all(|v| v % 17 == 0);
    match c.next() % 4 {
        0 if decimal_ok => format!("{r}:{g}:{b}"),
        1 if short => format!("{:x}{:x}{:x}", r / 17, g / 17, b / 17),
        2 => rgb.hex().to_ascii_uppercase(),
        _ => rgb.hex(),
    }
}

fn extend_text(c: &mut Choices, ex: &Extend) -> String {
    let mut s = bool_word(c, ex.enabled).to_owned();
    match ex.gravity {
        Some(g) => {
            s.push(':');
            s.push_str(&gravity_text(c, &g));
        }
        // a centre gravity is the default; when off, any gravity is dropped
        None if c.flip() => s.push_str(if ex.enabled { ":ce" } else { ":no:1:2" }),
        None => {}
    }
    s
}

/// Spellings of every option beyond size, gravity, quality, dpr, cachebuster and format.
fn spell_more(o: &Options, c: &mut Choices, opts: &mut Vec<String>, extend_done: bool) {
    for (v, names) in [(o.min_width, ["mw", "min-width"]), (o.min_height, ["mh", "min-height"])] {
        if v != 0 || c.flip() {
            opts.push(format!("{}:{v}", c.pick(&names)));
        }
    }
    if o.zoom_x != 1.0 || o.zoom_y != 1.0 || c.flip() {
        let name = c.pick(&["z", "zoom"]);
        if o.zoom_x == o.zoom_y && c.flip() {
            opts.push(format!("{name}:{}", o.zoom_x));
        } else {
            opts.push(format!("{name}:{}:{}", o.zoom_x, o.zoom_y));
        }
    }
    if !extend_done && (o.extend != Extend::default() || c.flip()) {
        let name = c.pick(&["ex", "extend"]);
        opts.push(format!("{name}:{}", extend_text(c, &o.extend)));
    }
    if o.extend_aspect_ratio != Extend::default() || c.flip() {
        let name = c.pick(&["exar", "extend_ar", "extend_aspect_ratio"]);
        opts.push(format!("{name}:{}", extend_text(c, &o.extend_aspect_ratio)));
    }
    match &o.crop {
        Some(crop) => {
            let name = c.pick(&["c", "crop"]);
            let mut s = format!("{name}:{}:{}", crop.width, crop.height);
            if let Some(g) = &crop.gravity {
                s.push(':');
                s.push_str(&gravity_text(c, g));
            }
            opts.push(s);
        }
        None if c.flip() => opts.push(format!("{}:0:0:{}", c.pick(&["c", "crop"]), c.pick(&["no", "sm", "fp:1:0"]))),
        None => {}
    }
    match &o.trim {
        Some(t) => {
            let name = c.pick(&["t", "trim"]);
            let color = match t.color {
                Some(rgb) => color_text(c, rgb, false),
                None => String::new(),
            };
            let (eh, ev) = (bool_word(c, t.equal_hor), bool_word(c, t.equal_ver));
            if !t.equal_hor && !t.equal_ver && c.flip() {
                opts.push(format!("{name}:{}:{color}", t.threshold));
            } else {
                opts.push(format!("{name}:{}:{color}:{eh}:{ev}", t.threshold));
            }
        }
        // an empty threshold turns trimming off
        None if c.flip() => opts.push("t::abc:1".into()),
        None => {}
    }
    if !o.padding.is_zero() || c.flip() {
        let p = o.padding;
        let name = c.pick(&["pd", "padding"]);
        let args = if p.top == p.right && p.right == p.bottom && p.bottom == p.left && c.flip() {
            format!("{}", p.top)
        } else if p.top == p.bottom && p.right == p.left && c.flip() {
            format!("{}:{}", p.top, p.right)
        } else if p.right == p.left && c.flip() {
            format!("{}:{}:{}", p.top, p.right, p.bottom)
        } else {
            format!("{}:{}:{}:{}", p.top, p.right, p.bottom, p.left)
        };
        opts.push(format!("{name}:{args}"));
    }
    if o.rotate != 0 || c.flip() {
        let name = c.pick(&["rot", "rotate"]);
        let turns = i64::try_from(c.next() % 5).unwrap() - 2;
        opts.push(format!("{name}:{}", i64::from(o.rotate) + 360 * turns));
    }
    if o.flip_horizontal || o.flip_vertical || c.flip() {
        let name = c.pick(&["fl", "flip"]);
        let h = bool_word(c, o.flip_horizontal);
        if !o.flip_vertical && c.flip() {
            opts.push(format!("{name}:{h}"));
        } else {
            opts.push(format!("{name}:{h}:{}", bool_word(c, o.flip_vertical)));
        }
    }
    match o.background {
        Some(rgb) => {
            let name = c.pick(&["bg", "background"]);
            opts.push(format!("{name}:{}", color_text(c, rgb, true)));
        }
        None if c.flip() => opts.push("bg:".into()),
        None => {}
    }
    for (v, names) in [(o.blur, ["bl", "blur"]), (o.sharpen, ["sh", "sharpen"])] {
        if v != 0.0 || c.flip() {
            opts.push(format!("{}:{v}", c.pick(&names)));
        }
    }
    if o.pixelate != 0 || c.flip() {
        opts.push(format!("{}:{}", c.pick(&["pix", "pixelate"]), o.pixelate));
    }
    if !o.format_quality.is_empty() || c.flip() {
        let name = c.pick(&["fq", "format_quality"]);
        let mut pairs: Vec<String> = o.format_quality.iter().map(|(f, q)| format!("{}:{q}", f.ext())).collect();
        for i in (1..pairs.len()).rev() {
            let j = usize::try_from(c.next() % (i as u64 + 1)).unwrap();
            pairs.swap(i, j);
        }
        // an earlier pair for the same format loses; quality 0 removes the entry
        let shadowed = o.format_quality.first().map_or(Format::Gif, |(f, _)| *f);
        pairs.insert(0, format!("{}:{}", shadowed.ext(), c.pick(&["0", "50"])));
        if o.format_quality.is_empty() {
            pairs.truncate(1);
            pairs[0] = "gif:0".into();
        }
        opts.push(format!("{name}:{}", pairs.join(":")));
    }
    if o.max_bytes != 0 || c.flip() {
        opts.push(format!("{}:{}", c.pick(&["mb", "max_bytes"]), o.max_bytes));
    }
    if o.jpeg != JpegOptions::default() || c.flip() {
        let name = c.pick(&["jpgo", "jpeg_options"]);
        let (p, n) = (bool_word(c, o.jpeg.progressive), bool_word(c, o.jpeg.no_subsample));
        opts.push(format!("{name}:{p}:{n}"));
    }
    let flags = [
        (o.strip_metadata, true, ["sm", "strip_metadata"]),
        (o.keep_copyright, true, ["kcr", "keep_copyright"]),
        (o.strip_color_profile, true, ["scp", "strip_color_profile"]),
        (o.auto_rotate, true, ["ar", "auto_rotate"]),
        (o.raw, false, ["raw", "raw"]),
        (o.return_attachment, false, ["att", "return_attachment"]),
    ];
    for (v, default, names) in flags {
        if v != default || c.flip() {
            let name = c.pick(&names);
            opts.push(format!("{name}:{}", bool_word(c, v)));
        }
    }
    // accepted without effect: never part of the request
    if c.flip() {
        let name = c.pick(&["eth", "enforce_thumbnail", "ph", "preserve_hdr"]);
        let v = c.flip();
        opts.push(format!("{name}:{}", bool_word(c, v)));
    }
    if c.flip() {
        opts.push(format!("{}:0", c.pick(&["wm", "watermark"])));
    }
    if let Some(name) = &o.filename {
        let opt = c.pick(&["fn", "filename"]);
        let plain = !name.contains(['/', ':']) && !name.is_empty();
        if plain && c.flip() {
            opts.push(format!("{opt}:{name}"));
        } else {
            opts.push(format!("{opt}:{}:{}", URL_SAFE_NO_PAD.encode(name), c.pick(&["1", "t", "true"])));
        }
    }
    if !o.skip_processing.is_empty() {
        let name = c.pick(&["skp", "skip_processing"]);
        let mut formats: Vec<&str> = o
            .skip_processing
            .iter()
            .map(|f| match f {
                Format::Jpeg => c.pick(&["jpg", "jpeg"]),
                Format::Tiff => c.pick(&["tif", "tiff"]),
                other => other.ext(),
            })
            .collect();
        formats.reverse();
        if c.flip() {
            let dup = formats[0];
            formats.push(dup);
        }
        opts.push(format!("{name}:{}", formats.join(":")));
    }
}

/// Spells `r` as a non-canonical URL: random aliases, option order, redundant defaults,
/// `@ext`/`.ext` instead of `f:`, base64 or plain sources, origin names or URL prefixes.
/// Returns the path and the expiry it carries.
fn spell(r: &ImageRequest, seed: u64) -> (String, Option<u64>) {
    let mut c = Choices(seed | 1);
    let o = &r.options;
    let mut opts: Vec<String> = Vec::new();
    let bool_text = |c: &mut Choices, b: bool| {
        if b {
            c.pick(&["1", "t", "true", "TRUE"])
        } else {
            c.pick(&["0", "f", "false", "False"])
        }
    };
    let dim = |c: &mut Choices, v: u32| {
        if v == 0 && c.flip() {
            String::new()
        } else {
            v.to_string()
        }
    };
    let mut extend_done = false;
    match c.next() % 3 {
        0 => {
            let rt = if o.resizing_type == ResizingType::Fit && c.flip() { "" } else { o.resizing_type.name() };
            let el = if !o.enlarge && c.flip() { "" } else { bool_text(&mut c, o.enlarge) };
            let (w, h) = (dim(&mut c, o.width), dim(&mut c, o.height));
            let name = c.pick(&["rs", "resize"]);
            // the extend tail of `rs`, instead of a separate `ex`
            if c.flip() {
                extend_done = true;
                opts.push(format!("{name}:{rt}:{w}:{h}:{el}:{}", extend_text(&mut c, &o.extend)));
            } else {
                opts.push(format!("{name}:{rt}:{w}:{h}:{el}"));
            }
        }
        1 => {
            if o.resizing_type != ResizingType::Fit || c.flip() {
                let name = c.pick(&["rt", "resizing_type"]);
                opts.push(format!("{name}:{}", o.resizing_type.name()));
            }
            let name = c.pick(&["s", "size"]);
            let (w, h) = (dim(&mut c, o.width), dim(&mut c, o.height));
            let el = bool_text(&mut c, o.enlarge);
            if c.flip() {
                extend_done = true;
                opts.push(format!("{name}:{w}:{h}:{el}:{}", extend_text(&mut c, &o.extend)));
            } else {
                opts.push(format!("{name}:{w}:{h}:{el}"));
            }
        }
        _ => {
            if o.resizing_type != ResizingType::Fit || c.flip() {
                let name = c.pick(&["rt", "resizing_type"]);
                opts.push(format!("{name}:{}", o.resizing_type.name()));
            }
            if o.width != 0 || c.flip() {
                let name = c.pick(&["w", "width"]);
                opts.push(format!("{name}:{}", o.width));
            }
            if o.height != 0 || c.flip() {
                let name = c.pick(&["h", "height"]);
                opts.push(format!("{name}:{}", o.height));
            }
            if o.enlarge || c.flip() {
                let name = c.pick(&["el", "enlarge"]);
                opts.push(format!("{name}:{}", bool_text(&mut c, o.enlarge)));
            }
        }
    }
    if o.gravity != Gravity::default() || c.flip() {
        let name = c.pick(&["g", "gravity"]);
        opts.push(format!("{name}:{}", gravity_text(&mut c, &o.gravity)));
    }
    spell_more(o, &mut c, &mut opts, extend_done);
    match o.quality {
        Some(q) => opts.push(format!("{}:{q}", c.pick(&["q", "quality"]))),
        None if c.flip() => opts.push("q:0".into()),
        None => {}
    }
    if o.dpr != 1.0 || c.flip() {
        opts.push(format!("dpr:{}", o.dpr));
    }
    if let Some(cb) = &o.cachebuster {
        opts.push(format!("{}:{cb}", c.pick(&["cb", "cachebuster"])));
    }
    let expires = c.flip().then(|| c.next() % 4_000_000_000 + 1);
    if let Some(exp) = expires {
        opts.push(format!("{}:{exp}", c.pick(&["exp", "expires"])));
    }
    // the format as an option, or as the extension (which overrides a bogus `f:`)
    let mut ext = None;
    if let Some(f) = o.format {
        let spelled = match f {
            Format::Jpeg => c.pick(&["jpg", "jpeg", "JPG"]),
            other => other.ext(),
        };
        if c.flip() {
            opts.push(format!("{}:{spelled}", c.pick(&["f", "format", "ext"])));
        } else {
            if c.flip() {
                opts.push("f:png".into());
            }
            ext = Some(spelled);
        }
    }
    // option order does not matter: each field is set once
    for i in (1..opts.len()).rev() {
        let j = usize::try_from(c.next() % (i as u64 + 1)).unwrap();
        opts.swap(i, j);
    }

    let key = &r.source.key;
    let source = match c.next() % 3 {
        // a bare key only when it cannot be mistaken for `origin:key`
        0 if r.source.origin == "photos" && !key.contains(':') => key.clone(),
        // (a key under thumbs/ would rightly resolve to the longer `thumbs` prefix)
        1 if r.source.origin == "photos" && !key.starts_with("thumbs/") => format!("https://photos.example.com/{key}"),
        1 if r.source.origin == "media" => format!("s3://media-bucket/{key}"),
        _ => {
            let slash = if c.flip() { "/" } else { "" };
            format!("{}:{slash}{key}", r.source.origin)
        }
    };
    let mut path = String::new();
    for opt in &opts {
        path.push('/');
        path.push_str(opt);
    }
    if c.flip() {
        path.push_str("/plain/");
        path.push_str(&encode_plain(&source, &mut c));
        if let Some(ext) = ext {
            let _ = write!(path, "@{ext}");
        }
    } else {
        let b64 = if c.flip() { URL_SAFE.encode(&source) } else { URL_SAFE_NO_PAD.encode(&source) };
        // split the base64 text into random chunks
        let mut rest = b64.as_str();
        while !rest.is_empty() {
            let n = usize::try_from(c.next() % 24 + 1).unwrap().min(rest.len());
            path.push('/');
            path.push_str(&rest[..n]);
            rest = &rest[n..];
        }
        if let Some(ext) = ext {
            let _ = write!(path, ".{ext}");
        }
    }
    (path, expires)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn canonical_round_trips(r in request()) {
        let canonical = r.canonical();
        prop_assert_eq!(parse_canonical(&canonical), Ok(r.clone()), "{}", canonical);
        // printable ASCII only: it travels in a header to the render service
        prop_assert!(canonical.bytes().all(|b| b.is_ascii_graphic()), "{}", canonical);
    }

    #[test]
    fn canonical_is_a_fixed_point_of_parse(r in request()) {
        let ctxs = Contexts::new();
        let canonical = r.canonical();
        let parsed = parse(&canonical, &ctxs.standard());
        prop_assert_eq!(
            parsed.clone().map(|p| (p.request, p.expires)),
            Ok((r.clone(), None)),
            "{}",
            canonical
        );
        prop_assert_eq!(parsed.unwrap().request.canonical(), canonical);
    }

    #[test]
    fn every_spelling_parses_to_the_same_request(r in request(), seed in any::<u64>()) {
        let ctxs = Contexts::new();
        let (path, expires) = spell(&r, seed);
        let parsed = parse(&path, &ctxs.standard());
        prop_assert_eq!(
            parsed.map(|p| (p.request.canonical(), p.expires)),
            Ok((r.canonical(), expires)),
            "{}",
            path
        );
    }

    #[test]
    fn parse_never_panics(path in "(/[a-z:0-9%@.=_-]{0,12}){0,8}") {
        let ctxs = Contexts::new();
        let _ = parse(&path, &ctxs.standard());
        let _ = parse_canonical(&path);
    }
}

#[test]
fn numbers_keep_six_decimals_and_their_meaning() {
    let ctxs = Contexts::new();
    let ctx = ctxs.standard();
    let canon = |p: &str| parse(p, &ctx).unwrap().request.canonical();
    // an absurdly small offset is no offset, not 300 digits of key
    assert_eq!(canon("/g:no:1e-300:0/plain/a.jpg"), canon("/g:no/plain/a.jpg"));
    assert_eq!(canon("/g:no:0.12345678:0/plain/a.jpg"), canon("/g:no:0.123457:0/plain/a.jpg"));
    // a fraction stays a fraction (below 1) and pixels stay pixels
    let g = parse("/g:no:0.9999999:-0.99999999/plain/a.jpg", &ctx).unwrap().request.options.gravity;
    assert_eq!((g.x_offset, g.y_offset), (0.999999, -0.999999));
    let c = parse("/c:0.99999999:1.0000001/plain/a.jpg", &ctx).unwrap().request.options.crop.unwrap();
    assert_eq!((c.width, c.height), (0.999999, 1.0));
    // every canonical string stays short whatever the spelling of its numbers
    let long = "/bl:0.000000000000000000000000000001/sh:1.00000000000000000000001/dpr:2.0000000001/plain/a.jpg";
    assert!(canon(long).len() < 40, "{}", canon(long));
    // rounded to nothing is zero, which these options refuse
    assert!(parse("/dpr:0.0000001/plain/a.jpg", &ctx).is_err());
}

/// Every option name and alias of imgproxy's open-source parser (`applyURLOption` in
/// `options/parser/processing_options.go`, v3.30 and v4.0), each with arguments imgproxy
/// accepts, and imgedge's answer: `None` = parses, `Some(status)` = refused with the
/// reason the README gives for that option.
const IMGPROXY_OPTIONS: &[(&str, &str, Option<u16>)] = &[
    ("resize", "fill:300:200:1:1:no:5:5", None),
    ("rs", "fit:300:200", None),
    ("size", "300:200:1", None),
    ("s", "300", None),
    ("resizing_type", "fill-down", None),
    ("rt", "force", None),
    ("width", "300", None),
    ("w", "300", None),
    ("height", "200", None),
    ("h", "200", None),
    ("min-width", "100", None),
    ("mw", "100", None),
    ("min-height", "100", None),
    ("mh", "100", None),
    ("zoom", "1.5:2", None),
    ("z", "2", None),
    ("dpr", "2", None),
    ("enlarge", "1", None),
    ("el", "true", None),
    ("extend", "1:so:10:5", None),
    ("ex", "1", None),
    ("extend_aspect_ratio", "1:no", None),
    ("extend_ar", "1", None),
    ("exar", "t", None),
    ("gravity", "fp:0.3:0.7", None),
    ("g", "sm", None),
    ("crop", "100:100:nowe:5:5", None),
    ("c", "0.5:0.5", None),
    ("trim", "10:ffffff:1:1", None),
    ("t", "5", None),
    ("padding", "10:20:30:40", None),
    ("pd", "10", None),
    ("auto_rotate", "0", None),
    ("ar", "1", None),
    ("rotate", "90", None),
    ("rot", "-90", None),
    ("flip", "1:0", None),
    ("fl", "0:1", None),
    ("background", "255:128:0", None),
    ("bg", "ff8800", None),
    ("blur", "2.5", None),
    ("bl", "1", None),
    ("sharpen", "0.7", None),
    ("sh", "1", None),
    ("pixelate", "8", None),
    ("pix", "4", None),
    ("watermark", "0", None),
    ("wm", "0.5:soea:10:10:0.2", None),
    ("watermark_url", "bG9nby5wbmc", None),
    ("wmu", "bWVkaWE6bG9nby5wbmc", None),
    ("watermark_text", "aGk", Some(400)),
    ("wmt", "aGk", Some(400)),
    ("watermark_size", "10:10", Some(400)),
    ("wms", "10:10", Some(400)),
    ("watermark_rotate", "45", Some(400)),
    ("wm_rot", "45", Some(400)),
    ("wmr", "45", Some(400)),
    ("watermark_shadow", "2", Some(400)),
    ("wmsh", "2", Some(400)),
    ("strip_metadata", "0", None),
    ("sm", "1", None),
    ("keep_copyright", "0", None),
    ("kcr", "1", None),
    ("strip_color_profile", "0", None),
    ("scp", "1", None),
    ("preserve_hdr", "1", None),
    ("ph", "0", None),
    ("enforce_thumbnail", "1", None),
    ("eth", "true", None),
    ("quality", "80", None),
    ("q", "0", None),
    ("format_quality", "webp:70:avif:50", None),
    ("fq", "jpeg:85", None),
    ("max_bytes", "100000", None),
    ("mb", "0", None),
    ("format", "webp", None),
    ("f", "avif", None),
    ("ext", "png", None),
    ("skip_processing", "gif:png", None),
    ("skp", "jpg", None),
    ("raw", "1", None),
    ("cachebuster", "v2", None),
    ("cb", "2024-01-01", None),
    ("expires", "4102444800", None),
    ("exp", "0", None),
    ("filename", "cmVwb3J0:1", None),
    ("fn", "report", None),
    ("return_attachment", "1", None),
    ("att", "0", None),
    ("preset", "thumb:webp", None),
    ("pr", "thumb", None),
    ("max_src_resolution", "10", Some(403)),
    ("msr", "10.5", Some(403)),
    ("max_src_file_size", "1048576", Some(403)),
    ("msfs", "1048576", Some(403)),
    ("max_animation_frames", "10", Some(403)),
    ("maf", "10", Some(403)),
    ("max_animation_frame_resolution", "2", Some(403)),
    ("mafr", "2", Some(403)),
    ("max_result_dimension", "4000", Some(403)),
    ("mrd", "4000", Some(403)),
];

#[test]
fn every_imgproxy_option_and_alias_parses_or_is_refused_as_documented() {
    let ctxs = Contexts::new();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for (name, args, refused) in IMGPROXY_OPTIONS {
        let path = format!("/{name}:{args}/plain/a.jpg");
        let got = parse(&path, &ctxs.standard()).map_err(|e| crate::error::Error::Options(e).status());
        match refused {
            None => assert!(got.is_ok(), "{path}: {got:?}"),
            Some(status) => assert_eq!(got.err(), Some(*status), "{path}"),
        }
        // every name is in the README, with the refusal's reason where it is refused
        assert!(readme.contains(&format!("`{name}`")), "README does not list `{name}`");
    }
}

#[test]
fn content_disposition_follows_imgproxy() {
    let ctxs = Contexts::new();
    let cd = |path: &str, f: Format| parse(path, &ctxs.standard()).unwrap().request.content_disposition(f);
    assert_eq!(cd("/w:10/plain/dir/photo.v2.jpg", Format::Webp), None, "only when asked");
    assert_eq!(cd("/att:1/plain/dir/photo.v2.jpg", Format::Webp).unwrap(), "attachment; filename=\"photo.v2.webp\"");
    assert_eq!(cd("/fn:report/plain/dir/photo.jpg", Format::Jpeg).unwrap(), "inline; filename=\"report.jpg\"");
    assert_eq!(cd("/att:1/plain/dir/.jpg", Format::Png).unwrap(), "attachment; filename=\"image.png\"");
    // quotes and backslashes cannot end the quoted string; non-ASCII also goes in filename*
    let name = URL_SAFE_NO_PAD.encode("a\"b\\c é");
    assert_eq!(
        cd(&format!("/fn:{name}:1/plain/x.jpg"), Format::Avif).unwrap(),
        "inline; filename=\"a%22b%5Cc _.avif\"; filename*=UTF-8''a%22b%5Cc%20%C3%A9.avif"
    );
}
