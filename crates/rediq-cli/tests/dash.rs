//! `rediq dash` in a real terminal: tmux runs it against a private Redis with a live server;
//! the test reads the screen, sends keys (move, pause with confirmation, browse, page, find,
//! quit) and checks what the screen and Redis show.

use std::process::Command;
use std::time::{Duration, Instant};

use rediq::processor::{Handler, Mux};
use rediq::server::{Server, ServerBuilder};
use rediq::testing::RedisServer;
use rediq::{Client, Inspector, Task};

/// A tmux server of its own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let socket = format!("rediq-dash-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "-L",
                &socket,
                "new-session",
                "-d",
                "-s",
                "dash",
                "-x",
                "140",
                "-y",
                "40",
                cmd,
            ])
            .status()
            .unwrap_or_else(|e| panic!("tmux is needed for this test (apt-get install tmux): {e}"));
        assert!(ok.success(), "tmux new-session failed");
        Tmux { socket }
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p", "-t", "dash"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let ok = Command::new("tmux")
            .args(["-L", &self.socket, "send-keys", "-t", "dash", keys])
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }

    fn running(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "dash"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits until the screen shows `text`.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.screen();
            if s.contains(text) {
                return s;
            }
            assert!(Instant::now() < deadline, "{text:?} never showed:\n{s}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

struct Slow;

#[rediq::async_trait]
impl Handler for Slow {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_live_workload_pauses_a_queue_and_pages_and_finds_tasks() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::builder().redis_url(&url).build().await.unwrap();
    for _ in 0..2000 {
        client
            .enqueue(Task::builder("work").queue("emails").build().unwrap())
            .await
            .unwrap();
    }
    client
        .enqueue(Task::builder("work").queue("reports").build().unwrap())
        .await
        .unwrap();
    // Nobody serves `uploads`: two pages of pending tasks, one of them (on page 2) findable.
    let mut needle = String::new();
    for n in 0..150 {
        let file = if n == 120 {
            "needle-report.pdf".to_string()
        } else {
            format!("f{n}.png")
        };
        let t = Task::builder("work")
            .queue("uploads")
            .payload(&serde_json::json!({ "file": file }))
            .unwrap()
            .build()
            .unwrap();
        if n == 120 {
            needle = t.id.clone();
        }
        client.enqueue(t).await.unwrap();
    }
    let mut mux = Mux::new();
    mux.handle("work", Slow);
    let state = ServerBuilder::new()
        .redis_url(&url)
        .queues(&["emails"])
        .concurrency(20)
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));

    let tmux = Tmux::start(&format!(
        "{} --redis-url {url} dash --interval 300ms",
        env!("CARGO_BIN_EXE_rediq")
    ));
    let screen = tmux.wait_for("Servers (1)").await;
    assert!(screen.contains("Queues (3)"), "{screen}");
    assert!(
        screen.contains("emails") && screen.contains("reports") && screen.contains("uploads"),
        "{screen}"
    );
    // Throughput shows once two refreshes have seen the counters grow.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = tmux.screen();
        let moving = s
            .lines()
            .find(|l| l.contains("Throughput"))
            .is_some_and(|l| !l.contains("Throughput 0/s"));
        if moving {
            break;
        }
        assert!(Instant::now() < deadline, "throughput never moved:\n{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Select the second queue (reports), ask to pause it, refuse, then confirm.
    tmux.keys("j");
    tmux.keys("p");
    tmux.wait_for("Pause queue reports? [y/N]").await;
    tmux.keys("n");
    tmux.wait_for("cancelled").await;
    let inspector = Inspector::connect(&url).await.unwrap();
    assert!(!inspector.queue_stats("reports").await.unwrap().paused);
    tmux.keys("p");
    tmux.wait_for("Pause queue reports? [y/N]").await;
    tmux.keys("y");
    tmux.wait_for("paused queue reports").await;
    assert!(inspector.queue_stats("reports").await.unwrap().paused);
    let screen = tmux.wait_for("paused ").await;
    let row = screen.lines().find(|l| l.contains("reports")).unwrap();
    assert!(row.contains("paused"), "{screen}");

    // Browse the selected queue's tasks, open one, switch state, and go back.
    tmux.keys("Enter");
    tmux.wait_for("Tasks of reports, page 1 (1–1 of 1): [pending]")
        .await;
    tmux.keys("Enter");
    let details = tmux.wait_for("type         work").await;
    assert!(details.contains("state        pending"), "{details}");
    tmux.keys("Escape");
    tmux.wait_for("Tasks of reports, page 1 (1–1 of 1)").await;
    tmux.keys("Tab");
    tmux.wait_for("[active]").await;
    tmux.keys("Escape");
    tmux.wait_for("Queues (3)").await;

    // Find from the queue table: `/` on `uploads`, type, Enter; the match is on page 2.
    tmux.keys("j");
    tmux.keys("/");
    tmux.wait_for("find: ▏ (Enter: search pending of uploads")
        .await;
    tmux.keys("needle-rex");
    tmux.wait_for("find: needle-rex▏").await;
    tmux.keys("BSpace");
    tmux.keys("port");
    tmux.wait_for("find: needle-report▏").await;
    tmux.keys("Enter");
    let found = tmux
        .wait_for(r#"find "needle-report" in pending of uploads, step 1: 1 found"#)
        .await;
    assert!(
        found.contains(&needle) && found.contains("needle-report.pdf"),
        "{found}"
    );
    assert!(!found.contains("f7.png"), "only the match: {found}");
    tmux.keys("Enter");
    let details = tmux.wait_for(&format!("Task {needle}")).await;
    assert!(details.contains("needle-report.pdf"), "{details}");
    tmux.keys("Escape");
    tmux.wait_for("searched to the end").await;
    // Esc leaves the search for the pages: page 1 of 150, PgDn to page 2, PgUp back.
    tmux.keys("Escape");
    tmux.wait_for("Tasks of uploads, page 1 (1–100 of 150): [pending]")
        .await;
    tmux.keys("PageDown");
    let page2 = tmux
        .wait_for("Tasks of uploads, page 2 (101–150 of 150)")
        .await;
    assert!(page2.contains(&needle), "{page2}");
    tmux.keys("PageDown");
    tmux.wait_for("last page").await;
    tmux.keys("[");
    tmux.wait_for("Tasks of uploads, page 1 (1–100 of 150)")
        .await;
    tmux.keys("]");
    tmux.wait_for("Tasks of uploads, page 2").await;
    tmux.keys("PageUp");
    tmux.wait_for("Tasks of uploads, page 1").await;
    // Find inside the browser: the current queue and state.
    tmux.keys("/");
    tmux.wait_for("(Enter: search pending of uploads").await;
    tmux.keys("f149.png");
    tmux.keys("Enter");
    let found = tmux
        .wait_for(r#"find "f149.png" in pending of uploads, step 1: 1 found"#)
        .await;
    assert!(!found.contains("needle-report.pdf"), "{found}");
    tmux.keys("Escape");
    tmux.wait_for("Tasks of uploads, page 1").await;
    tmux.keys("Escape");
    tmux.wait_for("Queues (3)").await;

    tmux.keys("q");
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.running() {
        assert!(
            Instant::now() < deadline,
            "q did not quit:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
