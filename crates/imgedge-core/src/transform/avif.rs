//! AVIF reading: avif-parse for the container (primary item, alpha item), rav1d (the
//! Rust port of dav1d) for the AV1 payloads, then YUV → 8-bit RGB(A) here.
//!
//! rav1d's public API is dav1d's C ABI, so this is the one module of the crate that
//! uses `unsafe`; every block is small and says why it holds. Everything after the
//! decoded planes are copied out is safe code.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use rav1d::include::dav1d::data::Dav1dData;
use rav1d::include::dav1d::dav1d::{Dav1dContext, Dav1dSettings};
use rav1d::include::dav1d::headers::{
    DAV1D_MC_BT2020_CL, DAV1D_MC_BT2020_NCL, DAV1D_MC_BT709, DAV1D_MC_FCC, DAV1D_MC_IDENTITY, DAV1D_MC_SMPTE240,
    DAV1D_MC_SMPTE_YCGCO, DAV1D_PIXEL_LAYOUT_I400, DAV1D_PIXEL_LAYOUT_I420, DAV1D_PIXEL_LAYOUT_I422,
};
use rav1d::include::dav1d::picture::Dav1dPicture;
use rav1d::src::lib as dav1d;

use super::pixels::{byte_len, Channels, Pixels};
use super::TransformError;

/// dav1d's `DAV1D_ERR(EAGAIN)` (errno 11 on Linux, where this runs).
const DAV1D_EAGAIN: i32 = -11;

fn err(msg: impl std::fmt::Display) -> TransformError {
    TransformError::Decode(format!("AVIF: {msg}"))
}

/// Container facts needed before decoding: the primary item's coded size.
pub(crate) fn dimensions(input: &[u8]) -> Result<(u32, u32), TransformError> {
    let data = parse(input)?;
    let meta = data.primary_item_metadata().map_err(err)?;
    Ok((meta.max_frame_width.get(), meta.max_frame_height.get()))
}

pub(super) fn parse(input: &[u8]) -> Result<avif_parse::AvifData, TransformError> {
    check_boxes(input)?;
    // avif-parse copies only the (compressed) item payloads, bounded by the input once
    // the top-level sizes are known to fit. Its parser-sync check is a debug assertion
    // that fires on some corrupt files: in builds with debug assertions that is a
    // panic, caught here and reported like the release build's error.
    std::panic::catch_unwind(|| avif_parse::read_avif(&mut std::io::Cursor::new(input)))
        .map_err(|_| err("corrupt container"))?
        .map_err(err)
}

/// Top-level ISO-BMFF boxes must tile the file exactly: a truncated file fails here
/// with a clear error, and no box can claim more bytes than exist (which would make
/// the parser reserve that much).
fn check_boxes(d: &[u8]) -> Result<(), TransformError> {
    let mut i = 0usize;
    while i < d.len() {
        let rest = &d[i..];
        let size = rest.get(0..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
        let size = match size {
            None => return Err(err("truncated box header")),
            // Extends to the end of the file.
            Some(0) => rest.len(),
            Some(1) => {
                let big = rest.get(8..16).ok_or_else(|| err("truncated box header"))?;
                let big = u64::from_be_bytes([big[0], big[1], big[2], big[3], big[4], big[5], big[6], big[7]]);
                usize::try_from(big).map_err(|_| err("box too large"))?
            }
            Some(s) => s,
        };
        if size < 8 || size > rest.len() {
            return Err(err("truncated or oversized box"));
        }
        i += size;
    }
    Ok(())
}

/// One decoded plane, copied out of dav1d's picture (samples widened to u16).
struct Plane {
    w: usize,
    h: usize,
    data: Vec<u16>,
}

impl Plane {
    fn at(&self, x: usize, y: usize) -> f32 {
        f32::from(self.data[y * self.w + x])
    }
}

/// A decoded AV1 still frame.
struct Yuv {
    width: usize,
    height: usize,
    bit_depth: u32,
    /// (x, y) chroma subsampling shifts; `None` chroma = monochrome.
    ss: (usize, usize),
    y: Plane,
    uv: Option<(Plane, Plane)>,
    full_range: bool,
    matrix: u32,
}

/// Decodes the primary image (and its alpha item) to 8-bit pixels. `max_pixels`
/// bounds each AV1 frame whatever its headers claim.
pub(crate) fn decode(input: &[u8], width: u32, height: u32) -> Result<Pixels, TransformError> {
    let data = parse(input)?;
    let max_pixels = u64::from(width) * u64::from(height);
    let color = decode_av1(&data.primary_item, max_pixels)?;
    if (color.width, color.height) != (width as usize, height as usize) {
        return Err(err("frame size differs from the sequence header"));
    }
    let alpha = match &data.alpha_item {
        Some(a) => {
            let a = decode_av1(a, max_pixels)?;
            if (a.width, a.height) != (color.width, color.height) {
                return Err(err("alpha plane size differs from the image"));
            }
            Some(a)
        }
        None => None,
    };
    to_pixels(&color, alpha.as_ref(), data.premultiplied_alpha)
}

/// Owns a dav1d context and closes it on every path.
struct Ctx(Option<Dav1dContext>);

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: `self.0` came from `dav1d_open` and is closed only here, once;
        // dav1d_close takes `None` as a no-op.
        unsafe { dav1d::dav1d_close(Some(NonNull::from(&mut self.0))) };
    }
}

