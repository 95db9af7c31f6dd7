//! ImageRequest → canonical string.
//!
//! Form: `/` + options sorted by their short name with defaults elided, then
//! `plain/{origin}:{percent-encoded key}`. The format is always an `f:` option, never
//! `@ext`. `parse_canonical` accepts exactly this form and gives the request back.
use std::fmt::Write;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::{Gravity, ImageRequest, ResizingType};

/// Key bytes that would change meaning when parsed back (`%` escapes, `@` extension, `?`
/// and `#` URL delimiters) or break a header value (controls, space). Non-ASCII is always
/// encoded. `/` and `:` stay readable.
const KEY_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'@').add(b'?').add(b'#');

impl ImageRequest {
    pub fn canonical(&self) -> String {
        let o = &self.options;
        let mut s = String::with_capacity(48 + self.source.origin.len() + self.source.key.len());
        // Writing to a String cannot fail, so the fmt::Results below are ignored.
        // Alphabetical by short name: cb, dpr, el, f, g, h, q, rt, w.
        if let Some(cb) = &o.cachebuster {
            let _ = write!(s, "/cb:{cb}");
        }
        if o.dpr != 1.0 {
            // `{}` is the shortest string that parses back to the same f64
            let _ = write!(s, "/dpr:{}", o.dpr);
        }
        if o.enlarge {
            s.push_str("/el:1");
        }
        if let Some(f) = o.format {
            let _ = write!(s, "/f:{}", f.ext());
        }
        if o.gravity != Gravity::default() {
            let g = o.gravity;
            let _ = write!(s, "/g:{}", g.kind.name());
            if g.x_offset != 0.0 || g.y_offset != 0.0 {
                let _ = write!(s, ":{}:{}", g.x_offset, g.y_offset);
            }
        }
        if o.height != 0 {
            let _ = write!(s, "/h:{}", o.height);
        }
        if let Some(q) = o.quality {
            let _ = write!(s, "/q:{q}");
        }
        if o.resizing_type != ResizingType::Fit {
            let _ = write!(s, "/rt:{}", o.resizing_type.name());
        }
        if o.width != 0 {
            let _ = write!(s, "/w:{}", o.width);
        }
        let _ = write!(s, "/plain/{}:{}", self.source.origin, utf8_percent_encode(&self.source.key, KEY_ENCODE));
        s
    }
}
