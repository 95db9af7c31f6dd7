//! Finds the uniform border to trim, like libvips `find_trim` as imgproxy calls it:
//! a pixel is border when each channel is within `threshold` of the border colour;
//! the result is the bounding box of everything else.
//!
//! Unlike libvips there is no 3×3 median pre-filter: the threshold already absorbs
//! compression noise, and the median would shave a pixel off thin lines and corners.

use crate::options::Rgb;
use crate::transform::geometry::Rect;
use crate::transform::pixels::{luma601, Pixels};

/// The rectangle left after removing the uniform border: pixels within `threshold`
/// (0..=255 colour distance) of `color` (default: the top-left pixel; fully
/// transparent pixels always count as border). `None` when there is nothing to trim
/// or everything would be trimmed.
pub(crate) fn bounds(
    img: &Pixels,
    threshold: f64,
    color: Option<Rgb>,
    equal_hor: bool,
    equal_ver: bool,
) -> Option<Rect> {
    let n = img.channels.count();
    let alpha = img.channels.has_alpha();
    let colours = if alpha { n - 1 } else { n };
    let data = img.data();
    // The reference pixel in the image's own layout. A given colour is opaque; the
    // top-left pixel brings its own alpha, which then has to match too.
    let mut reference = [0u8; 4];
    match color {
        Some(Rgb(r, g, b)) => {
            if colours == 1 {
                reference[0] = luma601(r, g, b);
            } else {
                reference[..3].copy_from_slice(&[r, g, b]);
            }
            reference[n - 1] = if alpha { 255 } else { reference[n - 1] };
        }
        None => reference[..n].copy_from_slice(data.get(..n)?),
    }
    // Distances are integers: "≤ threshold" is "< the first integer above it".
    let limit = if threshold.is_nan() {
        return None;
    } else if threshold < 0.0 {
        0
    } else {
        (threshold.floor().min(255.0) as u16) + 1
    };
    let is_content = |p: &[u8]| -> bool {
        if alpha && p[n - 1] == 0 {
            return false;
        }
        p.iter().zip(&reference[..n]).any(|(&a, &b)| u16::from(a.abs_diff(b)) >= limit)
    };

    let (w, h) = (img.width as usize, img.height as usize);
    let stride = img.stride();
    // Bounding box of content pixels: [left, right) × [top, bottom).
    let (mut left, mut right, mut top, mut bottom) = (w, 0usize, h, 0usize);
    for y in 0..h {
        let row = &data[y * stride..][..stride];
        let Some(first) = row.chunks_exact(n).position(is_content) else { continue };
        top = top.min(y);
        bottom = y + 1;
        left = left.min(first);
        // Only the part right of what is already known can widen the box.
        let from = right.max(first + 1);
        if let Some(last) = row[from * n..].chunks_exact(n).rposition(is_content) {
            right = from + last + 1;
        }
        right = right.max(first + 1);
    }
    if right == 0 {
        return None;
    }
    if equal_hor {
        let margin = left.min(w - right);
        (left, right) = (margin, w - margin);
    }
    if equal_ver {
        let margin = top.min(h - bottom);
        (top, bottom) = (margin, h - margin);
    }
    if (left, top, right, bottom) == (0, 0, w, h) {
        return None;
    }
    Some(Rect { x: left as u32, y: top as u32, w: (right - left) as u32, h: (bottom - top) as u32 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::pixels::testing::{convert, load, solid, ALL};
    use crate::transform::pixels::Channels;
    use crate::transform::steps::canvas::embed;

    fn framed(ch: Channels, fill: [u8; 4], (l, t, r, b): (u32, u32, u32, u32)) -> (Pixels, Rect) {
        let photo = convert(&load("coffee_600x400.jpg"), ch);
        let (w, h) = (photo.width, photo.height);
        let img = embed(&photo, w + l + r, h + t + b, l, t, fill).unwrap();
        (img, Rect { x: l, y: t, w, h })
    }

    #[test]
    fn border_around_a_photo_is_found_exactly() {
        for ch in ALL {
            let (img, want) = framed(ch, [255, 0, 255, 255], (13, 7, 30, 2));
            assert_eq!(bounds(&img, 10.0, None, false, false), Some(want), "{ch:?}");
            assert_eq!(bounds(&img, 0.0, None, false, false), Some(want), "{ch:?}");
            // The same colour given explicitly.
            assert_eq!(bounds(&img, 10.0, Some(Rgb(255, 0, 255)), false, false), Some(want), "{ch:?}");
        }
    }

    #[test]
    fn equal_margins_keep_the_smaller_one() {
        let (img, _) = framed(Channels::Rgb, [250, 250, 250, 255], (13, 7, 30, 2));
        let r = bounds(&img, 10.0, None, true, false).unwrap();
        assert_eq!(r, Rect { x: 13, y: 7, w: 600 + 30 + 13 - 26, h: 400 });
        let r = bounds(&img, 10.0, None, false, true).unwrap();
        assert_eq!(r, Rect { x: 13, y: 2, w: 600, h: 400 + 7 + 2 - 4 });
        let r = bounds(&img, 10.0, None, true, true).unwrap();
        assert_eq!(r, Rect { x: 13, y: 2, w: 617, h: 405 });
    }

    #[test]
    fn threshold_absorbs_a_noisy_border() {
        let (mut img, want) = framed(Channels::Rgb, [240, 240, 240, 255], (20, 20, 20, 20));
        // Perturb the border by up to ±6, as JPEG noise would.
        let stride = img.stride();
        let (w, h) = (img.width as usize, img.height as usize);
        let data = img.data_mut();
        for y in 0..h {
            for x in 0..w {
                let inside = (20..620).contains(&x) && (20..420).contains(&y);
                if !inside {
                    let d = ((x * 7 + y * 13) % 13) as u8;
                    data[y * stride + x * 3 + (x + y) % 3] = 234 + d;
                }
            }
        }
        let grey = Some(Rgb(240, 240, 240));
        assert_eq!(bounds(&img, 6.0, grey, false, false), Some(want));
        // With no tolerance the noise counts as content.
        assert_eq!(bounds(&img, 0.0, grey, false, false), None);
        // A higher threshold also eats into the photo's near-white pixels, never grows.
        let r = bounds(&img, 60.0, grey, false, false).unwrap();
        assert!(r.x >= 20 && r.y >= 20 && r.x + r.w <= 620 && r.y + r.h <= 420, "{r:?}");
    }

    #[test]
    fn transparent_border_is_trimmed_whatever_its_colour() {
        let leaf = load("leaf_alpha_400x250.png");
        assert_eq!(leaf.channels, Channels::Rgba);
        let (img, want) = {
            let img = embed(&leaf, 450, 300, 10, 40, [0, 0, 0, 0]).unwrap();
            let plain = bounds(&leaf, 0.0, None, false, false);
            (img, plain)
        };
        let inner = bounds(&img, 0.0, None, false, false).unwrap();
        match want {
            Some(r) => assert_eq!(inner, Rect { x: r.x + 10, y: r.y + 40, ..r }),
            None => assert_eq!(inner, Rect { x: 10, y: 40, w: 400, h: 250 }),
        }
        // Transparent pixels are border even when a colour is given.
        assert_eq!(bounds(&img, 0.0, Some(Rgb(255, 255, 255)), false, false), Some(inner));
    }

    #[test]
    fn nothing_to_trim_or_all_border() {
        let photo = load("coffee_600x400.jpg");
        // Its top-left pixel's colour does not frame the whole photo.
        assert_eq!(bounds(&photo, 0.0, Some(Rgb(255, 0, 255)), false, false), None);
        for ch in ALL {
            let flat = solid(30, 20, ch, &[10, 20, 30, 255]);
            assert_eq!(bounds(&flat, 10.0, None, false, false), None);
            assert_eq!(bounds(&flat, f64::NAN, None, true, true), None);
            let one = solid(1, 1, ch, &[10, 20, 30, 255]);
            assert_eq!(bounds(&one, 0.0, None, false, false), None);
        }
        // A single content pixel.
        let mut img = solid(9, 5, Channels::Gray, &[0]);
        img.data_mut()[2 * 9 + 6] = 200;
        assert_eq!(bounds(&img, 0.0, None, false, false), Some(Rect { x: 6, y: 2, w: 1, h: 1 }));
        assert_eq!(bounds(&img, 0.0, None, true, true), Some(Rect { x: 2, y: 2, w: 5, h: 1 }));
    }
}
