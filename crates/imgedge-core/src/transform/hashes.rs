//! BlurHash and ThumbHash, encoders and decoders.
//!
//! The encoders are ports of the reference implementations, operation for operation, so
//! that the strings are theirs bit for bit (checked by the golden tests against
//! `scripts/placeholder-refs.sh`):
//! * BlurHash: woltapp's C encoder (`C/encode.c`, the code behind the PyPI
//!   `blurhash-python` package). It computes in `float` with some steps in `double`
//!   (C's usual arithmetic conversions); the casts below reproduce each one.
//! * ThumbHash: evanw's JavaScript (`npm thumbhash`), which computes in f64 and rounds
//!   with `Math.round` (halves up, see [`js_round`]).
//!
//! The crates.io ports (`blurhash`, `thumbhash`) compute in f32 throughout, so a
//! coefficient near a quantisation step can come out one step apart from the
//! references: hence the ports here. The decoders only draw placeholders and need not
//! be bit-exact.

use std::f64::consts::PI;

const BASE83: &[u8; 83] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

fn encode83(value: u32, length: u32, out: &mut String) {
    let mut divisor = 83u32.pow(length.saturating_sub(1));
    for _ in 0..length {
        out.push(char::from(BASE83[((value / divisor) % 83) as usize]));
        divisor /= 83;
    }
}

fn decode83(s: &[u8]) -> Option<u32> {
    s.iter().try_fold(0u32, |acc, c| {
        let digit = BASE83.iter().position(|b| b == c)?;
        acc.checked_mul(83)?.checked_add(digit as u32)
    })
}

/// `sRGBToLinear` of encode.c, for every byte value.
fn srgb_to_linear_table() -> [f32; 256] {
    let mut t = [0f32; 256];
    for (i, out) in t.iter_mut().enumerate() {
        let v = i as f32 / 255.0;
        *out = if f64::from(v) <= 0.04045 {
            (f64::from(v) / 12.92) as f32
        } else {
            (((f64::from(v) + 0.055) / 1.055) as f32).powf(2.4)
        };
    }
    t
}

/// `linearTosRGB` of encode.c.
fn linear_to_srgb(value: f32) -> i32 {
    let v = value.clamp(0.0, 1.0);
    if f64::from(v) <= 0.0031308 {
        (f64::from(v) * 12.92 * 255.0 + 0.5) as i32
    } else {
        ((1.055 * f64::from(v.powf((1.0 / 2.4) as f32)) - 0.055) * 255.0 + 0.5) as i32
    }
}

/// The BlurHash of `width`×`height` RGB pixels (3 bytes each, rows packed) with
/// `x`×`y` components (each 1..=9; `None` otherwise or when `rgb` is too short).
pub fn blurhash_encode(x_components: u32, y_components: u32, width: u32, height: u32, rgb: &[u8]) -> Option<String> {
    if !(1..=9).contains(&x_components) || !(1..=9).contains(&y_components) || width == 0 || height == 0 {
        return None;
    }
    let (w, h) = (width as usize, height as usize);
    if rgb.len() < w.checked_mul(h)?.checked_mul(3)? {
        return None;
    }
    let lin = srgb_to_linear_table();
    let mut factors: Vec<[f32; 3]> = Vec::with_capacity((x_components * y_components) as usize);
    for yc in 0..y_components {
        for xc in 0..x_components {
            // cosf(M_PI * xComponent * x / width): the argument is a double, then a float
            let cos_x: Vec<f32> = (0..w).map(|x| ((PI * f64::from(xc) * x as f64 / w as f64) as f32).cos()).collect();
            let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
            for y in 0..h {
                let cos_y = ((PI * f64::from(yc) * y as f64 / h as f64) as f32).cos();
                let row = &rgb[y * w * 3..(y + 1) * w * 3];
                for (x, p) in row.chunks_exact(3).enumerate() {
                    let basis = cos_x[x] * cos_y;
                    r += basis * lin[p[0] as usize];
                    g += basis * lin[p[1] as usize];
                    b += basis * lin[p[2] as usize];
                }
            }
            let normalisation: f32 = if xc == 0 && yc == 0 { 1.0 } else { 2.0 };
            // `width * height` is an int converted to float
            let scale = normalisation / (width.saturating_mul(height)) as f32;
            factors.push([r * scale, g * scale, b * scale]);
        }
    }
    let mut out = String::with_capacity(4 + 2 * factors.len());
    encode83((x_components - 1) + (y_components - 1) * 9, 1, &mut out);
    let ac = &factors[1..];
    let maximum = if ac.is_empty() {
        encode83(0, 1, &mut out);
        1f32
    } else {
        let actual = ac.iter().flatten().fold(0f32, |m, v| v.abs().max(m));
        // 166, not 83: the current encoders (C, Python, TypeScript) and every decoder
        let quantised = (((f64::from(actual * 166.0) - 0.5) as f32).floor()).clamp(0.0, 82.0) as u32;
        encode83(quantised, 1, &mut out);
        (quantised as f32 + 1.0) / 166.0
    };
    let dc = factors[0];
    let dc_value = (linear_to_srgb(dc[0]) << 16) + (linear_to_srgb(dc[1]) << 8) + linear_to_srgb(dc[2]);
    encode83(dc_value as u32, 4, &mut out);
    let quant = |v: f32| {
        let sign_pow = (v / maximum).abs().powf(0.5).copysign(v / maximum);
        ((f64::from(sign_pow * 9.0) + 9.5) as f32).floor().clamp(0.0, 18.0) as u32
    };
    for f in ac {
        encode83(quant(f[0]) * 19 * 19 + quant(f[1]) * 19 + quant(f[2]), 2, &mut out);
    }
    Some(out)
}

