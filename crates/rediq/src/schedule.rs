//! Cron schedules: parsing an expression and finding its next tick.
//!
//! Accepted: standard 5-field cron (`0 2 * * *`), 6 fields with seconds first
//! (`*/10 * * * * *`), `@hourly` / `@daily` / `@weekly` / `@monthly` / `@yearly`, and
//! `@every <n><s|m|h|d>` (`@every 30s`). A `CRON_TZ=<zone> ` (or `TZ=<zone> `) prefix evaluates
//! the expression in an IANA time zone; the default is UTC. Parsing is `croner`'s, which walks
//! local time correctly across DST changes: a tick in a skipped hour is not invented twice and a
//! repeated hour does not fire twice. `@every` ticks are aligned to the Unix epoch, so every
//! server computes the same ticks — which is what lets them agree on who fires which tick.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub(crate) enum Schedule {
    Cron { cron: Box<croner::Cron>, tz: Tz },
    Every(Duration),
}

impl Schedule {
    /// Parses an expression; the error is the parser's message.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let (zone, rest) = split_zone(expr);
        let tz = match zone {
            Some("") => {
                return Err(format!(
                    "nothing follows the time zone in {:?}",
                    expr.trim()
                ))
            }
            Some(zone) => {
                Tz::from_str(zone).map_err(|e| format!("unknown time zone {zone:?}: {e}"))?
            }
            None => Tz::UTC,
        };
        if let Some(every) = rest.strip_prefix("@every") {
            let d = parse_every(every.trim())?;
            return Ok(Schedule::Every(d));
        }
        let cron = croner::Cron::from_str(rest).map_err(|e| e.to_string())?;
        Ok(Schedule::Cron {
            cron: Box::new(cron),
            tz,
        })
    }

    /// The first tick strictly after `after_ms` (Unix ms), if there is one.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Schedule::Every(d) => {
                let step = d.as_millis() as u64;
                Some((after_ms / step + 1) * step)
            }
            Schedule::Cron { cron, tz } => {
                let at: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms as i64).single()?;
                let local = at.with_timezone(tz);
                let next = cron.find_next_occurrence(&local, false).ok()?;
                u64::try_from(next.with_timezone(&Utc).timestamp_millis()).ok()
            }
        }
    }
}

/// An expression's time zone prefix (`CRON_TZ=<zone> ` or `TZ=<zone> `; `Some("")` when
/// nothing follows it) and the schedule after it.
pub(crate) fn split_zone(expr: &str) -> (Option<&str>, &str) {
    let expr = expr.trim();
    match expr
        .strip_prefix("CRON_TZ=")
        .or_else(|| expr.strip_prefix("TZ="))
    {
        Some(r) => match r.split_once(char::is_whitespace) {
            Some((zone, rest)) => (Some(zone), rest.trim()),
            None => (Some(""), r),
        },
        None => (None, expr),
    }
}

fn parse_every(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("@every needs a unit (s, m, h or d) in {s:?}"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("@every needs a whole number, got {s:?}"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown @every unit {unit:?} (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("@every needs an interval of at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis() as u64
    }

    #[test]
    fn accepted_syntaxes() {
        let base = ms("2026-03-01T10:15:30Z");
        let next = |e: &str| Schedule::parse(e).unwrap().next_after(base).unwrap();
        assert_eq!(next("0 2 * * *"), ms("2026-03-02T02:00:00Z"));
        assert_eq!(next("*/10 * * * * *"), ms("2026-03-01T10:15:40Z"));
        assert_eq!(next("@hourly"), ms("2026-03-01T11:00:00Z"));
        assert_eq!(next("@daily"), ms("2026-03-02T00:00:00Z"));
        assert_eq!(next("@weekly"), ms("2026-03-08T00:00:00Z")); // a Sunday
        assert_eq!(next("@monthly"), ms("2026-04-01T00:00:00Z"));
        assert_eq!(next("@yearly"), ms("2027-01-01T00:00:00Z"));
        assert_eq!(next("@every 30s"), ms("2026-03-01T10:16:00Z"));
        assert_eq!(next("@every 1h"), ms("2026-03-01T11:00:00Z"));
        assert_eq!(
            next("CRON_TZ=Asia/Shanghai 0 2 * * *"),
            ms("2026-03-01T18:00:00Z")
        );
    }

    #[test]
    fn bad_expressions_carry_the_parsers_message() {
        for bad in [
            "",
            "61 * * * *",
            "* * *",
            "@every",
            "@every 0s",
            "@every 5x",
            "CRON_TZ=Mars/Base 0 * * * *",
            "CRON_TZ=Europe/Berlin",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn the_time_zone_is_split_from_the_schedule() {
        assert_eq!(
            split_zone(" CRON_TZ=Asia/Shanghai  0 2 * * *"),
            (Some("Asia/Shanghai"), "0 2 * * *")
        );
        assert_eq!(split_zone("TZ=UTC @hourly"), (Some("UTC"), "@hourly"));
        assert_eq!(split_zone("*/5 * * * *"), (None, "*/5 * * * *"));
        assert_eq!(split_zone("TZ=Europe/Berlin"), (Some(""), "Europe/Berlin"));
    }

    #[test]
    fn dst_neither_skips_nor_doubles() {
        // Europe/Berlin springs forward 2026-03-29 02:00 -> 03:00 and falls back
        // 2026-10-25 03:00 -> 02:00.
        let s = Schedule::parse("CRON_TZ=Europe/Berlin 30 2 * * *").unwrap();
        let mut t = ms("2026-03-27T12:00:00Z");
        let mut runs = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).unwrap();
            runs.push(t);
        }
        // One run each day; on the 29th the nonexistent 02:30 runs at 03:00 CEST (01:00 UTC).
        assert_eq!(
            runs,
            vec![
                ms("2026-03-28T01:30:00Z"),
                ms("2026-03-29T01:00:00Z"),
                ms("2026-03-30T00:30:00Z"),
                ms("2026-03-31T00:30:00Z"),
            ]
        );
        let s = Schedule::parse("CRON_TZ=Europe/Berlin 30 2 * * *").unwrap();
        let mut t = ms("2026-10-24T12:00:00Z");
        let mut fall = Vec::new();
        for _ in 0..3 {
            t = s.next_after(t).unwrap();
            fall.push(t);
        }
        // 2026-10-25 has 02:30 twice in local time; it fires once.
        let on_25th = fall
            .iter()
            .filter(|&&t| (ms("2026-10-25T00:00:00Z")..ms("2026-10-26T00:00:00Z")).contains(&t))
            .count();
        assert_eq!(on_25th, 1, "{fall:?}");
    }
}