/// Owns a data buffer (unref'd on drop).
struct Data(Dav1dData);

impl Drop for Data {
    fn drop(&mut self) {
        // SAFETY: the buffer is either empty (default) or from `dav1d_data_create`;
        // unref on an empty or already-consumed buffer is a no-op.
        unsafe { dav1d::dav1d_data_unref(Some(NonNull::from(&mut self.0))) };
    }
}

/// Owns a picture reference (unref'd on drop).
struct Pic(Dav1dPicture);

impl Drop for Pic {
    fn drop(&mut self) {
        // SAFETY: the picture is default (no references) or was filled by
        // `dav1d_get_picture`; unref releases exactly what it holds.
        unsafe { dav1d::dav1d_picture_unref(Some(NonNull::from(&mut self.0))) };
    }
}

fn decode_av1(obus: &[u8], max_pixels: u64) -> Result<Yuv, TransformError> {
    if obus.is_empty() {
        return Err(err("empty image item"));
    }
    let mut s = std::mem::MaybeUninit::<Dav1dSettings>::uninit();
    // SAFETY: dav1d_default_settings fully initialises the struct it is pointed at.
    let mut s = unsafe {
        dav1d::dav1d_default_settings(NonNull::new_unchecked(s.as_mut_ptr()));
        s.assume_init()
    };
    // One thread: the render pool is the parallelism. Output only the highest
    // spatial layer; refuse frames larger than the container declared.
    s.n_threads = 1;
    s.max_frame_delay = 1;
    s.all_layers = 0;
    s.frame_size_limit = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    // SAFETY: a logger with no callback (both fields `None`, i.e. all zero bits)
    // silences dav1d's stderr messages about hostile input.
    s.logger = unsafe { std::mem::zeroed() };

    let mut ctx = Ctx(None);
    // SAFETY: both pointers are valid for the call; `ctx.0` receives the context.
    let r = unsafe { dav1d::dav1d_open(Some(NonNull::from(&mut ctx.0)), Some(NonNull::from(&mut s))) };
    if r.0 != 0 || ctx.0.is_none() {
        return Err(err(format_args!("decoder init failed ({})", r.0)));
    }

    let mut data = Data(Dav1dData::default());
    // SAFETY: dav1d_data_create allocates `len` bytes owned by `data` and returns a
    // pointer to them (null on failure); we write exactly `len` bytes.
    unsafe {
        let p = dav1d::dav1d_data_create(Some(NonNull::from(&mut data.0)), obus.len());
        if p.is_null() {
            return Err(err("out of memory"));
        }
        std::ptr::copy_nonoverlapping(obus.as_ptr(), p, obus.len());
    }

    let mut pic = Pic(Dav1dPicture::default());
    // A still image is one temporal unit; a few rounds allow for EAGAIN handshakes.
    let mut got = false;
    for _ in 0..16 {
        if data.0.sz > 0 {
            // SAFETY: context open, `data` valid; dav1d consumes what it takes.
            let r = unsafe { dav1d::dav1d_send_data(ctx.0, Some(NonNull::from(&mut data.0))) };
            if r.0 != 0 && r.0 != DAV1D_EAGAIN {
                return Err(err(format_args!("corrupt AV1 data ({})", r.0)));
            }
        }
        // SAFETY: context open, `pic` is a default picture to be filled.
        let r = unsafe { dav1d::dav1d_get_picture(ctx.0, Some(NonNull::from(&mut pic.0))) };
        if r.0 == 0 {
            got = true;
            break;
        }
        if r.0 != DAV1D_EAGAIN {
            return Err(err(format_args!("corrupt AV1 data ({})", r.0)));
        }
        if data.0.sz == 0 {
            break;
        }
    }
    if !got {
        return Err(err("no picture in the AV1 data (truncated?)"));
    }
    copy_planes(&pic.0)
}