/// Draws a BlurHash at `width`×`height` as RGB (punch 1); `None` for a malformed hash.
pub fn blurhash_decode(hash: &str, width: u32, height: u32) -> Option<Vec<u8>> {
    let s = hash.as_bytes();
    let size_flag = decode83(s.get(..1)?)?;
    let (nx, ny) = ((size_flag % 9 + 1) as usize, (size_flag / 9 + 1) as usize);
    if s.len() != 4 + 2 * nx * ny {
        return None;
    }
    let max_value = f64::from(decode83(&s[1..2])? + 1) / 166.0;
    let lin = srgb_to_linear_table();
    let mut colors = Vec::with_capacity(nx * ny);
    let dc = decode83(&s[2..6])?;
    colors.push([dc >> 16, (dc >> 8) & 255, dc & 255].map(|c| f64::from(lin[(c & 255) as usize])));
    for i in 1..nx * ny {
        let v = decode83(&s[4 + 2 * i..6 + 2 * i])?;
        let sign_sq = |q: u32| {
            let t = (f64::from(q) - 9.0) / 9.0;
            t * t.abs() * max_value
        };
        colors.push([sign_sq(v / 361), sign_sq((v / 19) % 19), sign_sq(v % 19)]);
    }
    let (w, h) = (width as usize, height as usize);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let mut c = [0f64; 3];
            for j in 0..ny {
                for i in 0..nx {
                    let basis = (PI * (x * i) as f64 / w as f64).cos() * (PI * (y * j) as f64 / h as f64).cos();
                    for (acc, v) in c.iter_mut().zip(colors[i + j * nx]) {
                        *acc += v * basis;
                    }
                }
            }
            out.extend(c.map(|v| linear_to_srgb(v as f32).clamp(0, 255) as u8));
        }
    }
    Some(out)
}

/// JavaScript's `Math.round`: halves go up (towards +∞), unlike `f64::round`.
fn js_round(x: f64) -> f64 {
    let f = x.floor();
    if x - f >= 0.5 {
        f + 1.0
    } else {
        f
    }
}

