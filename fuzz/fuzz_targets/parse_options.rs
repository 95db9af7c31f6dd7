//! The URL parser on arbitrary paths: never panics; whatever parses has a canonical
//! form that parses back to the same request.
#![no_main]

use std::collections::HashMap;

use imgedge_fuzz::options::{self, OriginRef, ParseContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let presets: HashMap<String, String> =
        [("thumb".to_owned(), "rs:fill:100:100/q:70".to_owned())].into_iter().collect();
    let origins = [
        OriginRef { name: "local".to_owned(), url_prefix: None },
        OriginRef { name: "web".to_owned(), url_prefix: Some("https://static.example.com/".to_owned()) },
    ];
    let ctx = ParseContext { presets: &presets, origins: &origins, default_origin: Some("local") };
    if let Ok(parsed) = options::parse(path, &ctx) {
        let canonical = parsed.request.canonical();
        let again = options::parse_canonical(&canonical).expect("canonical form parses");
        assert_eq!(again, parsed.request, "round trip of {canonical}");
    }
    let _ = options::parse_canonical(path);
});
