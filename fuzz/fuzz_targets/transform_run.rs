//! The image engine on arbitrary bytes: never panics, and stays within its limits. The
//! first byte picks the output format and size so encoders are fuzzed too.
#![no_main]

use imgedge_fuzz::options::{Format, Options};
use imgedge_fuzz::transform::{self, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else { return };
    let format = [None, Some(Format::Jpeg), Some(Format::Png), Some(Format::Webp)][usize::from(pick & 3)];
    let opts = Options { width: u32::from(pick >> 2) * 4, format, ..Options::default() };
    // small limits keep each run fast and make the limit paths reachable
    let settings = Settings { default_quality: 80, max_src_pixels: 4_000_000, max_result_dim: 1024 };
    if let Ok(out) = transform::run(input, &opts, &settings) {
        assert!(out.width <= 1024 && out.height <= 1024);
        assert!(!out.bytes.is_empty());
    }
});
