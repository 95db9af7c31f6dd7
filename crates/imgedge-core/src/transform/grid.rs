//! `/grid`: each source resized into its cell by the one-image pipeline (same limits,
//! shrink-on-load, colour handling), flattened over the background, pasted in reading
//! order onto one canvas, encoded once.

use std::time::Instant;

use super::color::OutputMeta;
use super::encode::{self, EncodeParams};
use super::pipeline;
use super::pixels::{Channels, Pixels};
use super::{Encoded, Settings, Timings, TransformError};
use crate::options::{Format, GridRequest, Options, ResizingType};

/// Composes `inputs` (one per source of `req`, in order) into the grid. Each source is
/// held to `settings` as a single transform's would be, and their pixels together to
/// `max_total_pixels`, read from the headers before anything is decoded.
pub fn grid(
    inputs: &[&[u8]],
    req: &GridRequest,
    settings: &Settings,
    max_total_pixels: u64,
) -> Result<Encoded, TransformError> {
    let start = Instant::now();
    let mut total = 0u64;
    for input in inputs {
        let p = pipeline::probe(input)?;
        total += u64::from(p.width) * u64::from(p.height);
        if total > max_total_pixels {
            return Err(TransformError::SourceTooLarge {
                width: p.width,
                height: p.height,
                max_pixels: max_total_pixels,
            });
        }
    }
    let o = &req.options;
    let (width, height) = req.dimensions();
    if width.max(height) > settings.max_result_dim {
        return Err(TransformError::ResultTooLarge(width.max(height), settings.max_result_dim));
    }
    let bg = [o.background.0, o.background.1, o.background.2];
    let mut canvas = vec![0u8; width as usize * height as usize * 3];
    for px in canvas.chunks_exact_mut(3) {
        px.copy_from_slice(&bg);
    }
    let cell = Options {
        resizing_type: if o.fill { ResizingType::Fill } else { ResizingType::Fit },
        width: o.cell_width,
        height: o.cell_height,
        enlarge: true,
        // JPEG output makes the pipeline flatten alpha over the background
        format: Some(Format::Jpeg),
        background: Some(o.background),
        ..Options::default()
    };
    let cols = req.used_cols();
    for (i, input) in inputs.iter().enumerate() {
        let (img, _) = pipeline::transform(input, &cell, settings)?;
        let (col, row) = (i as u32 % cols, i as u32 / cols);
        // a fitted image smaller than its cell is centred in it
        let x = col * (o.cell_width + o.gap) + o.cell_width.saturating_sub(img.width) / 2;
        let y = row * (o.cell_height + o.gap) + o.cell_height.saturating_sub(img.height) / 2;
        paste(&mut canvas, width, &img, x, y, bg);
        if settings.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(TransformError::TimedOut);
        }
    }
    let decoded = start.elapsed();
    let canvas = Pixels::new(width, height, Channels::Rgb, canvas)?;
    let format = req.output_format();
    let quality = match (o.quality, format) {
        (0, Format::Avif) => 63,
        (0, _) => settings.default_quality,
        (q, _) => q,
    };
    let encode_start = Instant::now();
    let meta = OutputMeta::default();
    let params = EncodeParams { quality, jpeg: Default::default(), max_bytes: 0, meta: &meta };
    let bytes = encode::encode(&canvas, format, &params)?;
    let timings = Timings { decode: decoded, process: Default::default(), encode: encode_start.elapsed() };
    Ok(Encoded { bytes, format, width, height, timings })
}

/// Copies `img` (any layout; alpha over `bg`) onto the RGB `canvas` at (`x`, `y`),
/// clipped to the canvas.
fn paste(canvas: &mut [u8], canvas_w: u32, img: &Pixels, x: u32, y: u32, bg: [u8; 3]) {
    let n = img.channels.count();
    let canvas_h = canvas.len() / (canvas_w as usize * 3);
    let data = img.data();
    for row in 0..img.height as usize {
        let cy = y as usize + row;
        if cy >= canvas_h {
            break;
        }
        for col in 0..img.width as usize {
            let cx = x as usize + col;
            if cx >= canvas_w as usize {
                break;
            }
            let s = &data[(row * img.width as usize + col) * n..][..n];
            let (rgb, a) = match img.channels {
                Channels::Gray => ([s[0]; 3], 255),
                Channels::GrayAlpha => ([s[0]; 3], s[1]),
                Channels::Rgb => ([s[0], s[1], s[2]], 255),
                Channels::Rgba => ([s[0], s[1], s[2]], s[3]),
            };
            let d = &mut canvas[(cy * canvas_w as usize + cx) * 3..][..3];
            for c in 0..3 {
                d[c] = ((rgb[c] as u32 * a as u32 + bg[c] as u32 * (255 - a as u32) + 127) / 255) as u8;
            }
        }
    }
}
