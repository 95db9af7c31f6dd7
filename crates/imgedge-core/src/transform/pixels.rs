//! The in-memory image the steps pass along: 8-bit interleaved pixels, tightly packed.

use super::TransformError;

/// Interleaved 8-bit channel layouts. Grey stays grey and RGB stays RGB: an alpha
/// channel is only carried when the source really has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channels {
    Gray = 1,
    GrayAlpha = 2,
    Rgb = 3,
    Rgba = 4,
}

impl Channels {
    pub(crate) fn count(self) -> usize {
        self as usize
    }

    pub(crate) fn has_alpha(self) -> bool {
        matches!(self, Channels::GrayAlpha | Channels::Rgba)
    }

    /// The same layout without its alpha channel.
    pub(crate) fn without_alpha(self) -> Channels {
        match self {
            Channels::Gray | Channels::GrayAlpha => Channels::Gray,
            Channels::Rgb | Channels::Rgba => Channels::Rgb,
        }
    }
}

/// Where the bytes live. libwebp hands out its own allocation; keeping it avoids
/// copying a full-size decode into a `Vec`.
enum Buf {
    Owned(Vec<u8>),
    Webp(webp::WebPImage),
}

pub(crate) struct Pixels {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) channels: Channels,
    buf: Buf,
}

impl std::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pixels")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// Bytes needed for `width × height` pixels, or `None` on overflow.
pub(crate) fn byte_len(width: u32, height: u32, channels: Channels) -> Option<usize> {
    (width as usize).checked_mul(height as usize)?.checked_mul(channels.count())
}

impl Pixels {
    pub(crate) fn new(width: u32, height: u32, channels: Channels, data: Vec<u8>) -> Result<Pixels, TransformError> {
        check_len(width, height, channels, data.len())?;
        Ok(Pixels { width, height, channels, buf: Buf::Owned(data) })
    }

    pub(crate) fn from_webp(img: webp::WebPImage) -> Result<Pixels, TransformError> {
        let channels = if img.is_alpha() { Channels::Rgba } else { Channels::Rgb };
        let (width, height) = (img.width(), img.height());
        check_len(width, height, channels, img.len())?;
        Ok(Pixels { width, height, channels, buf: Buf::Webp(img) })
    }

    fn len(&self) -> usize {
        // Checked at construction and kept in sync by every mutation.
        self.width as usize * self.height as usize * self.channels.count()
    }

    pub(crate) fn data(&self) -> &[u8] {
        let len = self.len();
        match &self.buf {
            Buf::Owned(v) => &v[..len],
            Buf::Webp(w) => &w[..len],
        }
    }

    pub(crate) fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        match &mut self.buf {
            Buf::Owned(v) => &mut v[..len],
            Buf::Webp(w) => &mut w[..len],
        }
    }

    /// Bytes per row.
    pub(crate) fn stride(&self) -> usize {
        self.width as usize * self.channels.count()
    }

    /// Declares the first `w × h` pixels' worth of bytes (already rearranged by the
    /// caller) to be the whole image. Only ever shrinks.
    pub(crate) fn truncate_to(&mut self, w: u32, h: u32) {
        if w == 0 || h == 0 || u64::from(w) * u64::from(h) > u64::from(self.width) * u64::from(self.height) {
            return;
        }
        self.width = w;
        self.height = h;
        let len = self.len();
        if let Buf::Owned(v) = &mut self.buf {
            v.truncate(len);
        }
    }

    /// Rewrites the pixels in place without their alpha channel (pixels only move
    /// towards the start of the buffer, so a forward pass is safe). `blend` maps one
    /// pixel (with alpha) to the colour bytes written.
    pub(crate) fn strip_alpha_with(&mut self, blend: impl Fn(&[u8], &mut [u8])) {
        if !self.channels.has_alpha() {
            return;
        }
        let from = self.channels.count();
        let to = from - 1;
        let pixels = self.width as usize * self.height as usize;
        let data = self.data_mut();
        let mut px = [0u8; 4];
        let mut out = [0u8; 3];
        for i in 0..pixels {
            px[..from].copy_from_slice(&data[i * from..i * from + from]);
            blend(&px[..from], &mut out[..to]);
            data[i * to..i * to + to].copy_from_slice(&out[..to]);
        }
        self.channels = self.channels.without_alpha();
        if let Buf::Owned(v) = &mut self.buf {
            v.truncate(pixels * to);
        }
    }

    /// Drops an alpha channel that is 255 everywhere (GIFs always decode as RGBA, and
    /// many PNGs carry an unused alpha channel): 3-channel resizing is cheaper and
    /// needs no premultiplication. Stops at the first non-opaque pixel.
    pub(crate) fn drop_opaque_alpha(&mut self) {
        if !self.channels.has_alpha() {
            return;
        }
        let n = self.channels.count();
        let opaque = self.data().chunks_exact(n).all(|p| p[n - 1] == 255);
        if opaque {
            self.strip_alpha_with(|px, out| out.copy_from_slice(&px[..out.len()]));
        }
    }
}

fn check_len(width: u32, height: u32, channels: Channels, have: usize) -> Result<(), TransformError> {
    if width == 0 || height == 0 {
        return Err(TransformError::Decode("image has no pixels".into()));
    }
    match byte_len(width, height, channels) {
        Some(need) if need <= have => Ok(()),
        _ => Err(TransformError::Decode(format!("pixel buffer too small for {width}x{height}x{}", channels.count()))),
    }
}

/// Rec.601 luma of an sRGB colour, rounded (what a grey canvas or grey image uses).
pub(crate) fn luma601(r: u8, g: u8, b: u8) -> u8 {
    ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
}

/// Test fixtures shared by the pixel steps' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Channels, Pixels};

    /// Decodes `tests/data/images/<name>` with the engine's own decoder.
    pub(crate) fn load(name: &str) -> Pixels {
        let path = format!("{}/../../tests/data/images/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        let h = crate::transform::decode::read_header(&bytes).unwrap();
        crate::transform::decode::decode(&bytes, &h, 1).unwrap()
    }

    /// The same pixels converted to `to` (grey via Rec.601 luma; added alpha is opaque).
    pub(crate) fn convert(img: &Pixels, to: Channels) -> Pixels {
        let n = img.channels.count();
        let mut out = Vec::with_capacity(img.width as usize * img.height as usize * to.count());
        for p in img.data().chunks_exact(n) {
            let (rgb, a) = match n {
                1 => ([p[0]; 3], 255),
                2 => ([p[0]; 3], p[1]),
                3 => ([p[0], p[1], p[2]], 255),
                _ => ([p[0], p[1], p[2]], p[3]),
            };
            match to {
                Channels::Gray => out.push(super::luma601(rgb[0], rgb[1], rgb[2])),
                Channels::GrayAlpha => out.extend([super::luma601(rgb[0], rgb[1], rgb[2]), a]),
                Channels::Rgb => out.extend(rgb),
                Channels::Rgba => out.extend([rgb[0], rgb[1], rgb[2], a]),
            }
        }
        Pixels::new(img.width, img.height, to, out).unwrap()
    }

    /// A `w`×`h` image of one colour.
    pub(crate) fn solid(w: u32, h: u32, channels: Channels, px: &[u8]) -> Pixels {
        let data = px[..channels.count()].repeat(w as usize * h as usize);
        Pixels::new(w, h, channels, data).unwrap()
    }

    pub(crate) const ALL: [Channels; 4] = [Channels::Gray, Channels::GrayAlpha, Channels::Rgb, Channels::Rgba];
}
