//! The web UI in a real headless browser (Debian's `chromium`, driven through `chromedriver`
//! over WebDriver): the overview during a live workload, a queue's page, a search by payload,
//! a dead task retried and gone from the dead list, and a queue paused until its server stops
//! fetching. Screenshots of the main views are written to the test's temporary directory, and
//! into `docs/images/` with `REDIQ_UPDATE_SCREENSHOTS=1` (how the ones in docs/web.md were
//! made).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use rediq::testing::Topology;
use rediq::web::{router, WebConfig};
use rediq::{Inspector, Task};

use crate::helpers::*;

/// `chromedriver` on a free port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "`{tool}` is not installed: the web UI's browser tests need Debian's chromium \
                 and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "chromedriver listens"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    async fn browser(&self, profile: &std::path::Path) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a headless chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves a screenshot of what the browser shows as `name`.png (see the module's comment).
async fn screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().await.expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{name}: a real picture"
    );
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    if std::env::var("REDIQ_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/images");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("web-{name}.png")), &png).unwrap();
    }
}

/// The text of the page's `<main>`.
/// (A page still loading after a click may not have it yet: it is looked for again, for up to
/// 10 s.)
async fn main_text(b: &Browser) -> String {
    let began = Instant::now();
    loop {
        match b.find(Locator::Css("main")).await {
            Ok(m) => {
                if let Ok(text) = m.text().await {
                    return text;
                }
            }
            Err(e) if began.elapsed() > Duration::from_secs(10) => {
                panic!(
                    "no <main> ({e}) in {}",
                    b.source().await.unwrap_or_default()
                )
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the page (reloaded each time) shows `what`.
async fn until_shown(b: &Browser, what: &str) -> String {
    let began = Instant::now();
    loop {
        let text = main_text(b).await;
        if text.contains(what) {
            return text;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "{what:?} never shown: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.refresh().await.unwrap();
    }
}

/// A worker on `work` (each task takes 20 ms, four at once) and a producer adding 10 tasks
/// every 100 ms, until `stop` is set.
fn live_workload(redis: &Topology, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let (client, server) = (redis.client(), redis.server());
    tokio::spawn(async move {
        let client = client.build().await.unwrap();
        let state = server
            .queues(&["work"])
            .concurrency(4)
            .build()
            .await
            .unwrap();
        let mut mux = rediq::processor::Mux::new();
        mux.handle("report:build", Slow);
        let s = stop.clone();
        let server = tokio::spawn(
            rediq::server::Server::from(state).run_until(mux, async move {
                while !s.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }),
        );
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..10 {
                n += 1;
                let t = Task::builder("report:build")
                    .queue("work")
                    .payload(&serde_json::json!({ "report": n }))
                    .unwrap()
                    .build()
                    .unwrap();
                client.enqueue(t).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.await.unwrap().unwrap();
    })
}

/// A handler that takes 20 ms.
struct Slow;

#[rediq::async_trait]
impl rediq::processor::Handler for Slow {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

async fn processed(i: &Inspector, queue: &str) -> u64 {
    i.queue_stats(queue).await.unwrap().processed_total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_uses_the_ui_in_a_real_browser() {
    let driver = Driver::start();
    let (redis, inspector, ids) = seeded().await;
    let dead = dead_tasks(&redis, &inspector, "mail", 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let workload = live_workload(&redis, stop.clone());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ui = format!("http://{}", listener.local_addr().unwrap());
    let app = router(inspector.clone(), WebConfig::default());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let profile = tempdir("chromium-profile");
    let b = driver.browser(&profile).await;

    // The overview, while `work` runs: its row shows tasks processed, growing.
    b.goto(&ui).await.unwrap();
    assert_eq!(b.title().await.unwrap(), "Queues · Rediq");
    let text = until_shown(&b, "work").await;
    assert!(text.contains("emails") && text.contains("mail"), "{text}");
    let began = Instant::now();
    while processed(&inspector, "work").await < 20 {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the workload runs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.refresh().await.unwrap();
    // The Processed cell of work's row (the 11th column), read as the browser shows it.
    let cell = b
        .find(Locator::XPath("//tr[td/a[text()='work']]/td[11]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let shown: u64 = cell.trim().parse().unwrap_or(0);
    assert!(shown >= 20, "processed shown in the row: {cell:?}");
    screenshot(&b, "overview").await;

    // A queue's page, opened from the overview.
    b.find(Locator::LinkText("emails"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(b.title().await.unwrap(), "Queue emails · Rediq");
    let text = main_text(&b).await;
    assert!(
        text.contains("pending (3)") && text.contains(&ids[0]),
        "{text}"
    );
    screenshot(&b, "queue").await;

    // Search a payload from the queue's page.
    let form = b.form(Locator::Css("form.search")).await.unwrap();
    form.set_by_name("text", "user1@example.com").await.unwrap();
    form.submit().await.unwrap();
    let text = until_shown(&b, "task(s) match").await;
    assert!(
        text.contains("1 pending task(s) match user1@example.com"),
        "{text}"
    );
    assert!(text.contains(&ids[1]) && !text.contains(&ids[0]), "{text}");
    screenshot(&b, "search").await;

    // A dead task, retried from its page, leaves the dead list.
    b.goto(&format!("{ui}/queues/mail?state=dead"))
        .await
        .unwrap();
    let text = main_text(&b).await;
    assert!(
        text.contains("dead (2)") && text.contains(&dead[0]),
        "{text}"
    );
    b.find(Locator::LinkText(&dead[0]))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = main_text(&b).await;
    assert!(text.contains("smtp refused"), "{text}");
    screenshot(&b, "task").await;
    b.find(Locator::XPath("//button[text()='Retry']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_shown(&b, &format!("task {} runs again", dead[0])).await;
    b.goto(&format!("{ui}/queues/mail?state=dead"))
        .await
        .unwrap();
    let text = main_text(&b).await;
    assert!(
        text.contains("dead (1)") && !text.contains(&dead[0]),
        "{text}"
    );
    assert_eq!(inspector.queue_stats("mail").await.unwrap().dead, 1);

    // Pause `work` from its page: its server stops fetching while the producer goes on.
    b.goto(&format!("{ui}/queues/work")).await.unwrap();
    b.find(Locator::XPath("//button[text()='Pause']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = until_shown(&b, "paused queue work").await;
    assert!(text.contains("paused"), "{text}");
    // Tasks fetched before the pause finish; then the count stands still.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, pending_before) = (
        processed(&inspector, "work").await,
        inspector.queue_stats("work").await.unwrap().pending,
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = inspector.queue_stats("work").await.unwrap();
    assert_eq!(s.processed_total, before, "nothing runs while paused");
    assert!(
        s.pending > pending_before,
        "the producer goes on: {} > {pending_before}",
        s.pending
    );
    b.find(Locator::XPath("//button[text()='Resume']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_shown(&b, "resumed queue work").await;
    let began = Instant::now();
    while processed(&inspector, "work").await == before {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "fetching starts again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    b.close().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    workload.await.unwrap();
    serving.abort();
    let _ = std::fs::remove_dir_all(&profile);
}

/// A fresh directory under the test's temporary directory.
fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
