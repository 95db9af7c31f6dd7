//! The image engine on arbitrary bytes (see `imgedge_fuzz::transform_run`).
#![cfg_attr(feature = "libfuzzer", no_main)]

imgedge_fuzz::target!(imgedge_fuzz::transform_run);
