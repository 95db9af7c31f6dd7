//! Applies the composite orientation (EXIF, `rot`, `fl`) so the output is upright and
//! needs no orientation tag. Runs after resizing, so it usually moves a small image.

use crate::transform::geometry::Orientation;
use crate::transform::pipeline::Ctx;
use crate::transform::pixels::Pixels;
use crate::transform::TransformError;

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let o = std::mem::take(&mut ctx.job.orientation);
    if o != Orientation::Normal {
        ctx.img = apply(&ctx.img, o)?;
    }
    Ok(())
}

/// Returns the display-oriented copy of a stored image.
pub(crate) fn apply(img: &Pixels, o: Orientation) -> Result<Pixels, TransformError> {
    let (w, h) = (img.width as usize, img.height as usize);
    let n = img.channels.count();
    let stride = (w * n) as isize;
    let (ni, wi, hi) = (n as isize, w as isize, h as isize);
    let (dw, dh) = o.display_dims(img.width, img.height);
    // Source offsets are linear in the display coordinates: display (x, y) reads
    // the source pixel at byte `a0 + y·ay + x·ax`.
    let last_row = (hi - 1) * stride;
    let last_col = (wi - 1) * ni;
    let (a0, ay, ax) = match o {
        Orientation::Normal => (0, stride, ni),
        Orientation::FlipH => (last_col, stride, -ni),
        Orientation::Rotate180 => (last_row + last_col, -stride, -ni),
        Orientation::FlipV => (last_row, -stride, ni),
        Orientation::Transpose => (0, ni, stride),
        Orientation::Rotate90 => (last_row, ni, -stride),
        Orientation::Transverse => (last_row + last_col, -ni, -stride),
        Orientation::Rotate270 => (last_col, -ni, stride),
    };
    let src = img.data();
    let mut out = vec![0u8; src.len()];
    let row = dw as usize * n;
    for (y, dst_row) in out.chunks_exact_mut(row).enumerate().take(dh as usize) {
        let mut s = a0 + y as isize * ay;
        for px in dst_row.chunks_exact_mut(n) {
            // In bounds by construction: every (x, y) of the display grid maps onto
            // the stored grid.
            let i = s as usize;
            px.copy_from_slice(&src[i..i + n]);
            s += ax;
        }
    }
    Pixels::new(dw, dh, img.channels, out)
}
