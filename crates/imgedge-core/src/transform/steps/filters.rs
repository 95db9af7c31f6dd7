//! Blur, sharpen and pixelate on the final-size image (after orienting, before the
//! canvas grows), as imgproxy's `applyFilters`.

use crate::transform::pipeline::Ctx;
use crate::transform::steps::effects;
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let job = &ctx.job;
    if job.blur > 0.0 {
        effects::blur(&mut ctx.img, job.blur)?;
    }
    if job.sharpen > 0.0 {
        effects::sharpen(&mut ctx.img, job.sharpen)?;
    }
    // A 1-pixel block is the image itself.
    if job.pixelate > 1 {
        effects::pixelate(&mut ctx.img, job.pixelate)?;
    }
    Ok(())
}
