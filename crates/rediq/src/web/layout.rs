//! The page shell every view renders into, with its stylesheet embedded (nothing is loaded from
//! elsewhere: the UI works with no internet access), and small formatting helpers.

use maud::{html, Markup, DOCTYPE};

use super::App;

/// The stylesheet, embedded in every page.
const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: 10px 20px; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
header nav { float: right; }
header nav a { font-weight: 400; margin-left: 14px; }
main { padding: 16px 20px; }
table { border-collapse: collapse; background: #fff; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e6ea; }
th { background: #eef0f3; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
a { color: #2457c5; }
.paused { color: #b45309; font-weight: 600; }
.tabs a { margin-right: 12px; }
.tabs a.on { font-weight: 700; text-decoration: none; color: #1d2330; }
pre { background: #fff; border: 1px solid #e3e6ea; padding: 10px; overflow: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: 4px 16px; }
dt { font-weight: 600; }
.pager { margin-top: 10px; }
form.act { display: inline-block; margin: 0 8px 8px 0; }
form.find { display: inline; margin-left: 14px; }
form.search, form.limits { margin: 8px 0; }
.history h3 { margin: 12px 0 4px; font-size: 14px; }
.done { color: #2f9e44; } .failed { color: #e03131; }
svg.chart { display: block; background: #fff; }
.notice { background: #e8f1ff; border: 1px solid #9bbcf0; padding: 6px 10px; }
"#;

/// A whole page: the title, the header (linking to the overview) and the body.
pub fn page(app: &App, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Rediq" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href=(app.link("/")) { "Rediq" } " · " (title)
                    nav { a href=(app.link("/")) { "Queues" } " " a href=(app.link("/servers")) { "Servers" }
                          " " a href=(app.link("/cron")) { "Cron" }
                          form.find method="get" action=(app.link("/search")) {
                              input name="id" size="36" placeholder="task id" required;
                          } }
                }
                main { (body) }
            }
        }
    }
}

/// A button that posts an action (with the anti-forgery token) to `path` under the base path;
/// nothing in read-only mode.
pub fn action(app: &App, path: &str, label: &str) -> Markup {
    if app.read_only {
        return html! {};
    }
    html! {
        form.act method="post" action=(app.link(path)) {
            input type="hidden" name="csrf" value=(app.csrf);
            button type="submit" { (label) }
        }
    }
}

/// The result of the last action, when a page is shown after one (`?msg=`).
pub fn notice(msg: Option<&str>) -> Markup {
    html! { @if let Some(m) = msg { p.notice { (m) } } }
}

pub use crate::display::{bytes, millis};

/// A Unix time in milliseconds, in UTC.
pub fn time(ms: u64) -> String {
    format!("{} UTC", crate::display::utc(ms))
}

/// A payload for reading: pretty JSON when it is JSON, else hex.
pub fn payload(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) if bytes.is_empty() => "(empty)".into(),
        Err(_) => {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_people_write_them() {
        assert_eq!(payload(br#"{"to":"a"}"#), "{\n  \"to\": \"a\"\n}");
        assert_eq!(payload(&[0xff, 0x01]), "0xff01");
        assert_eq!(payload(b""), "(empty)");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
    }
}
