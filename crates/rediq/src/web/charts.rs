//! History charts, drawn on the server as inline SVG (no script, nothing loaded from
//! elsewhere): a queue's completions and failed attempts per day, stacked, and its error rate
//! per day. The numbers come from [`Inspector::history`](crate::Inspector::history).

use maud::{html, Markup};

use crate::DailyStats;

/// Colours of the two series, as the legend names them.
const DONE: &str = "#2f9e44";
const FAILED: &str = "#e03131";

/// Failed attempts as a share of all outcomes, in percent (`None` without any outcome).
pub fn error_rate(days: &[DailyStats]) -> Option<f64> {
    let (done, failed) = days
        .iter()
        .fold((0u64, 0u64), |(d, f), x| (d + x.processed, f + x.failed));
    (done + failed > 0).then(|| failed as f64 * 100.0 / (done + failed) as f64)
}

/// `2.5%`, or `-` without any outcome.
pub fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{r:.1}%"))
}

/// Completions (green) and failed attempts (red) per day, stacked, one bar per day; every bar
/// says its day and counts on hover. `labels`: the scale and the first and last day under it.
pub fn throughput(days: &[DailyStats], width: u32, height: u32, labels: bool) -> Markup {
    let max = days
        .iter()
        .map(|d| d.processed + d.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |n: u64| n as f64 * f64::from(height) / max as f64;
    bars(days, width, height, labels, &max.to_string(), |d| {
        let (done, failed) = (scale(d.processed), scale(d.failed));
        let tip = format!("{}: {} done, {} failed", d.date, d.processed, d.failed);
        vec![(done, DONE, tip.clone()), (failed, FAILED, tip)]
    })
}

/// The error rate per day (failed attempts over all outcomes), 0 to 100 %.
pub fn errors(days: &[DailyStats], width: u32, height: u32) -> Markup {
    bars(days, width, height, true, "100%", |d| {
        let rate = error_rate(std::slice::from_ref(d));
        let tip = format!("{}: {} failed", d.date, rate_text(rate));
        vec![(rate.unwrap_or(0.0) * f64::from(height) / 100.0, FAILED, tip)]
    })
}

/// One bar segment: x, y, width, height, colour, tooltip.
type Rect = (f64, f64, f64, f64, &'static str, String);

/// The shared drawing: for each day, segments `(height, colour, tooltip)` stacked from the
/// bottom of its column.
fn bars(
    days: &[DailyStats],
    width: u32,
    height: u32,
    labels: bool,
    top: &str,
    segments: impl Fn(&DailyStats) -> Vec<(f64, &'static str, String)>,
) -> Markup {
    let col = f64::from(width) / days.len().max(1) as f64;
    let pad = if labels { 14 } else { 0 };
    let total_h = height + 2 * pad;
    let base = f64::from(height + pad);
    let mut rects: Vec<Rect> = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let mut y = base;
        for (h, colour, tip) in segments(d).into_iter().filter(|s| s.0 > 0.0) {
            y -= h;
            rects.push((i as f64 * col, y, (col * 0.8).max(1.0), h, colour, tip));
        }
    }
    html! {
        svg.chart width=(width) height=(total_h)
            viewBox=(format!("0 0 {width} {total_h}")) role="img" {
            @if labels {
                text x="0" y="10" font-size="10" fill="#667" { (top) }
            }
            line x1="0" x2=(width) y1=(base) y2=(base) stroke="#c8ccd2" {}
            @for (x, y, w, h, colour, tip) in &rects {
                rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(format!("{w:.1}"))
                     height=(format!("{h:.1}")) fill=(colour) { title { (tip) } }
            }
            @if let (true, Some(first), Some(last)) = (labels, days.first(), days.last()) {
                text x="0" y=(total_h - 1) font-size="10" fill="#667" { (first.date) }
                text x=(width) y=(total_h - 1) font-size="10" fill="#667" text-anchor="end" { (last.date) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32, processed: u64, failed: u64) -> DailyStats {
        DailyStats {
            date: chrono::NaiveDate::from_ymd_opt(2026, 12, d).expect("a valid date"),
            processed,
            failed,
        }
    }

    #[test]
    fn bars_scale_to_the_busiest_day_and_say_their_counts() {
        let days = [day(1, 90, 10), day(2, 0, 0), day(3, 40, 10)];
        let svg = throughput(&days, 300, 100, true).into_string();
        // The busiest day fills the height: 90 + 10 of 100 px.
        assert!(svg.contains(r##"height="90.0" fill="#2f9e44""##), "{svg}");
        assert!(svg.contains(r##"height="10.0" fill="#e03131""##), "{svg}");
        assert!(svg.contains("2026-12-03: 40 done, 10 failed"), "{svg}");
        assert!(svg.contains(">100<"), "the scale: {svg}");
        // A day without outcomes draws nothing.
        assert_eq!(svg.matches("<rect").count(), 4);
        assert_eq!(rate_text(error_rate(&days)), "13.3%");
        assert_eq!(rate_text(error_rate(&days[1..2])), "-");
        let e = errors(&days, 300, 100).into_string();
        assert!(
            e.contains(r#"height="10.0""#) && e.contains(r#"height="20.0""#),
            "{e}"
        );
    }
}
