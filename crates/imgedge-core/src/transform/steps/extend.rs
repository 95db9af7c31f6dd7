//! Places the image on the planned canvas (`ex`, `exar`, `pd` in one go: the fill is
//! uniform, so nested canvases are one canvas with the offsets added up).

use crate::transform::pipeline::Ctx;
use crate::transform::steps::canvas;
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let Some(c) = ctx.job.canvas.take() else {
        return Ok(());
    };
    ctx.img = canvas::embed(&ctx.img, c.w, c.h, c.x, c.y, ctx.job.fill)?;
    Ok(())
}
