//! ImageRequest → canonical string.
//!
//! Form: `/` + options sorted by their short name with defaults elided, then
//! `plain/{origin}:{percent-encoded key}`. Each value has one spelling: booleans are
//! `1`/`0`, numbers the shortest decimal that parses back to the same value, colours
//! `rrggbb`, formats their canonical extension, and the format is always an `f:` option,
//! never `@ext`. `parse_canonical` accepts exactly this form and gives the request back.
use std::fmt::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::{Extend, Gravity, GravityType, ImageRequest, ResizingType};

/// Key bytes that would change meaning when parsed back (`%` escapes, `@` extension, `?`
/// and `#` URL delimiters) or break a header value (controls, space). Non-ASCII is always
/// encoded. `/` and `:` stay readable.
const KEY_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'@').add(b'?').add(b'#');

fn bit(b: bool) -> u8 {
    u8::from(b)
}

/// `type[:x:y]`: compass offsets only when non-zero, focus points always, smart never.
/// (`{}` on an f64 is the shortest string that parses back to the same value.)
fn write_gravity(s: &mut String, g: &Gravity) {
    s.push_str(g.kind.name());
    let offsets = match g.kind {
        GravityType::Smart => false,
        GravityType::FocusPoint => true,
        _ => g.x_offset != 0.0 || g.y_offset != 0.0,
    };
    if offsets {
        let _ = write!(s, ":{}:{}", g.x_offset, g.y_offset);
    }
}

fn write_extend(s: &mut String, name: &str, ex: &Extend) {
    if !ex.enabled {
        return;
    }
    let _ = write!(s, "/{name}:1");
    if let Some(g) = &ex.gravity {
        s.push(':');
        write_gravity(s, g);
    }
}

impl ImageRequest {
    pub fn canonical(&self) -> String {
        let o = &self.options;
        let mut s = String::with_capacity(48 + self.source.origin.len() + self.source.key.len());
        // Writing to a String cannot fail, so the fmt::Results below are ignored.
        // Alphabetical by short name: ar, att, bg, bl, c, cb, dpr, el, ex, exar, f, fl, fn,
        // fq, g, h, jpgo, kcr, mb, mh, mw, pd, pix, plh, q, raw, rot, rt, scp, sh, skp, sm, t, w, wm, wmu, z.
        if !o.auto_rotate {
            s.push_str("/ar:0");
        }
        if o.return_attachment {
            s.push_str("/att:1");
        }
        if let Some(bg) = o.background {
            let _ = write!(s, "/bg:{}", bg.hex());
        }
        if o.blur != 0.0 {
            let _ = write!(s, "/bl:{}", o.blur);
        }
        if let Some(c) = &o.crop {
            let _ = write!(s, "/c:{}:{}", c.width, c.height);
            if let Some(g) = &c.gravity {
                s.push(':');
                write_gravity(&mut s, g);
            }
        }
        if let Some(cb) = &o.cachebuster {
            let _ = write!(s, "/cb:{cb}");
        }
        if o.dpr != 1.0 {
            let _ = write!(s, "/dpr:{}", o.dpr);
        }
        if o.enlarge {
            s.push_str("/el:1");
        }
        write_extend(&mut s, "ex", &o.extend);
        write_extend(&mut s, "exar", &o.extend_aspect_ratio);
        if let Some(f) = o.format {
            let _ = write!(s, "/f:{}", f.ext());
        }
        if o.flip_horizontal || o.flip_vertical {
            let _ = write!(s, "/fl:{}:{}", bit(o.flip_horizontal), bit(o.flip_vertical));
        }
        if let Some(name) = &o.filename {
            // always base64url: a name may hold `/`, `:` or bytes a header cannot carry
            let _ = write!(s, "/fn:{}:1", URL_SAFE_NO_PAD.encode(name));
        }
        if !o.format_quality.is_empty() {
            s.push_str("/fq");
            for (f, q) in &o.format_quality {
                let _ = write!(s, ":{}:{q}", f.ext());
            }
        }
        if o.gravity != Gravity::default() {
            s.push_str("/g:");
            write_gravity(&mut s, &o.gravity);
        }
        if o.height != 0 {
            let _ = write!(s, "/h:{}", o.height);
        }
        if o.jpeg != super::JpegOptions::default() {
            let _ = write!(s, "/jpgo:{}:{}", bit(o.jpeg.progressive), bit(o.jpeg.no_subsample));
        }
        if !o.keep_copyright {
            s.push_str("/kcr:0");
        }
        if o.max_bytes != 0 {
            let _ = write!(s, "/mb:{}", o.max_bytes);
        }
        if o.min_height != 0 {
            let _ = write!(s, "/mh:{}", o.min_height);
        }
        if o.min_width != 0 {
            let _ = write!(s, "/mw:{}", o.min_width);
        }
        if !o.padding.is_zero() {
            let p = o.padding;
            let _ = write!(s, "/pd:{}:{}:{}:{}", p.top, p.right, p.bottom, p.left);
        }
        if o.pixelate != 0 {
            let _ = write!(s, "/pix:{}", o.pixelate);
        }
        match o.placeholder {
            Some(super::Placeholder::BlurHash(x, y)) => {
                let _ = write!(s, "/plh:blurhash:{x}:{y}");
            }
            Some(super::Placeholder::ThumbHash) => s.push_str("/plh:thumbhash"),
            Some(super::Placeholder::Color) => s.push_str("/plh:color"),
            None => {}
        }
        if let Some(q) = o.quality {
            let _ = write!(s, "/q:{q}");
        }
        if o.raw {
            s.push_str("/raw:1");
        }
        if o.rotate != 0 {
            let _ = write!(s, "/rot:{}", o.rotate);
        }
        if o.resizing_type != ResizingType::Fit {
            let _ = write!(s, "/rt:{}", o.resizing_type.name());
        }
        if !o.strip_color_profile {
            s.push_str("/scp:0");
        }
        if o.sharpen != 0.0 {
            let _ = write!(s, "/sh:{}", o.sharpen);
        }
        if !o.skip_processing.is_empty() {
            s.push_str("/skp");
            for f in &o.skip_processing {
                let _ = write!(s, ":{}", f.ext());
            }
        }
        if !o.strip_metadata {
            s.push_str("/sm:0");
        }
        if let Some(t) = &o.trim {
            let _ = write!(s, "/t:{}", t.threshold);
            if t.color.is_some() || t.equal_hor || t.equal_ver {
                let _ = write!(s, ":{}", t.color.map(|c| c.hex()).unwrap_or_default());
            }
            if t.equal_hor || t.equal_ver {
                let _ = write!(s, ":{}:{}", bit(t.equal_hor), bit(t.equal_ver));
            }
        }
        if o.width != 0 {
            let _ = write!(s, "/w:{}", o.width);
        }
        super::watermark::write(&mut s, &o.watermark);
        if o.zoom_x != 1.0 || o.zoom_y != 1.0 {
            let _ = write!(s, "/z:{}", o.zoom_x);
            if o.zoom_y != o.zoom_x {
                let _ = write!(s, ":{}", o.zoom_y);
            }
        }
        let _ = write!(s, "/plain/{}:{}", self.source.origin, utf8_percent_encode(&self.source.key, KEY_ENCODE));
        s
    }
}
