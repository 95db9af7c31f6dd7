//! `tenants[].watermark`: the tenant's watermark image (`source`, a key of its own
//! origins), how often its identity is checked (`revalidate`), and `force`, a watermark
//! drawn on every transform whatever the URL says.

use std::time::Duration;

use serde::Deserialize;

use super::units;
use super::validate::Collector;
use crate::options::{self, ForcedWatermark, ParseContext, Source, WatermarkPosition};

/// How long the watermark's identity (a hash of its bytes) is trusted before it is
/// fetched again: a replaced watermark file shows within this time.
pub const DEFAULT_REVALIDATE: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatermark {
    /// A source as after `plain/`: `key`, `origin:key` or a URL under an origin.
    pub source: String,
    pub revalidate: Option<units::Duration>,
    pub force: Option<RawForce>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForce {
    pub opacity: f64,
    pub position: Option<String>,
    pub x_offset: Option<f64>,
    pub y_offset: Option<f64>,
    pub scale: Option<f64>,
}

/// The validated `watermark` block.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkConfig {
    pub source: Source,
    pub revalidate: Duration,
    pub force: Option<ForcedWatermark>,
}

pub(super) fn validate(
    c: &mut Collector,
    at: &str,
    raw: &RawWatermark,
    ctx: &ParseContext<'_>,
) -> Option<WatermarkConfig> {
    let source = match options::parse_source(&raw.source, ctx) {
        Ok(s) => Some(s),
        Err(e) => {
            c.push(format!("{at}.source"), e.to_string());
            None
        }
    };
    let force = raw.force.as_ref().and_then(|f| {
        let fat = format!("{at}.force");
        let before = c.problems.len();
        if !(f.opacity > 0.0 && f.opacity <= 1.0) {
            c.push(format!("{fat}.opacity"), "must be in (0, 1]");
        }
        let position = match f.position.as_deref() {
            None => WatermarkPosition::Center,
            Some(p) => WatermarkPosition::parse(p).unwrap_or_else(|| {
                c.push(
                    format!("{fat}.position"),
                    "must be ce, re or a compass gravity (no so ea we noea nowe soea sowe)",
                );
                WatermarkPosition::Center
            }),
        };
        for (name, v) in [("x_offset", f.x_offset), ("y_offset", f.y_offset)] {
            if v.is_some_and(|v| !(v.is_finite() && v.abs() <= 65535.0)) {
                c.push(format!("{fat}.{name}"), "must be in -65535..=65535");
            }
        }
        if f.scale.is_some_and(|s| !(0.0..=100.0).contains(&s)) {
            c.push(format!("{fat}.scale"), "must be in 0..=100");
        }
        let round = options::round_float;
        (c.problems.len() == before).then(|| ForcedWatermark {
            opacity: round(f.opacity),
            position,
            x_offset: round(f.x_offset.unwrap_or(0.0)),
            y_offset: round(f.y_offset.unwrap_or(0.0)),
            scale: round(f.scale.unwrap_or(0.0)),
        })
    });
    let revalidate = raw.revalidate.map_or(DEFAULT_REVALIDATE, |d| d.0);
    Some(WatermarkConfig { source: source?, revalidate, force })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use crate::config::load_str;
    use crate::options::WatermarkPosition;

    fn config(watermark: &str) -> String {
        format!(
            r#"
listen: {{edge: ["127.0.0.1:8080"], render_socket: render.sock}}
tenants:
  - id: acme
    hosts: [img.acme.test]
    allow_unsigned: true
    origins:
      photos: {{type: http, base_url: "https://photos.example.com/"}}
      brand: {{type: local, root: /tmp}}
    default_origin: photos
    watermark: {watermark}
"#
        )
    }

    #[test]
    fn a_watermark_is_a_source_of_the_tenant_and_force_is_checked() {
        let c = load_str(&config("{source: \"brand:logo.png\"}"), Path::new("/tmp/x.yaml")).unwrap();
        let w = c.tenants[0].watermark.clone().unwrap();
        assert_eq!((w.source.origin.as_str(), w.source.key.as_str()), ("brand", "logo.png"));
        assert_eq!((w.revalidate, w.force), (super::DEFAULT_REVALIDATE, None));
        assert!(c.tenants[0].parse_context().watermark_force.is_none());

        let forced = "{source: \"https://photos.example.com/a/logo.png\", revalidate: 5s, force: {opacity: 0.5, position: soea, scale: 0.2}}";
        let c = load_str(&config(forced), Path::new("/tmp/x.yaml")).unwrap();
        let w = c.tenants[0].watermark.clone().unwrap();
        assert_eq!((w.source.origin.as_str(), w.source.key.as_str()), ("photos", "a/logo.png"));
        let f = w.force.unwrap();
        assert_eq!((f.opacity, f.position.name(), f.scale), (0.5, "soea", 0.2));
        assert_eq!(
            c.tenants[0].parse_context().watermark_force.map(|f| f.position),
            Some(WatermarkPosition::parse("soea").unwrap())
        );

        let bad = "{source: \"https://elsewhere.example/logo.png\", force: {opacity: 0, position: fp, scale: 101, x_offset: 1e9}}";
        let e = load_str(&config(bad), Path::new("/tmp/x.yaml")).unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tenants[0].watermark.source",
                "tenants[0].watermark.force.opacity",
                "tenants[0].watermark.force.position",
                "tenants[0].watermark.force.x_offset",
                "tenants[0].watermark.force.scale",
            ],
            "{e}"
        );
    }
}
