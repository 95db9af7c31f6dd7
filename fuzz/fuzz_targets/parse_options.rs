//! The URL parser on arbitrary paths (see `imgedge_fuzz::parse_options`).
#![cfg_attr(feature = "libfuzzer", no_main)]

imgedge_fuzz::target!(imgedge_fuzz::parse_options);
