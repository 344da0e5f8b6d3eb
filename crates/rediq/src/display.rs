//! How Rediq writes durations, sizes and times for people: short, and the same in the
//! `rediq` CLI's tables, its dashboard and the web UI, so that a number read in one reads the
//! same in the others.
//!
//! ```
//! use rediq::display::{bytes, millis, utc};
//! assert_eq!(millis(850), "850ms");
//! assert_eq!(millis(240_000), "4m");
//! assert_eq!(bytes(3_500), "3.4 KiB");
//! assert_eq!(utc(0), "1970-01-01 00:00:00");
//! ```

/// A duration in milliseconds, in its largest whole unit: `850ms`, `12s`, `4m`, `3h`, `2d`
/// (cut, not rounded: `1999` is `1s`).
pub fn millis(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms}ms"),
        1_000..=59_999 => format!("{s}s"),
        60_000..=3_599_999 => format!("{}m", s / 60),
        3_600_000..=86_399_999 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A size in bytes: `512 B`, `3.4 KiB`, `12.0 MiB`, `1.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS`, in UTC (`<n> ms` when out of range).
pub fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{ms} ms"),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_unit_at_its_edges() {
        assert_eq!(millis(0), "0ms");
        assert_eq!(millis(999), "999ms");
        assert_eq!(millis(1_000), "1s");
        assert_eq!(millis(59_999), "59s");
        assert_eq!(millis(3_600_000), "1h");
        assert_eq!(millis(2 * 86_400_000), "2d");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(utc(1_796_128_336_000), "2026-12-01 12:32:16");
        assert_eq!(utc(u64::MAX), format!("{} ms", u64::MAX));
    }
}
