//! Scale to the planned size with fast_image_resize (Lanczos3). When the plan crops,
//! only the surviving source region is resampled (fir's fractional crop box), which is
//! the same as resize-then-crop without touching the discarded pixels.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::transform::pipeline::Ctx;
use crate::transform::pixels::{byte_len, Channels, Pixels};
use crate::transform::TransformError;

fn pixel_type(c: Channels) -> PixelType {
    match c {
        Channels::Gray => PixelType::U8,
        Channels::GrayAlpha => PixelType::U8x2,
        Channels::Rgb => PixelType::U8x3,
        Channels::Rgba => PixelType::U8x4,
    }
}

fn fir_err(e: impl std::fmt::Display) -> TransformError {
    // Only reachable through a size bug of ours; never the caller's fault.
    TransformError::Encode(format!("resize: {e}"))
}

pub(crate) fn run(ctx: &mut Ctx) -> Result<(), TransformError> {
    let (tw, th) = ctx.target;
    let img = &mut ctx.img;
    if (img.width, img.height) == (tw, th) {
        // Nothing to scale; a pending crop is left to the crop step.
        return Ok(());
    }
    let crop = ctx.crop.take();
    let (dx, dy, dw, dh) = crop.map_or((0, 0, tw, th), |r| (r.x, r.y, r.w, r.h));

    // The crop is in target coordinates; express it on the current pixel grid.
    let sx = f64::from(img.width) / f64::from(tw);
    let sy = f64::from(img.height) / f64::from(th);
    let left = f64::from(dx) * sx;
    let top = f64::from(dy) * sy;
    let width = (f64::from(dw) * sx).min(f64::from(img.width) - left);
    let height = (f64::from(dh) * sy).min(f64::from(img.height) - top);

    let channels = img.channels;
    let pt = pixel_type(channels);
    let (src_w, src_h) = (img.width, img.height);
    let alpha = channels.has_alpha();
    let mul_div = MulDiv::default();
    if alpha {
        // Premultiply in place on our own buffer rather than letting fir copy the
        // full-size source into a premultiplied scratch image.
        let mut src = Image::from_slice_u8(src_w, src_h, img.data_mut(), pt).map_err(fir_err)?;
        mul_div.multiply_alpha_inplace(&mut src).map_err(fir_err)?;
    }
    let src = ImageRef::new(src_w, src_h, img.data(), pt).map_err(fir_err)?;
    let len = byte_len(dw, dh, channels).ok_or_else(|| fir_err("result too large"))?;
    let mut dst = Image::from_vec_u8(dw, dh, vec![0u8; len], pt).map_err(fir_err)?;
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(left, top, width, height)
        .use_alpha(false);
    Resizer::new().resize(&src, &mut dst, &options).map_err(fir_err)?;
    if alpha {
        mul_div.divide_alpha_inplace(&mut dst).map_err(fir_err)?;
    }
    ctx.img = Pixels::new(dw, dh, channels, dst.into_vec())?;
    Ok(())
}
