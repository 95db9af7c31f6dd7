//! Signature checking on arbitrary URLs (see `imgedge_fuzz::verify_signature`).
#![cfg_attr(feature = "libfuzzer", no_main)]

imgedge_fuzz::target!(imgedge_fuzz::verify_signature);
