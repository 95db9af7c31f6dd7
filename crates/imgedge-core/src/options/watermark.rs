//! `wm`/`watermark` and `wmu`/`watermark_url` (imgproxy's grammar), the tenant's forced
//! watermark, and their canonical spelling.
//!
//! `wm:opacity:position:x_offset:y_offset:scale` as imgproxy parses it: opacity in 0..=1
//! (0 = no watermark), a compass position, `ce`, or `re` (tile); offsets are pixels when
//! |v| ≥ 1 (× dpr), fractions of the result's size otherwise; scale ≥ 0 fits the watermark
//! into `scale` × the result's width and height (0 = its own size). An empty argument
//! leaves the value as it was. `wmu` names the watermark image as a base64url source of
//! the tenant's own origins (never an arbitrary URL).

use std::fmt::Write;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{GravityType, OptionError, Source};

/// Where the watermark goes: a gravity (compass or centre) or tiled over the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatermarkPosition {
    Gravity(GravityType),
    /// `re`: repeated over the whole image, the offsets being the gaps between tiles.
    Replicate,
    #[default]
    Center,
}

impl WatermarkPosition {
    pub fn name(self) -> &'static str {
        match self {
            Self::Gravity(g) => g.name(),
            Self::Replicate => "re",
            Self::Center => "ce",
        }
    }

    /// `ce`, `re` or a compass gravity; `fp` and `sm` are no watermark positions.
    pub fn parse(a: &str) -> Option<WatermarkPosition> {
        Some(match a {
            "ce" => Self::Center,
            "re" => Self::Replicate,
            "no" => Self::Gravity(GravityType::North),
            "so" => Self::Gravity(GravityType::South),
            "ea" => Self::Gravity(GravityType::East),
            "we" => Self::Gravity(GravityType::West),
            "noea" => Self::Gravity(GravityType::NorthEast),
            "nowe" => Self::Gravity(GravityType::NorthWest),
            "soea" => Self::Gravity(GravityType::SouthEast),
            "sowe" => Self::Gravity(GravityType::SouthWest),
            _ => return None,
        })
    }

    /// The gravity calcPosition uses (centre for `ce`; tiles need none).
    pub fn gravity(self) -> GravityType {
        match self {
            Self::Gravity(g) => g,
            Self::Replicate | Self::Center => GravityType::Center,
        }
    }
}

/// A watermark request; `opacity == 0` is none (and then every other field is the default).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Watermark {
    /// 0..=1; 0 = no watermark.
    pub opacity: f64,
    pub position: WatermarkPosition,
    pub x_offset: f64,
    pub y_offset: f64,
    /// Fraction of the result's size the watermark is fitted into; 0 = unscaled.
    pub scale: f64,
    /// `wmu`: the watermark image; `None` = the tenant's `watermark.source`.
    pub source: Option<Source>,
}

impl Watermark {
    pub fn enabled(&self) -> bool {
        self.opacity > 0.0
    }
}

/// The tenant's `watermark.force`: drawn on every transform, whatever the URL says.
#[derive(Debug, Clone, PartialEq)]
pub struct ForcedWatermark {
    pub opacity: f64,
    pub position: WatermarkPosition,
    pub x_offset: f64,
    pub y_offset: f64,
    pub scale: f64,
}

impl ForcedWatermark {
    pub fn watermark(&self) -> Watermark {
        Watermark {
            opacity: self.opacity,
            position: self.position,
            x_offset: self.x_offset,
            y_offset: self.y_offset,
            scale: self.scale,
            source: None,
        }
    }
}

/// Largest `wm` offset magnitude (pixels), as for gravity offsets.
const MAX_OFFSET: f64 = 65535.0;
/// Largest scale: a watermark 100 × the result is already all clipped.
const MAX_SCALE: f64 = 100.0;

/// Applies `wm:opacity:position:x:y:scale` onto `wm`. `num` parses one number.
pub(super) fn apply_wm(
    name: &str,
    wm: &mut Watermark,
    args: &[&str],
    num: impl Fn(&str) -> Option<f64>,
    invalid: impl Fn(&str, String) -> OptionError,
) -> Result<(), OptionError> {
    // imgproxy allows 7 (its Pro version reads more); the last two are refused here
    if args.len() > 5 {
        return Err(invalid(name, "at most 5 arguments (opacity:position:x_offset:y_offset:scale)".into()));
    }
    let a = |i: usize| args.get(i).copied().unwrap_or("");
    wm.opacity = num(a(0))
        .filter(|o| (0.0..=1.0).contains(o))
        .ok_or_else(|| invalid(name, "opacity must be a number in 0..=1".into()))?;
    if !a(1).is_empty() {
        wm.position = WatermarkPosition::parse(a(1)).ok_or_else(|| {
            invalid(name, "position must be ce, re or a compass gravity (no so ea we noea nowe soea sowe)".into())
        })?;
    }
    for (i, dst) in [(2, &mut wm.x_offset), (3, &mut wm.y_offset)] {
        if !a(i).is_empty() {
            *dst = num(a(i))
                .filter(|v| v.abs() <= MAX_OFFSET)
                .ok_or_else(|| invalid(name, format!("offsets must be numbers in -{MAX_OFFSET}..={MAX_OFFSET}")))?;
        }
    }
    if !a(4).is_empty() {
        wm.scale = num(a(4))
            .filter(|s| (0.0..=MAX_SCALE).contains(s))
            .ok_or_else(|| invalid(name, format!("scale must be a number in 0..={MAX_SCALE}")))?;
    }
    Ok(())
}

/// The canonical `wm` and `wmu` segments (nothing for no watermark).
pub(super) fn write(s: &mut String, wm: &Watermark) {
    if !wm.enabled() {
        return;
    }
    let _ = write!(s, "/wm:{}:{}:{}:{}:{}", wm.opacity, wm.position.name(), wm.x_offset, wm.y_offset, wm.scale);
    if let Some(src) = &wm.source {
        // base64url of `origin:key`: a key may hold `/` and `:`
        let _ = write!(s, "/wmu:{}", URL_SAFE_NO_PAD.encode(format!("{}:{}", src.origin, src.key)));
    }
}
