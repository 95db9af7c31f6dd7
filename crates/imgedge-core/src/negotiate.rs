//! Output format negotiation from the `Accept` header, for tenants with
//! `transform.negotiate`. Pure: no pingora, no tokio.
//!
//! Only an explicit `image/avif` or `image/webp` entry counts: `*/*` and `image/*` are
//! sent by clients that decode neither, so they never imply support. Quality values are
//! honoured (`q=0` refuses a type); the highest q wins, ties go to the tenant's order.
//! The result is one of the tenant's formats or `None` (keep the source's), so a URL
//! has at most three cache variants.

use crate::options::Format;

/// Longest `Accept` value looked at; real browsers send under 200 bytes.
const MAX_ACCEPT: usize = 4096;

/// The best of `allowed` (in preference order) that `accept` asks for, if any.
pub fn best(accept: Option<&[u8]>, allowed: &[Format]) -> Option<Format> {
    let accept = accept?;
    let accept = std::str::from_utf8(&accept[..accept.len().min(MAX_ACCEPT)]).ok()?;
    let mut q = [0u16; 2];
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim();
        let slot = if media.eq_ignore_ascii_case("image/avif") {
            0
        } else if media.eq_ignore_ascii_case("image/webp") {
            1
        } else {
            continue;
        };
        let weight = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("q").then(|| parse_q(v.trim()))
        });
        // a malformed q refuses the type rather than guessing
        q[slot] = q[slot].max(weight.unwrap_or(Some(1000)).unwrap_or(0));
    }
    let mut chosen: Option<(Format, u16)> = None;
    for &f in allowed {
        let w = match f {
            Format::Avif => q[0],
            Format::Webp => q[1],
            _ => 0,
        };
        if w > 0 && chosen.is_none_or(|(_, best)| w > best) {
            chosen = Some((f, w));
        }
    }
    chosen.map(|(f, _)| f)
}

/// RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths =
        frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u16, |a, b| a * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Format] = &[Format::Avif, Format::Webp];

    fn pick(accept: &str, allowed: &[Format]) -> Option<Format> {
        best(Some(accept.as_bytes()), allowed)
    }

    #[test]
    fn browsers() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert_eq!(pick(chrome, BOTH), Some(Format::Avif));
        assert_eq!(pick(chrome, &[Format::Webp, Format::Avif]), Some(Format::Webp));
        assert_eq!(pick(chrome, &[Format::Webp]), Some(Format::Webp));
        let old_safari = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5";
        assert_eq!(pick(old_safari, BOTH), Some(Format::Webp));
        assert_eq!(pick(old_safari, &[Format::Avif]), None);
    }

    #[test]
    fn wildcards_never_imply_support() {
        assert_eq!(pick("*/*", BOTH), None);
        assert_eq!(pick("image/*", BOTH), None);
        assert_eq!(pick("image/png,image/*;q=0.9", BOTH), None);
        assert_eq!(best(None, BOTH), None);
        assert_eq!(pick("image/avif", &[]), None);
    }

    #[test]
    fn q_values() {
        assert_eq!(pick("image/avif;q=0.5, image/webp", BOTH), Some(Format::Webp));
        assert_eq!(pick("image/avif;q=0.9, image/webp;q=0.9", BOTH), Some(Format::Avif));
        assert_eq!(pick("image/avif;q=0, image/webp;q=0", BOTH), None);
        assert_eq!(pick("image/avif; Q=1.000 ;foo=bar", BOTH), Some(Format::Avif));
        assert_eq!(pick("IMAGE/AVIF;q=0.001", BOTH), Some(Format::Avif));
        // malformed weights refuse the type
        for bad in ["2", "0.5000", "x", "", "-1", "1.5", "0.a"] {
            assert_eq!(pick(&format!("image/avif;q={bad}"), BOTH), None, "{bad}");
        }
        assert_eq!(parse_q("0.25"), Some(250));
        assert_eq!(parse_q("1."), Some(1000));
    }

    #[test]
    fn hostile_headers() {
        assert_eq!(best(Some(b"\xff\xfe"), BOTH), None);
        let long = format!("{}image/webp", "x,".repeat(5000));
        assert_eq!(pick(&long, BOTH), None);
        assert_eq!(pick(";;;,,,=;q=;", BOTH), None);
    }
}
