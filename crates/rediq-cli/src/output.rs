//! Printing: aligned tables sized to the terminal for people, JSON for programs, and the few
//! renderings (payloads, ages) both share.

use std::io::IsTerminal;

use serde_json::{json, Value};

/// A table printed with aligned columns. On a terminal narrower than the table, the last
/// column is cut (with `…`) to fit; piped output is never cut.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, max_width: Option<usize>) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        if let Some(max) = max_width {
            let others: usize = widths[..n - 1].iter().map(|w| w + 2).sum();
            widths[n - 1] = widths[n - 1].min(max.saturating_sub(others).max(8));
        }
        let line = |cells: Vec<String>| {
            let mut out = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                let c = cut(c, *w);
                if i + 1 == n {
                    out.push_str(&c);
                } else {
                    out.push_str(&format!("{c:<w$}  ", w = *w));
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(self.headers.iter().map(|h| h.to_string()).collect());
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r.clone()));
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print!("{}", self.render(terminal_width()));
    }
}

/// The terminal's width, when stdout is one.
fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    ratatui::crossterm::terminal::size()
        .ok()
        .map(|(w, _)| usize::from(w))
}

/// `s` cut to `width` characters, ending in `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Prints a JSON value, pretty.
pub fn print_json(v: &Value) {
    // Serializing a Value cannot fail.
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// A task's payload: the JSON value when it is JSON, else its bytes in hex.
pub fn payload_json(bytes: &[u8]) -> (Value, &'static str) {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => (v, "json"),
        Err(_) => (Value::String(hex(bytes)), "hex"),
    }
}

/// A payload for a table cell: compact JSON, else hex.
pub fn payload_text(bytes: &[u8]) -> String {
    match payload_json(bytes) {
        (Value::String(h), "hex") => format!("0x{h}"),
        (v, _) => v.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long ago `ms` (Unix milliseconds) was, as `3s`, `4m`, `2h`, `5d`.
pub fn age(ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub use rediq::display::{bytes, millis, utc};

/// A queue's state as the tables show it.
pub fn queue_state(paused: bool) -> &'static str {
    if paused {
        "paused"
    } else {
        "running"
    }
}

/// Now, Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The columns every task table shows, and a task's cells for them.
pub const TASK_COLUMNS: [&str; 6] = ["ID", "TYPE", "ATTEMPTS", "AGE", "LAST ERROR", "PAYLOAD"];

pub fn task_cells(t: &rediq::Task, now_ms: u64) -> [String; 6] {
    [
        t.id.clone(),
        t.task_type.clone(),
        t.retry_cnt.to_string(),
        t.created_at_ms().map_or("-".into(), |c| age(c, now_ms)),
        t.last_error.clone().unwrap_or_else(|| "-".into()),
        payload_text(&t.payload),
    ]
}

/// A task as JSON (the fields docs/cli.md lists).
pub fn task_json(t: &rediq::Task, state: &str) -> Value {
    let (payload, encoding) = payload_json(&t.payload);
    json!({
        "id": t.id,
        "type": t.task_type,
        "queue": t.queue,
        "state": state,
        "priority": t.options.priority,
        "attempts": t.retry_cnt,
        "max_retry": t.options.max_retry,
        "last_error": t.last_error,
        "last_failed_at_ms": t.last_failed_at,
        "created_at_ms": t.created_at_ms(),
        "unique_key": t.options.unique_key,
        "payload": payload,
        "payload_encoding": encoding,
    })
}

/// A queue's limits and its group rule in a table cell: `≤5 100/1s`, `≤5 · group ≤2`, `-`
/// when it has none.
pub fn limits_cell(s: &rediq::QueueStats) -> String {
    match (s.limits.is_empty(), s.group_limits.is_empty()) {
        (_, true) => s.limits.to_string(),
        (true, false) => format!("group {}", s.group_limits),
        (false, false) => format!("{} · group {}", s.limits, s.group_limits),
    }
}

/// A queue's limits as `concurrency 5, rate 100 per 1s` (`none` when it has none).
pub fn limits_text(l: &rediq::QueueLimits) -> String {
    limits_in(l, ["concurrency ", "rate ", " per ", ", ", "none"])
}

/// The limits in words: `[before the concurrency, before the count, between count and
/// period, between the two limits, when there is none]`.
fn limits_in(l: &rediq::QueueLimits, [conc, rate, per, sep, none]: [&str; 5]) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.concurrency {
        parts.push(format!("{conc}{c}"));
    }
    if let Some(r) = l.rate {
        // COUNT/PERIOD as the table cell writes it (exact: a 1500 ms period is 1500ms).
        parts.push(format!("{rate}{}", r.to_string().replacen('/', per, 1)));
    }
    if parts.is_empty() {
        none.into()
    } else {
        parts.join(sep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cut_only_the_last_column() {
        let mut t = Table::new(&["QUEUE", "PENDING", "LAST ERROR"]);
        t.row(vec![
            "emails".into(),
            "12".into(),
            "connection refused by the SMTP server".into(),
        ]);
        t.row(vec!["a".into(), "3".into(), "-".into()]);
        let full = t.render(None);
        assert_eq!(
            full,
            "QUEUE   PENDING  LAST ERROR\nemails  12       connection refused by the SMTP server\na       3        -\n"
        );
        let narrow = t.render(Some(30));
        assert!(narrow.lines().all(|l| l.chars().count() <= 30), "{narrow}");
        assert!(narrow.contains("connection r…"), "{narrow}");
    }

    #[test]
    fn a_limits_cell_shows_the_queue_limits_and_the_group_rule() {
        let at_most = |n| rediq::QueueLimits {
            concurrency: Some(n),
            rate: None,
        };
        let mut s = rediq::QueueStats::default();
        assert_eq!(limits_cell(&s), "-");
        s.limits = at_most(5);
        assert_eq!(limits_cell(&s), "≤5");
        s.group_limits = at_most(2);
        assert_eq!(limits_cell(&s), "≤5 · group ≤2");
        s.limits = rediq::QueueLimits::default();
        assert_eq!(limits_cell(&s), "group ≤2");
    }

    #[test]
    fn payloads_show_as_json_or_hex() {
        assert_eq!(payload_text(br#"{"to":"a@b"}"#), r#"{"to":"a@b"}"#);
        assert_eq!(payload_text(&[0xff, 0x01]), "0xff01");
        assert_eq!(age(1_000, 181_000), "3m");
    }
}
