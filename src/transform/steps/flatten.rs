//! Composites alpha onto the background in place (RGBA → RGB, grey+alpha → grey):
//! for formats without alpha (onto white unless `bg` says otherwise) and, as imgproxy
//! does, for every format when `bg` is given.

use crate::transform::pipeline::Ctx;
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let Some(bg) = ctx.job.flatten else {
        return Ok(());
    };
    if !ctx.img.channels.has_alpha() {
        return Ok(());
    }
    let bg = [u32::from(bg.0), u32::from(bg.1), u32::from(bg.2)];
    // Grey images flatten onto the background's luma (BT.601, as libvips).
    let luma = (bg[0] * 299 + bg[1] * 587 + bg[2] * 114 + 500) / 1000;
    ctx.img.strip_alpha_with(|px, out| {
        let a = u32::from(px[px.len() - 1]);
        let grey = out.len() == 1;
        for (i, (o, &c)) in out.iter_mut().zip(px).enumerate() {
            let b = if grey { luma } else { bg[i] };
            // c·a + bg·(255 − a), divided by 255 with rounding.
            let v = u32::from(c) * a + b * (255 - a);
            *o = ((v + 127) / 255) as u8;
        }
    });
    Ok(())
}
