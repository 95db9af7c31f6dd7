//! `imgedge usage`: the ledger's totals per (month, tenant), as a table or JSON.

use super::month::Month;
use super::pg::PgSink;
use super::spool::Spool;
use super::Totals;
use crate::config::Usage;

/// Reads the configured ledger (PostgreSQL if set, else the SQLite spool) and renders
/// its totals, optionally for one tenant and/or month (`YYYY-MM`).
/// `imgedge usage` and the ops listener's `GET /usage` both print this.
pub fn report(u: &Usage, tenant: Option<&str>, month: Option<&str>, json: bool) -> Result<String, String> {
    if let Some(m) = month {
        Month::parse(m).ok_or_else(|| format!("--month {m:?}: expected YYYY-MM"))?;
    }
    let (ledger, rows, pending) = match &u.postgres {
        Some(url) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let mut sink = PgSink::new(url)?;
            let rows = rt.block_on(sink.totals(tenant, month)).map_err(|e| e.to_string())?;
            // batches this host has not delivered yet, when its spool is readable here
            let pending = Spool::open_existing(&u.spool).ok().and_then(|s| s.pending().ok()).map(|p| p.0);
            ("postgres".to_owned(), rows, pending)
        }
        None => {
            let spool = Spool::open_existing(&u.spool)?;
            (format!("sqlite {}", u.spool.display()), spool.totals(tenant, month)?, None)
        }
    };
    Ok(if json { to_json(&ledger, &rows, pending) } else { to_table(&ledger, &rows, pending) })
}

fn credits(milli: u64) -> String {
    format!("{}.{:03}", milli / 1000, milli % 1000)
}

fn to_json(ledger: &str, rows: &[Totals], pending: Option<u64>) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|t| {
            let mut v = serde_json::to_value(t).unwrap_or_default();
            v["credits"] = serde_json::Value::from(t.credits_milli as f64 / 1000.0);
            v["info_credits"] = serde_json::Value::from(t.info_credits_milli as f64 / 1000.0);
            v
        })
        .collect();
    let out = serde_json::json!({ "ledger": ledger, "rows": rows, "pending_batches": pending });
    format!("{out}\n")
}

fn to_table(ledger: &str, rows: &[Totals], pending: Option<u64>) -> String {
    let head = [
        "MONTH",
        "TENANT",
        "REQUESTS",
        "BYTES_OUT",
        "HITS",
        "MISSES",
        "RENDERS",
        "ERRORS",
        "UNIQUE_TRANSFORMS",
        "CREDITS",
        // of the columns before: the `/info` requests' share
        "INFO_REQUESTS",
        "UNIQUE_INFO",
        "INFO_CREDITS",
    ];
    let mut lines: Vec<Vec<String>> = vec![head.iter().map(|s| (*s).to_owned()).collect()];
    for t in rows {
        lines.push(vec![
            t.month.clone(),
            t.tenant.clone(),
            t.requests.to_string(),
            t.bytes_out.to_string(),
            t.cache_hits.to_string(),
            t.cache_misses.to_string(),
            t.renders.to_string(),
            t.errors.to_string(),
            t.unique_transforms.to_string(),
            credits(t.credits_milli),
            t.info_requests.to_string(),
            t.unique_info.to_string(),
            credits(t.info_credits_milli),
        ]);
    }
    let widths: Vec<usize> = (0..head.len()).map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .enumerate()
            // names left-aligned, numbers right-aligned
            .map(|(i, c)| if i < 2 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no usage recorded)\n");
    }
    out.push_str(&format!("ledger: {ledger}"));
    if let Some(p) = pending.filter(|p| *p > 0) {
        out.push_str(&format!("; {p} batches of this host wait in the spool"));
    }
    out.push('\n');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row() -> Totals {
        Totals {
            month: "2026-11".into(),
            tenant: "acme".into(),
            requests: 12,
            bytes_out: 3456,
            cache_hits: 5,
            cache_misses: 7,
            renders: 6,
            errors: 1,
            unique_transforms: 4,
            credits_milli: 6500,
            info_requests: 3,
            unique_info: 1,
            info_credits_milli: 750,
            telemetry: Default::default(),
        }
    }

    #[test]
    fn table_and_json() {
        let t = to_table("sqlite x.db", &[row()], Some(2));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("MONTH    TENANT  REQUESTS"), "{t}");
        assert!(lines[1].starts_with("2026-11  acme"), "{t}");
        assert!(lines[0].ends_with("CREDITS  INFO_REQUESTS  UNIQUE_INFO  INFO_CREDITS"), "{t}");
        assert!(lines[1].ends_with("6.500              3            1         0.750"), "{t}");
        assert!(lines[2].contains("2 batches"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&to_json("sqlite x.db", &[row()], None)).unwrap();
        assert_eq!(j["rows"][0]["unique_transforms"], 4);
        assert_eq!(j["rows"][0]["credits"], 6.5);
        assert_eq!(j["rows"][0]["credits_milli"], 6500);
        assert_eq!((j["rows"][0]["info_requests"].as_u64(), j["rows"][0]["unique_info"].as_u64()), (Some(3), Some(1)));
        assert_eq!(j["rows"][0]["info_credits"], 0.75);
        assert!(to_table("l", &[], None).contains("no usage"));
    }
}
