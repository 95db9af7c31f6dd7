//! Composites alpha onto the background in place (RGBA → RGB, grey+alpha → grey, or
//! → RGB when the background has a colour): for formats without alpha (onto white unless
//! `bg` says otherwise) and, as imgproxy does, for every format when `bg` is given.

use crate::transform::pipeline::Ctx;
use crate::transform::pixels::{luma601, Channels, Pixels};
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let Some(bg_rgb) = ctx.job.flatten else {
        return Ok(());
    };
    if !ctx.img.channels.has_alpha() {
        return Ok(());
    }
    let bg = [u32::from(bg_rgb.0), u32::from(bg_rgb.1), u32::from(bg_rgb.2)];
    if ctx.img.channels == Channels::GrayAlpha && !(bg[0] == bg[1] && bg[1] == bg[2]) {
        // grey on a coloured background is a colour image
        let img = &ctx.img;
        let mut out = Vec::with_capacity(img.width as usize * img.height as usize * 3);
        for px in img.data().chunks_exact(2) {
            out.extend(bg.map(|b| over(px[0], u32::from(px[1]), b)));
        }
        ctx.img = Pixels::new(img.width, img.height, Channels::Rgb, out)?;
        return Ok(());
    }
    // Grey images flatten onto the background's luma (BT.601, as libvips).
    let luma = u32::from(luma601(bg_rgb.0, bg_rgb.1, bg_rgb.2));
    ctx.img.strip_alpha_with(|px, out| {
        let a = u32::from(px[px.len() - 1]);
        let grey = out.len() == 1;
        for (i, (o, &c)) in out.iter_mut().zip(px).enumerate() {
            *o = over(c, a, if grey { luma } else { bg[i] });
        }
    });
    Ok(())
}

/// Colour `c` with alpha `a` over background `bg`: c·a + bg·(255 − a), divided by 255
/// with rounding.
fn over(c: u8, a: u32, bg: u32) -> u8 {
    ((u32::from(c) * a + bg * (255 - a) + 127) / 255) as u8
}
