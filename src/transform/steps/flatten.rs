//! Composites alpha onto white when the output format has no alpha channel (JPEG), in
//! place: RGBA → RGB, grey+alpha → grey.

use crate::options::Format;
use crate::transform::pipeline::Ctx;
use crate::transform::TransformError;

/// White background, as imgproxy's default `background`.
const BACKGROUND: u32 = 255;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    if ctx.out_format != Format::Jpeg || !ctx.img.channels.has_alpha() {
        return Ok(());
    }
    ctx.img.strip_alpha_with(|px, out| {
        let a = u32::from(px[px.len() - 1]);
        for (o, &c) in out.iter_mut().zip(px) {
            // c·a + bg·(255 − a), divided by 255 with rounding.
            let v = u32::from(c) * a + BACKGROUND * (255 - a);
            *o = ((v + 127) / 255) as u8;
        }
    });
    Ok(())
}
