//! `rediq dash` in a real terminal: tmux runs it against a private Redis with a live server;
//! the test reads the screen, sends keys (move, pause with confirmation, quit) and checks what
//! the screen and Redis show.

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
async fn the_dashboard_shows_a_live_workload_and_pauses_a_queue_on_confirmation() {
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
    assert!(screen.contains("Queues (2)"), "{screen}");
    assert!(
        screen.contains("emails") && screen.contains("reports"),
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
    tmux.wait_for("Tasks of reports (1 shown): [pending]").await;
    tmux.keys("Enter");
    let details = tmux.wait_for("type         work").await;
    assert!(details.contains("state        pending"), "{details}");
    tmux.keys("Escape");
    tmux.wait_for("Tasks of reports (1 shown)").await;
    tmux.keys("Tab");
    tmux.wait_for("[active]").await;
    tmux.keys("Escape");
    tmux.wait_for("Queues (2)").await;

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
