//! Fuzz targets of imgedge's pure core. Each target is a function over arbitrary bytes that
//! must not panic and checks a property as it goes; [`target!`] makes it a libFuzzer target
//! (feature `libfuzzer`, `scripts/fuzz.sh`) or a plain program that runs the files it is
//! given. `tests/replay.rs` runs every committed input through the same functions.

use std::collections::HashMap;

use imgedge_core::options::{self, Format, Options, OriginRef, ParseContext};
use imgedge_core::signature::{self, KeyPair};
use imgedge_core::transform::{self, Settings};

/// The URL parser on arbitrary paths: never panics; whatever parses has a canonical form
/// that parses back to the same request.
pub fn parse_options(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let presets: HashMap<String, String> =
        [("thumb".to_owned(), "rs:fill:100:100/q:70".to_owned())].into_iter().collect();
    let origins = [
        OriginRef { name: "local".to_owned(), url_prefix: None },
        OriginRef { name: "web".to_owned(), url_prefix: Some("https://static.example.com/".to_owned()) },
    ];
    let ctx =
        ParseContext { presets: &presets, origins: &origins, default_origin: Some("local"), watermark_force: None };
    if let Ok(parsed) = options::parse(path, &ctx) {
        let canonical = parsed.request.canonical();
        match options::parse_canonical(&canonical) {
            Ok(again) => assert_eq!(again, parsed.request, "round trip of {canonical}"),
            Err(e) => panic!("canonical form {canonical:?} does not parse: {e}"),
        }
    }
    let _ = options::parse_canonical(path);
}

/// Signature checking on arbitrary URLs: never panics, and a forged signature never
/// verifies unless it equals the real one.
pub fn verify_signature(data: &[u8]) {
    let Ok(full) = std::str::from_utf8(data) else { return };
    let pair = KeyPair { key: b"secret".to_vec(), salt: b"hello".to_vec() };
    let Some((sig, rest)) = signature::split_signed_path(full) else { return };
    for size in [32, 8, 1] {
        let pairs = std::slice::from_ref(&pair);
        let expected = signature::sign(&pair, rest, size);
        assert!(signature::verify(pairs, size, &expected, rest).is_ok(), "round trip, size {size}: {full:?}");
        // padding is tolerated; any other difference is a forgery
        if signature::verify(pairs, size, sig, rest).is_ok() {
            assert_eq!(sig.trim_end_matches('='), expected, "size {size}: {full:?}");
        }
    }
}

/// The image engine on arbitrary bytes: never panics, and stays within its limits. The
/// first byte picks the output format and size so encoders are fuzzed too.
pub fn transform_run(data: &[u8]) {
    let Some((&pick, input)) = data.split_first() else { return };
    let format = [None, Some(Format::Jpeg), Some(Format::Png), Some(Format::Webp)][usize::from(pick & 3)];
    let opts = Options { width: u32::from(pick >> 2) * 4, format, ..Options::default() };
    // small limits keep each run fast and make the limit paths reachable
    let settings = Settings {
        default_quality: 80,
        max_src_pixels: 4_000_000,
        max_result_dim: 1024,
        max_frames: 3,
        ..Settings::default()
    };
    if let Ok(out) = transform::run(input, &opts, &settings) {
        assert!(out.width <= 1024 && out.height <= 1024);
        assert!(!out.bytes.is_empty());
    }
}

/// Runs `target` on each file named on the command line (a fuzz target built without
/// libFuzzer: reproduces a crash input under a debugger, or replays a directory's worth).
pub fn run_files(target: fn(&[u8])) {
    for path in std::env::args_os().skip(1) {
        match std::fs::read(&path) {
            Ok(bytes) => target(&bytes),
            Err(e) => {
                eprintln!("{}: {e}", path.to_string_lossy());
                std::process::exit(2);
            }
        }
    }
}

/// Makes `$f` the fuzz target of this binary.
#[macro_export]
macro_rules! target {
    ($f:path) => {
        #[cfg(feature = "libfuzzer")]
        libfuzzer_sys::fuzz_target!(|data: &[u8]| $f(data));

        #[cfg(not(feature = "libfuzzer"))]
        fn main() {
            $crate::run_files($f)
        }
    };
}
