//! Cuts the planned rectangle out when no resize happened (the resize step folds the
//! crop into resampling otherwise). Rows are copied towards the start of the same
//! buffer, so no second full-size allocation is made.

use crate::transform::pipeline::Ctx;
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let Some(r) = ctx.crop.take() else {
        return Ok(());
    };
    let img = &mut ctx.img;
    if (r.x, r.y, r.w, r.h) == (0, 0, img.width, img.height) {
        return Ok(());
    }
    if r.x + r.w > img.width || r.y + r.h > img.height {
        return Err(TransformError::Encode("crop outside the image".into()));
    }
    let n = img.channels.count();
    let stride = img.stride();
    let row = r.w as usize * n;
    let data = img.data_mut();
    for y in 0..r.h as usize {
        let from = (r.y as usize + y) * stride + r.x as usize * n;
        // Destination never overtakes the source: y * row <= from.
        data.copy_within(from..from + row, y * row);
    }
    img.truncate_to(r.w, r.h);
    Ok(())
}