/// The ThumbHash of `w`×`h` RGBA pixels (not premultiplied), each side 1..=100;
/// `None` otherwise.
pub fn thumbhash_encode(w: u32, h: u32, rgba: &[u8]) -> Option<Vec<u8>> {
    if !(1..=100).contains(&w) || !(1..=100).contains(&h) || rgba.len() < (w * h * 4) as usize {
        return None;
    }
    let (wf, hf) = (f64::from(w), f64::from(h));
    let n = (w * h) as usize;
    let (mut avg_r, mut avg_g, mut avg_b, mut avg_a) = (0f64, 0f64, 0f64, 0f64);
    for p in rgba[..n * 4].chunks_exact(4) {
        let alpha = f64::from(p[3]) / 255.0;
        avg_r += alpha / 255.0 * f64::from(p[0]);
        avg_g += alpha / 255.0 * f64::from(p[1]);
        avg_b += alpha / 255.0 * f64::from(p[2]);
        avg_a += alpha;
    }
    if avg_a != 0.0 {
        avg_r /= avg_a;
        avg_g /= avg_a;
        avg_b /= avg_a;
    }
    let has_alpha = avg_a < wf * hf;
    let l_limit = if has_alpha { 5.0 } else { 7.0 };
    let lx = js_round(l_limit * wf / wf.max(hf)).max(1.0) as usize;
    let ly = js_round(l_limit * hf / wf.max(hf)).max(1.0) as usize;
    let (mut l, mut p, mut q, mut a) = (vec![0f64; n], vec![0f64; n], vec![0f64; n], vec![0f64; n]);
    for (i, px) in rgba[..n * 4].chunks_exact(4).enumerate() {
        let alpha = f64::from(px[3]) / 255.0;
        let r = avg_r * (1.0 - alpha) + alpha / 255.0 * f64::from(px[0]);
        let g = avg_g * (1.0 - alpha) + alpha / 255.0 * f64::from(px[1]);
        let b = avg_b * (1.0 - alpha) + alpha / 255.0 * f64::from(px[2]);
        l[i] = (r + g + b) / 3.0;
        p[i] = (r + g) / 2.0 - b;
        q[i] = r - g;
        a[i] = alpha;
    }
    let (wu, hu) = (w as usize, h as usize);
    let encode_channel = |channel: &[f64], nx: usize, ny: usize| {
        let (mut dc, mut ac, mut scale) = (0f64, Vec::new(), 0f64);
        let mut fx = vec![0f64; wu];
        for cy in 0..ny {
            let mut cx = 0;
            while cx * ny < nx * (ny - cy) {
                let mut f = 0f64;
                for (x, v) in fx.iter_mut().enumerate() {
                    *v = (PI / wf * cx as f64 * (x as f64 + 0.5)).cos();
                }
                for y in 0..hu {
                    let fy = (PI / hf * cy as f64 * (y as f64 + 0.5)).cos();
                    for x in 0..wu {
                        f += channel[x + y * wu] * fx[x] * fy;
                    }
                }
                f /= wf * hf;
                if cx > 0 || cy > 0 {
                    ac.push(f);
                    scale = scale.max(f.abs());
                } else {
                    dc = f;
                }
                cx += 1;
            }
        }
        if scale != 0.0 {
            for v in &mut ac {
                *v = 0.5 + 0.5 / scale * *v;
            }
        }
        (dc, ac, scale)
    };
    let (l_dc, l_ac, l_scale) = encode_channel(&l, lx.max(3), ly.max(3));
    let (p_dc, p_ac, p_scale) = encode_channel(&p, 3, 3);
    let (q_dc, q_ac, q_scale) = encode_channel(&q, 3, 3);
    let alpha_channel = has_alpha.then(|| encode_channel(&a, 5, 5));

    let is_landscape = w > h;
    let r = |v: f64| js_round(v) as u32;
    let header24 = r(63.0 * l_dc)
        | (r(31.5 + 31.5 * p_dc) << 6)
        | (r(31.5 + 31.5 * q_dc) << 12)
        | (r(31.0 * l_scale) << 18)
        | (u32::from(has_alpha) << 23);
    let header16 = (if is_landscape { ly } else { lx }) as u32
        | (r(63.0 * p_scale) << 3)
        | (r(63.0 * q_scale) << 9)
        | (u32::from(is_landscape) << 15);
    let mut hash = vec![
        (header24 & 255) as u8,
        ((header24 >> 8) & 255) as u8,
        (header24 >> 16) as u8,
        (header16 & 255) as u8,
        (header16 >> 8) as u8,
    ];
    let mut acs = vec![l_ac, p_ac, q_ac];
    if let Some((a_dc, a_ac, a_scale)) = alpha_channel {
        hash.push((r(15.0 * a_dc) | (r(15.0 * a_scale) << 4)) as u8);
        acs.push(a_ac);
    }
    let start = hash.len();
    for (i, f) in acs.iter().flatten().enumerate() {
        if start + (i >> 1) >= hash.len() {
            hash.push(0);
        }
        hash[start + (i >> 1)] |= (r(15.0 * f) << ((i & 1) << 2)) as u8;
    }
    Some(hash)
}