fn copy_planes(pic: &Dav1dPicture) -> Result<Yuv, TransformError> {
    let (Ok(width), Ok(height)) = (usize::try_from(pic.p.w), usize::try_from(pic.p.h)) else {
        return Err(err("bad picture size"));
    };
    let bpc = pic.p.bpc;
    if width == 0 || height == 0 || !matches!(bpc, 8 | 10 | 12) {
        return Err(err("bad picture parameters"));
    }
    let layout = pic.p.layout;
    let ss = match layout {
        DAV1D_PIXEL_LAYOUT_I420 => (1, 1),
        DAV1D_PIXEL_LAYOUT_I422 => (1, 0),
        _ => (0, 0),
    };
    let Some(seq) = pic.seq_hdr else {
        return Err(err("picture without sequence header"));
    };
    // SAFETY: `seq_hdr` points to the sequence header the picture holds a reference
    // to (`seq_hdr_ref`), alive as long as `pic`.
    let (matrix, full_range) = unsafe {
        let seq = seq.as_ref();
        (seq.mtrx, seq.color_range != 0)
    };
    let y = plane(pic, 0, width, height, bpc)?;
    let uv = if layout == DAV1D_PIXEL_LAYOUT_I400 {
        None
    } else {
        let (cw, ch) = ((width + ss.0) >> ss.0, (height + ss.1) >> ss.1);
        Some((plane(pic, 1, cw, ch, bpc)?, plane(pic, 2, cw, ch, bpc)?))
    };
    Ok(Yuv { width, height, bit_depth: bpc as u32, ss, y, uv, full_range, matrix })
}

fn plane(pic: &Dav1dPicture, i: usize, w: usize, h: usize, bpc: i32) -> Result<Plane, TransformError> {
    let Some(ptr) = pic.data[i] else {
        return Err(err("missing plane"));
    };
    let stride = pic.stride[i.min(1)];
    let bytes_per = if bpc > 8 { 2 } else { 1 };
    let row = w * bytes_per;
    let Ok(stride) = usize::try_from(stride) else {
        return Err(err("negative stride"));
    };
    if stride < row {
        return Err(err("stride shorter than a row"));
    }
    let mut data = Vec::new();
    data.try_reserve_exact(w.checked_mul(h).ok_or_else(|| err("plane too large"))?).map_err(err)?;
    for y in 0..h {
        // SAFETY: dav1d allocates each plane with `stride` bytes for each of its rows
        // (chroma rows rounded up for odd sizes), so row `y` holds `row` ≤ `stride`
        // readable bytes; 16-bit samples are 2-byte aligned in dav1d's buffers.
        let r = unsafe { std::slice::from_raw_parts(ptr.as_ptr().cast::<u8>().add(y * stride), row) };
        if bytes_per == 1 {
            data.extend(r.iter().map(|&b| u16::from(b)));
        } else {
            data.extend(r.chunks_exact(2).map(|b| u16::from_ne_bytes([b[0], b[1]])));
        }
    }
    Ok(Plane { w, h, data })
}

