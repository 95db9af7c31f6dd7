//! Places an image on a larger canvas (extend, extend_aspect_ratio, padding).

use crate::transform::pixels::{byte_len, luma601, Channels, Pixels};
use crate::transform::TransformError;

/// Returns a `width`×`height` canvas filled with `fill` (RGBA; alpha 0 = transparent)
/// with `img` copied at (`x`, `y`), clipped to the canvas. The result gains an alpha
/// channel only when the fill is not opaque and `img` has none; a grey image stays
/// grey (the fill becomes its Rec.601 luma).
pub(crate) fn embed(
    img: &Pixels,
    width: u32,
    height: u32,
    x: u32,
    y: u32,
    fill: [u8; 4],
) -> Result<Pixels, TransformError> {
    let src = img.channels;
    let out = match src {
        Channels::Gray if fill[3] < 255 => Channels::GrayAlpha,
        Channels::Rgb if fill[3] < 255 => Channels::Rgba,
        other => other,
    };
    let len = byte_len(width, height, out)
        .filter(|_| width > 0 && height > 0)
        .ok_or_else(|| TransformError::Encode(format!("cannot make a {width}x{height} canvas")))?;
    let luma = luma601(fill[0], fill[1], fill[2]);
    let fill_px: &[u8] = match out {
        Channels::Gray => &[luma],
        Channels::GrayAlpha => &[luma, fill[3]],
        Channels::Rgb => &fill[..3],
        Channels::Rgba => &fill,
    };
    // Fallible: the size comes from the request, and an abort is not an answer.
    let mut data = Vec::new();
    data.try_reserve_exact(len).map_err(|e| TransformError::Encode(format!("{width}x{height} canvas: {e}")))?;
    let row = fill_px.repeat(width as usize);
    for _ in 0..height {
        data.extend_from_slice(&row);
    }

    let (sn, on) = (src.count(), out.count());
    let (w, h) = (width as usize, height as usize);
    let (x, y) = (x as usize, y as usize);
    // The part of `img` that lands on the canvas.
    let cols = (img.width as usize).min(w.saturating_sub(x));
    let rows = (img.height as usize).min(h.saturating_sub(y));
    if cols > 0 && rows > 0 {
        let src_data = img.data();
        for r in 0..rows {
            let from = &src_data[r * img.stride()..][..cols * sn];
            let to = &mut data[((y + r) * w + x) * on..][..cols * on];
            if sn == on {
                to.copy_from_slice(from);
            } else {
                // Only ever adds an opaque alpha channel.
                for (o, p) in to.chunks_exact_mut(on).zip(from.chunks_exact(sn)) {
                    o[..sn].copy_from_slice(p);
                    o[sn] = 255;
                }
            }
        }
    }
    Pixels::new(width, height, out, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::pixels::testing::{convert, load, solid, ALL};

    fn at(img: &Pixels, x: u32, y: u32) -> Vec<u8> {
        let n = img.channels.count();
        img.data()[y as usize * img.stride() + x as usize * n..][..n].to_vec()
    }

    #[test]
    fn photo_is_copied_at_the_offset_on_the_fill() {
        let photo = load("coffee_600x400.jpg");
        for ch in ALL {
            let src = convert(&photo, ch);
            let out = embed(&src, 650, 430, 17, 9, [10, 200, 30, 255]).unwrap();
            assert_eq!((out.width, out.height, out.channels), (650, 430, ch));
            let fill = match ch {
                Channels::Gray => vec![luma601(10, 200, 30)],
                Channels::GrayAlpha => vec![luma601(10, 200, 30), 255],
                Channels::Rgb => vec![10, 200, 30],
                Channels::Rgba => vec![10, 200, 30, 255],
            };
            for (fx, fy) in [(0, 0), (16, 200), (617, 300), (649, 429), (300, 8), (300, 409)] {
                assert_eq!(at(&out, fx, fy), fill, "{ch:?} fill at ({fx},{fy})");
            }
            for (sx, sy) in [(0, 0), (599, 399), (123, 45), (599, 0)] {
                assert_eq!(at(&out, sx + 17, sy + 9), at(&src, sx, sy), "{ch:?} pixel ({sx},{sy})");
            }
        }
    }

    #[test]
    fn translucent_fill_adds_alpha_only_when_missing() {
        let photo = load("coffee_600x400.jpg");
        for ch in ALL {
            let src = convert(&photo, ch);
            let out = embed(&src, 610, 400, 10, 0, [255, 255, 255, 0]).unwrap();
            let want = match ch {
                Channels::Gray | Channels::GrayAlpha => Channels::GrayAlpha,
                Channels::Rgb | Channels::Rgba => Channels::Rgba,
            };
            assert_eq!(out.channels, want);
            let n = want.count();
            assert_eq!(at(&out, 5, 5)[n - 1], 0, "{ch:?}: the fill is transparent");
            let inside = at(&out, 10, 0);
            assert_eq!(inside[n - 1], 255, "{ch:?}: the image stays opaque");
            assert_eq!(&inside[..n - 1], &at(&src, 0, 0)[..n - 1]);
        }
    }

    #[test]
    fn overflowing_image_is_clipped() {
        let src = convert(&load("coffee_600x400.jpg"), Channels::Rgb);
        let out = embed(&src, 100, 80, 50, 50, [0, 0, 0, 255]).unwrap();
        assert_eq!(at(&out, 50, 50), at(&src, 0, 0));
        assert_eq!(at(&out, 99, 79), at(&src, 49, 29));
        assert_eq!(at(&out, 49, 49), vec![0, 0, 0]);
        // Entirely outside: only the fill.
        let out = embed(&src, 10, 10, 10, u32::MAX, [1, 2, 3, 255]).unwrap();
        assert!(out.data().chunks_exact(3).all(|p| p == [1, 2, 3]));
        // Smaller canvas than the image at the origin: a crop.
        let out = embed(&src, 3, 2, 0, 0, [0, 0, 0, 0]).unwrap();
        assert_eq!(out.channels, Channels::Rgba);
        assert_eq!(at(&out, 2, 1), [&at(&src, 2, 1)[..], &[255]].concat());
    }

    #[test]
    fn bad_canvas_sizes_are_errors() {
        let src = solid(2, 2, Channels::Rgba, &[1, 2, 3, 4]);
        assert!(embed(&src, 0, 10, 0, 0, [0; 4]).is_err());
        assert!(embed(&src, 10, 0, 0, 0, [0; 4]).is_err());
        assert!(embed(&src, u32::MAX, u32::MAX, 0, 0, [0; 4]).is_err());
    }
}
