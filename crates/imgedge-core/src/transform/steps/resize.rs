//! Scale the planned region to its output size with fast_image_resize (Lanczos3). Only
//! the region is resampled (fir's fractional crop box), which is the same as
//! crop-resize-crop without touching the discarded pixels.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::transform::geometry::Rect;
use crate::transform::pipeline::Ctx;
use crate::transform::pixels::{byte_len, Channels, Pixels};
use crate::transform::steps::crop;
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
    let Some(region) = ctx.job.region else {
        return Ok(());
    };
    let (sw, sh) = ctx.job.src;
    let img = &mut ctx.img;
    let full_size = (img.width, img.height) == (sw, sh);
    if full_size && region.unscaled().is_some() {
        // Nothing to scale; the crop step cuts the region out.
        return Ok(());
    }
    ctx.job.region = None;
    let (dw, dh) = (region.out_w, region.out_h);

    // The region is in source coordinates; express it on the current pixel grid.
    let sx = f64::from(img.width) / f64::from(sw);
    let sy = f64::from(img.height) / f64::from(sh);
    let left = (region.x * sx).min(f64::from(img.width));
    let top = (region.y * sy).min(f64::from(img.height));
    let width = (region.w * sx).min(f64::from(img.width) - left);
    let height = (region.h * sy).min(f64::from(img.height) - top);
    if !(width > 0.0 && height > 0.0) {
        return Err(fir_err("empty region"));
    }
    if [left, top, width, height].iter().all(|v| v.fract() == 0.0) && (width, height) == (f64::from(dw), f64::from(dh))
    {
        // 1:1 on the decoded grid (e.g. a DCT shrink that hit the size exactly): a cut
        // is enough. The values are whole and within the image.
        let r = Rect { x: left as u32, y: top as u32, w: dw, h: dh };
        return crop::crop_in_place(img, r);
    }

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
