//! `plh`/`placeholder`: the image replaced by its placeholder, drawn from the same
//! small sample `/info` hashes ([`Sample`]), so the picture matches the hash an info
//! request returns:
//! * `blurhash:x:y`: the BlurHash of the 32 px sample, drawn back at that size;
//! * `thumbhash`: the ThumbHash of the 100 px sample, drawn back by the reference
//!   decoder (32 px on the longer side, the hash's approximate aspect ratio, alpha kept);
//! * `color`: the most populous colour of an 8-colour palette, flat, at the 32 px
//!   sample's size (alpha 0 if the image is fully transparent).
//!
//! The pipeline then resizes that image like any source (enlarging allowed: the
//! placeholder is always smaller than what it stands for) and encodes it.

use super::colors::{self, Sample};
use super::hashes;
use super::pixels::{Channels, Pixels};
use super::TransformError;
use crate::options::Placeholder;

pub(crate) fn image(input: &[u8], kind: Placeholder, max_pixels: u64) -> Result<Pixels, TransformError> {
    let sample = Sample::from_source(input, max_pixels)?;
    let failed = || TransformError::Decode("placeholder could not be computed".into());
    let mut px = match kind {
        Placeholder::BlurHash(x, y) => {
            let small = sample.fit(colors::BLURHASH_SIDE)?;
            let rgb = small.rgb_over_white();
            let hash =
                hashes::blurhash_encode(x.into(), y.into(), small.width, small.height, &rgb).ok_or_else(failed)?;
            let drawn = hashes::blurhash_decode(&hash, small.width, small.height).ok_or_else(failed)?;
            Pixels::new(small.width, small.height, Channels::Rgb, drawn)?
        }
        Placeholder::ThumbHash => {
            let hash = hashes::thumbhash_encode(sample.width, sample.height, &sample.rgba).ok_or_else(failed)?;
            let (w, h, rgba) = hashes::thumbhash_decode(&hash).ok_or_else(failed)?;
            Pixels::new(w, h, Channels::Rgba, rgba)?
        }
        Placeholder::Color => {
            let small = sample.fit(colors::BLURHASH_SIDE)?;
            let px = match colors::palette(&sample, 8).first() {
                Some(s) => [s.color.r, s.color.g, s.color.b, 255],
                None => [0, 0, 0, 0],
            };
            let data = px.repeat(small.width as usize * small.height as usize);
            Pixels::new(small.width, small.height, Channels::Rgba, data)?
        }
    };
    px.drop_opaque_alpha();
    Ok(px)
}