/// YUV (any matrix, range, subsampling, depth) → interleaved 8-bit RGB(A) or grey.
fn to_pixels(c: &Yuv, alpha: Option<&Yuv>, premultiplied: bool) -> Result<Pixels, TransformError> {
    let (w, h) = (c.width, c.height);
    let max = ((1u32 << c.bit_depth) - 1) as f32;
    let scale = (1u32 << (c.bit_depth - 8)) as f32;
    // Normalised luma 0..1 and chroma −0.5..0.5.
    let (y_off, y_rng, c_rng) =
        if c.full_range { (0.0, max, max) } else { (16.0 * scale, 219.0 * scale, 224.0 * scale) };
    let c_mid = (1u32 << (c.bit_depth - 1)) as f32;
    let (kr, kb) = match c.matrix {
        DAV1D_MC_BT709 => (0.2126, 0.0722),
        DAV1D_MC_FCC => (0.30, 0.11),
        DAV1D_MC_SMPTE240 => (0.212, 0.087),
        DAV1D_MC_BT2020_NCL | DAV1D_MC_BT2020_CL => (0.2627, 0.0593),
        // BT.601 and "unspecified" (libavif's default too).
        _ => (0.299, 0.114),
    };
    let kg = 1.0 - kr - kb;
    let a_max = alpha.map(|a| ((1u32 << a.bit_depth) - 1) as f32);
    let channels = match (c.uv.is_some(), alpha.is_some()) {
        (true, true) => Channels::Rgba,
        (true, false) => Channels::Rgb,
        (false, true) => Channels::GrayAlpha,
        (false, false) => Channels::Gray,
    };
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(err("image too large"));
    };
    let len = byte_len(w32, h32, channels).ok_or_else(|| err("image too large"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(err)?;
    let to8 = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    for yy in 0..h {
        for xx in 0..w {
            let a = match (alpha, a_max) {
                (Some(a), Some(m)) => {
                    let v = if a.full_range {
                        a.y.at(xx, yy) / m
                    } else {
                        let s = (1u32 << (a.bit_depth - 8)) as f32;
                        (a.y.at(xx, yy) - 16.0 * s) / (219.0 * s)
                    };
                    Some(v.clamp(0.0, 1.0))
                }
                _ => None,
            };
            let luma = (c.y.at(xx, yy) - y_off) / y_rng;
            let mut rgb = match &c.uv {
                None => [luma; 3],
                Some((u, v)) => {
                    let (cx, cy) = ((xx >> c.ss.0).min(u.w - 1), (yy >> c.ss.1).min(u.h - 1));
                    match c.matrix {
                        DAV1D_MC_IDENTITY => {
                            // GBR: Y = G, U = B, V = R, all on the luma scale.
                            [(v.at(cx, cy) - y_off) / y_rng, luma, (u.at(cx, cy) - y_off) / y_rng]
                        }
                        _ => {
                            let cb = (u.at(cx, cy) - c_mid) / c_rng;
                            let cr = (v.at(cx, cy) - c_mid) / c_rng;
                            if c.matrix == DAV1D_MC_SMPTE_YCGCO {
                                let t = luma - cb;
                                [t + cr, luma + cb, t - cr]
                            } else {
                                let r = luma + 2.0 * (1.0 - kr) * cr;
                                let b = luma + 2.0 * (1.0 - kb) * cb;
                                [r, (luma - kr * r - kb * b) / kg, b]
                            }
                        }
                    }
                }
            };
            if premultiplied {
                if let Some(a) = a.filter(|&a| a > 0.0) {
                    rgb = rgb.map(|v| v / a);
                }
            }
            match channels {
                Channels::Gray => out.push(to8(rgb[0])),
                Channels::GrayAlpha => out.extend([to8(rgb[0]), to8(a.unwrap_or(1.0))]),
                Channels::Rgb => out.extend(rgb.map(to8)),
                Channels::Rgba => {
                    out.extend(rgb.map(to8));
                    out.push(to8(a.unwrap_or(1.0)));
                }
            }
        }
    }
    Pixels::new(w32, h32, channels, out)
}