/// Draws a ThumbHash as its reference decoder does: RGBA (not premultiplied), 32 px on
/// the longer side. `None` for a hash too short to hold its header and factors.
// indexed loops, as in the reference, keep the port checkable line by line
#[allow(clippy::needless_range_loop)]
pub fn thumbhash_decode(hash: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let at = |i: usize| hash.get(i).copied().map(u32::from);
    let header24 = at(0)? | (at(1)? << 8) | (at(2)? << 16);
    let header16 = at(3)? | (at(4)? << 8);
    let l_dc = f64::from(header24 & 63) / 63.0;
    let p_dc = f64::from((header24 >> 6) & 63) / 31.5 - 1.0;
    let q_dc = f64::from((header24 >> 12) & 63) / 31.5 - 1.0;
    let l_scale = f64::from((header24 >> 18) & 31) / 31.0;
    let has_alpha = header24 >> 23 != 0;
    let p_scale = f64::from((header16 >> 3) & 63) / 63.0;
    let q_scale = f64::from((header16 >> 9) & 63) / 63.0;
    let is_landscape = header16 >> 15 != 0;
    let l_side = if has_alpha { 5 } else { 7 };
    let lx = (if is_landscape { l_side } else { header16 & 7 }).max(3) as usize;
    let ly = (if is_landscape { header16 & 7 } else { l_side }).max(3) as usize;
    let a_dc = if has_alpha { f64::from(at(5)? & 15) / 15.0 } else { 1.0 };
    let a_scale = if has_alpha { f64::from(at(5)? >> 4) / 15.0 } else { 0.0 };
    let start = if has_alpha { 6 } else { 5 };
    let mut index = 0usize;
    let mut decode_channel = |nx: usize, ny: usize, scale: f64| -> Option<Vec<f64>> {
        let mut ac = Vec::new();
        for cy in 0..ny {
            let mut cx = usize::from(cy == 0);
            while cx * ny < nx * (ny - cy) {
                let nibble = (at(start + (index >> 1))? >> ((index & 1) << 2)) & 15;
                ac.push((f64::from(nibble) / 7.5 - 1.0) * scale);
                index += 1;
                cx += 1;
            }
        }
        Some(ac)
    };
    let l_ac = decode_channel(lx, ly, l_scale)?;
    let p_ac = decode_channel(3, 3, p_scale * 1.25)?;
    let q_ac = decode_channel(3, 3, q_scale * 1.25)?;
    let a_ac = if has_alpha { decode_channel(5, 5, a_scale)? } else { Vec::new() };

    // thumbHashToApproximateAspectRatio
    let (rx, ry) = if is_landscape {
        (f64::from(l_side), f64::from(header16 & 7))
    } else {
        (f64::from(header16 & 7), f64::from(l_side))
    };
    let ratio = rx / ry;
    let w = js_round(if ratio > 1.0 { 32.0 } else { 32.0 * ratio }).max(1.0) as usize;
    let h = js_round(if ratio > 1.0 { 32.0 / ratio } else { 32.0 }).max(1.0) as usize;
    let mut rgba = Vec::with_capacity(w * h * 4);
    let n_fx = lx.max(if has_alpha { 5 } else { 3 });
    let n_fy = ly.max(if has_alpha { 5 } else { 3 });
    let (mut fx, mut fy) = (vec![0f64; n_fx], vec![0f64; n_fy]);
    for y in 0..h {
        for x in 0..w {
            let (mut l, mut p, mut q, mut a) = (l_dc, p_dc, q_dc, a_dc);
            for (cx, v) in fx.iter_mut().enumerate() {
                *v = (PI / w as f64 * (x as f64 + 0.5) * cx as f64).cos();
            }
            for (cy, v) in fy.iter_mut().enumerate() {
                *v = (PI / h as f64 * (y as f64 + 0.5) * cy as f64).cos();
            }
            let mut j = 0;
            for cy in 0..ly {
                let mut cx = usize::from(cy == 0);
                while cx * ly < lx * (ly - cy) {
                    l += l_ac[j] * fx[cx] * fy[cy] * 2.0;
                    j += 1;
                    cx += 1;
                }
            }
            let mut j = 0;
            for cy in 0..3 {
                for cx in usize::from(cy == 0)..3 - cy {
                    let f = fx[cx] * fy[cy] * 2.0;
                    p += p_ac[j] * f;
                    q += q_ac[j] * f;
                    j += 1;
                }
            }
            if has_alpha {
                let mut j = 0;
                for cy in 0..5 {
                    for cx in usize::from(cy == 0)..5 - cy {
                        a += a_ac[j] * fx[cx] * fy[cy] * 2.0;
                        j += 1;
                    }
                }
            }
            let b = l - 2.0 / 3.0 * p;
            let r = (3.0 * l - b + q) / 2.0;
            let g = r - q;
            rgba.extend([r, g, b, a].map(|v| (255.0 * v.min(1.0)).max(0.0) as u8));
        }
    }
    Some((w as u32, h as u32, rgba))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base83_round_trips() {
        let mut s = String::new();
        encode83(83 * 83 * 83 * 83 - 1, 4, &mut s);
        assert_eq!(s, "~~~~");
        assert_eq!(decode83(s.as_bytes()), Some(83 * 83 * 83 * 83 - 1));
        assert_eq!(decode83(b"!"), None);
    }

    #[test]
    fn blurhash_of_a_flat_image_is_the_reference_string() {
        // blurhash-python 1.2.2 (woltapp's C encoder) on the same 8x6 pixels. The basis
        // is not centred on pixels, so even a flat image has AC terms.
        let rgb = [200u8, 100, 50].repeat(8 * 6);
        assert_eq!(blurhash_encode(4, 3, 8, 6, &rgb).as_deref(), Some("LVM|T9^4fQ^4}XsofQsofQfQfQfQ"));
        let decoded = blurhash_decode("LVM|T9^4fQ^4}XsofQsofQfQfQfQ", 8, 6).unwrap();
        assert_eq!(decoded.len(), 8 * 6 * 3);
        assert_eq!(blurhash_encode(0, 3, 8, 6, &rgb), None);
        assert_eq!(blurhash_encode(10, 3, 8, 6, &rgb), None);
        assert_eq!(blurhash_encode(4, 3, 8, 6, &rgb[1..]), None);
        // one character short, and a character outside base 83
        assert_eq!(blurhash_decode("LVM|T9^4fQ^4}XsofQsofQfQfQf", 4, 4), None);
        assert_eq!(blurhash_decode("LVM|T9^4fQ^4}XsofQsofQfQfQf\\", 4, 4), None);
    }

    #[test]
    fn thumbhash_round_trips_size_and_colour() {
        // a 100x50 landscape, left half red, right half blue, opaque
        let mut rgba = Vec::new();
        for _y in 0..50 {
            for x in 0..100 {
                rgba.extend(if x < 50 { [255, 0, 0, 255] } else { [0, 0, 255, 255] });
            }
        }
        let hash = thumbhash_encode(100, 50, &rgba).unwrap();
        let (w, h, px) = thumbhash_decode(&hash).unwrap();
        // 7x4 luma components (7·50/100 = 3.5 rounds up): ratio 1.75, 32 / 1.75 = 18.3
        assert_eq!((w, h), (32, 18), "aspect ratio from the hash");
        let left = &px[(8 * 32 + 2) * 4..(8 * 32 + 2) * 4 + 4];
        let right = &px[(8 * 32 + 29) * 4..(8 * 32 + 29) * 4 + 4];
        assert!(left[0] > 150 && left[2] < 100, "{left:?}");
        assert!(right[2] > 150 && right[0] < 100, "{right:?}");
        assert_eq!(thumbhash_encode(101, 50, &rgba), None);
    }

    #[test]
    fn js_round_takes_halves_up() {
        assert_eq!(js_round(2.5), 3.0);
        assert_eq!(js_round(-2.5), -2.0);
        assert_eq!(js_round(0.49), 0.0);
    }
}
