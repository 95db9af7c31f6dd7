//! Cuts the planned region out when it is kept at 1:1 (the resize step folds the crop
//! into resampling otherwise). Rows are copied towards the start of the same buffer,
//! so no second full-size allocation is made.

use crate::transform::geometry::Rect;
use crate::transform::pipeline::Ctx;
use crate::transform::pixels::Pixels;
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let Some(region) = ctx.job.region.take() else {
        return Ok(());
    };
    // The resize step leaves only unscaled regions on a full-size decode behind.
    let r = region.unscaled().ok_or_else(|| TransformError::Encode("crop of a scaled region".into()))?;
    crop_in_place(&mut ctx.img, r)
}

/// Keeps only `r` of `img`.
pub(crate) fn crop_in_place(img: &mut Pixels, r: Rect) -> Result<(), TransformError> {
    if (r.x, r.y, r.w, r.h) == (0, 0, img.width, img.height) {
        return Ok(());
    }
    check(img, r)?;
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

/// A copy of `r` of `img`.
pub(crate) fn copy_rect(img: &Pixels, r: Rect) -> Result<Pixels, TransformError> {
    check(img, r)?;
    let n = img.channels.count();
    let stride = img.stride();
    let row = r.w as usize * n;
    let mut out = Vec::with_capacity(row * r.h as usize);
    for y in 0..r.h as usize {
        let from = (r.y as usize + y) * stride + r.x as usize * n;
        out.extend_from_slice(&img.data()[from..from + row]);
    }
    Pixels::new(r.w, r.h, img.channels, out)
}

fn check(img: &Pixels, r: Rect) -> Result<(), TransformError> {
    let inside = r.w > 0
        && r.h > 0
        && u64::from(r.x) + u64::from(r.w) <= u64::from(img.width)
        && u64::from(r.y) + u64::from(r.h) <= u64::from(img.height);
    if inside {
        Ok(())
    } else {
        Err(TransformError::Encode("crop outside the image".into()))
    }
}
