//! Writers. JPEG: turbojpeg, baseline 4:2:0. PNG: `image` with fast deflate. WebP:
//! libwebp lossy (alpha kept, compressed losslessly). No metadata is ever written.

use std::borrow::Cow;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use turbojpeg::{Compressor, PixelFormat, Subsamp};

use super::pixels::{Channels, Pixels};
use super::TransformError;
use crate::options::Format;

fn enc_err(e: impl std::fmt::Display) -> TransformError {
    TransformError::Encode(e.to_string())
}

/// `quality` is 1..=100 (clamped by the caller).
pub(crate) fn encode(img: &Pixels, format: Format, quality: u8) -> Result<Vec<u8>, TransformError> {
    match format {
        Format::Jpeg => jpeg(img, quality),
        Format::Png => png(img),
        Format::Webp => webp(img, quality),
        Format::Gif => Err(TransformError::UnsupportedOutput(format)),
    }
}

fn jpeg(img: &Pixels, quality: u8) -> Result<Vec<u8>, TransformError> {
    let (format, subsamp) = match img.channels {
        Channels::Gray => (PixelFormat::GRAY, Subsamp::Gray),
        Channels::Rgb => (PixelFormat::RGB, Subsamp::Sub2x2),
        // The flatten step runs before every JPEG encode.
        Channels::GrayAlpha | Channels::Rgba => {
            return Err(TransformError::Encode("JPEG cannot carry alpha".into()));
        }
    };
    let mut c = Compressor::new().map_err(enc_err)?;
    c.set_quality(i32::from(quality)).map_err(enc_err)?;
    c.set_subsamp(subsamp).map_err(enc_err)?;
    let image = turbojpeg::Image {
        pixels: img.data(),
        width: img.width as usize,
        pitch: img.stride(),
        height: img.height as usize,
        format,
    };
    c.compress_to_vec(image).map_err(enc_err)
}

fn png(img: &Pixels) -> Result<Vec<u8>, TransformError> {
    let color = match img.channels {
        Channels::Gray => ExtendedColorType::L8,
        Channels::GrayAlpha => ExtendedColorType::La8,
        Channels::Rgb => ExtendedColorType::Rgb8,
        Channels::Rgba => ExtendedColorType::Rgba8,
    };
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(img.data(), img.width, img.height, color)
        .map_err(enc_err)?;
    Ok(out)
}

fn webp(img: &Pixels, quality: u8) -> Result<Vec<u8>, TransformError> {
    // libwebp takes RGB(A) only; grey is widened here, on the already small result.
    let (data, layout): (Cow<'_, [u8]>, webp::PixelLayout) = match img.channels {
        Channels::Rgb => (Cow::Borrowed(img.data()), webp::PixelLayout::Rgb),
        Channels::Rgba => (Cow::Borrowed(img.data()), webp::PixelLayout::Rgba),
        Channels::Gray => (Cow::Owned(img.data().iter().flat_map(|&g| [g, g, g]).collect()), webp::PixelLayout::Rgb),
        Channels::GrayAlpha => (
            Cow::Owned(img.data().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect()),
            webp::PixelLayout::Rgba,
        ),
    };
    let mut config = webp::WebPConfig::new().map_err(|()| TransformError::Encode("libwebp config".into()))?;
    config.lossless = 0;
    config.quality = f32::from(quality);
    config.alpha_compression = 1;
    let mem = webp::Encoder::new(&data, layout, img.width, img.height)
        .encode_advanced(&config)
        .map_err(|e| TransformError::Encode(format!("libwebp: {e:?}")))?;
    Ok(mem.to_vec())
}
