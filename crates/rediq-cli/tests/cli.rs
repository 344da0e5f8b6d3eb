//! The `rediq` binary against real Redis (private servers on free ports, never 6379): every
//! command's table and `--json`, confirmations, errors as one line on stderr with a non-zero
//! exit, no password in any output, and the cluster flag.

use std::process::{Command, Stdio};
use std::time::Duration;

use rediq::processor::Mux;
use rediq::server::{Server, ServerBuilder};
use rediq::testing::{RedisCluster, RedisServer};
use rediq::{Client, Task};
use serde_json::Value;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn rediq(url: &str, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_rediq"))
        .arg("--redis-url")
        .arg(url)
        .args(args)
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        .output()
        .expect("run the rediq binary");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = rediq(url, &all);
    assert!(out.ok, "rediq {args:?} failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Fails with exactly one line on stderr containing every one of `needles`.
fn fails(out: &Out, needles: &[&str]) {
    assert!(!out.ok, "expected a failure, got: {}", out.stdout);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {:?}", out.stderr);
    for n in needles {
        assert!(out.stderr.contains(n), "{n:?} not in {:?}", out.stderr);
    }
}

/// A handler that always fails.
struct Refuse;

#[rediq::async_trait]
impl rediq::processor::Handler for Refuse {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        Err(rediq::Error::handler("smtp refused"))
    }
}

/// A task of `queue` with payload `{"n": n}` and no retries.
fn task(queue: &str, n: u32) -> Task {
    Task::builder("email:send")
        .queue(queue)
        .max_retry(0)
        .payload(&serde_json::json!({ "n": n }))
        .unwrap()
        .build()
        .unwrap()
}

#[test]
fn version_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_rediq"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("rediq {}", env!("CARGO_PKG_VERSION"))
    );
    // REDIS_URL's value (which may hold a password) is never shown in the help.
    let out = Command::new(env!("CARGO_BIN_EXE_rediq"))
        .arg("--help")
        .env("REDIS_URL", "redis://admin:hunter2@db:6379")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for cmd in [
        "queue",
        "task",
        "worker",
        "stats",
        "cron",
        "--redis-url",
        "--json",
        "--cluster",
        "--sentinel",
    ] {
        assert!(help.contains(cmd), "{cmd} in {help}");
    }
    assert!(!help.contains("hunter2"), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_print_tables_and_json() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::builder().redis_url(&url).build().await.unwrap();
    for n in 0..3 {
        client.enqueue(task("emails", n)).await.unwrap();
    }
    let later = Task::builder("email:send")
        .queue("emails")
        .delay(Duration::from_secs(600))
        .build()
        .unwrap();
    client.enqueue(later).await.unwrap();
    client.enqueue(task("reports", 1)).await.unwrap();

    let out = rediq(&url, &["queue", "list"]);
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("QUEUE") && lines[0].contains("PENDING"),
        "{}",
        out.stdout
    );
    let emails: Vec<&str> = lines[1].split_whitespace().collect();
    assert!(
        lines[0].contains("LATENCY") && emails[2].ends_with('s'),
        "{}",
        out.stdout
    );
    assert_eq!(
        [&emails[..2], &emails[3..6]].concat(),
        ["emails", "running", "3", "0", "1"],
        "{}",
        out.stdout
    );
    assert!(lines[2].starts_with("reports"), "{}", out.stdout);

    let list = json(&url, &["queue", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["queue"], "emails");
    assert_eq!(
        (list[0]["pending"].as_u64(), list[0]["scheduled"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(list[0]["paused"], false);
    assert_eq!(list[0]["partitions"], 1);
    assert!(list[0]["latency_ms"].as_u64().is_some());

    let out = rediq(&url, &["queue", "pause", "emails"]);
    assert_eq!(out.stdout.trim(), "paused queue emails");
    let one = json(&url, &["queue", "inspect", "emails"]);
    assert_eq!(
        (one["paused"].as_bool(), one["pending"].as_u64()),
        (Some(true), Some(3))
    );
    let out = rediq(&url, &["queue", "inspect", "emails"]);
    assert!(
        out.stdout.contains("state               paused"),
        "{}",
        out.stdout
    );
    assert_eq!(
        json(&url, &["queue", "resume", "emails"])["action"],
        "resumed"
    );
    assert_eq!(json(&url, &["queue", "inspect", "emails"])["paused"], false);

    // Limits: shown, set, kept where not named, shown by inspect and list, cleared.
    let out = rediq(&url, &["queue", "limit", "emails"]);
    assert_eq!(out.stdout.trim(), "limits of queue emails are: none");
    let out = rediq(
        &url,
        &[
            "queue",
            "limit",
            "emails",
            "--concurrency",
            "5",
            "--rate",
            "100/1s",
        ],
    );
    assert_eq!(
        out.stdout.trim(),
        "limits of queue emails set: concurrency 5, rate 100 per 1s"
    );
    let l = json(&url, &["queue", "limit", "emails", "--rate", "none"]);
    assert_eq!(l["concurrency"], 5);
    assert_eq!(l["rate"], serde_json::Value::Null);
    let l = json(&url, &["queue", "limit", "emails", "--rate", "20/500ms"]);
    assert_eq!(
        (l["rate"]["count"].as_u64(), l["rate"]["period_ms"].as_u64()),
        (Some(20), Some(500))
    );
    let one = json(&url, &["queue", "inspect", "emails"]);
    assert_eq!(one["limits"]["concurrency"], 5);
    let out = rediq(&url, &["queue", "inspect", "emails"]);
    assert!(
        out.stdout
            .contains("limits              concurrency 5, rate 20 per 500ms"),
        "{}",
        out.stdout
    );
    let out = rediq(&url, &["queue", "list"]);
    assert!(
        out.stdout.contains("LIMITS") && out.stdout.contains("≤5 20/500ms"),
        "{}",
        out.stdout
    );
    let out = rediq(&url, &["queue", "limit", "emails", "--concurrency", "0"]);
    assert!(
        !out.ok && out.stderr.contains("rediq queue pause"),
        "{}",
        out.stderr
    );
    fails(
        &rediq(&url, &["queue", "limit", "nope", "--concurrency", "1"]),
        &["unknown queue \"nope\""],
    );
    let l = json(&url, &["queue", "limit", "emails", "--clear"]);
    assert_eq!(
        (l["concurrency"].clone(), l["rate"].clone()),
        (serde_json::Value::Null, serde_json::Value::Null)
    );

    // Groups: a rule for every group, an override for one, the groups listed.
    let mut grouped: Vec<String> = Vec::new();
    for (g, n) in [("acme", 3u32), ("zeta", 1)] {
        for k in 0..n {
            let t = Task::builder("send")
                .queue("emails")
                .group(g)
                .payload(&k)
                .unwrap()
                .build()
                .unwrap();
            grouped.push(t.id.clone());
            client.enqueue(t).await.unwrap();
        }
    }
    let out = rediq(
        &url,
        &[
            "queue",
            "limit",
            "emails",
            "--per-group",
            "--concurrency",
            "2",
        ],
    );
    assert_eq!(
        out.stdout.trim(),
        "limits of every group of queue emails set: concurrency 2",
        "{}",
        out.stderr
    );
    let l = json(
        &url,
        &[
            "queue", "limit", "emails", "--group", "acme", "--rate", "10/1s",
        ],
    );
    assert_eq!(
        (l["concurrency"].as_u64(), l["override"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(l["rate"]["count"], 10);
    let out = rediq(&url, &["queue", "limit", "emails"]);
    assert!(
        out.stdout.contains("group rule          concurrency 2")
            && out
                .stdout
                .contains("group acme          concurrency 2, rate 10 per 1s"),
        "{}",
        out.stdout
    );
    let out = rediq(&url, &["queue", "groups", "emails"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("GROUP") && lines[0].contains("PENDING"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].starts_with("acme") && lines[1].contains("≤2 10/1s"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].starts_with("zeta") && lines[2].contains("≤2"),
        "{}",
        out.stdout
    );
    let g = json(&url, &["queue", "groups", "emails"]);
    assert_eq!(g["groups"][0]["group"], "acme");
    assert_eq!(g["groups"][0]["pending"], 3);
    let out = rediq(&url, &["queue", "list"]);
    assert!(out.stdout.contains("group ≤2"), "{}", out.stdout);
    let one = json(&url, &["queue", "inspect", "emails"]);
    assert_eq!(one["group_limits"]["rule"]["concurrency"], 2);
    assert_eq!(
        one["group_limits"]["overrides"]["acme"]["rate"]["count"],
        10
    );
    assert_eq!(one["groups"], 2);
    let l = json(
        &url,
        &["queue", "limit", "emails", "--group", "acme", "--clear"],
    );
    assert_eq!(
        (l["override"].as_bool(), l["rate"].clone()),
        (Some(false), serde_json::Value::Null)
    );
    let l = json(
        &url,
        &["queue", "limit", "emails", "--per-group", "--clear"],
    );
    assert_eq!(l["concurrency"], serde_json::Value::Null);
    fails(
        &rediq(
            &url,
            &[
                "queue",
                "limit",
                "emails",
                "--group",
                "",
                "--concurrency",
                "1",
            ],
        ),
        &["group"],
    );
    // The grouped tasks go again (the counts below are of the other tasks).
    let inspector = rediq::Inspector::connect(&url).await.unwrap();
    assert_eq!(grouped.len(), 4);
    for id in grouped {
        assert_eq!(
            inspector.cancel_task("emails", &id).await.unwrap(),
            rediq::CancelOutcome::Removed
        );
    }

    // A typo names the queues that exist.
    fails(
        &rediq(&url, &["queue", "inspect", "emials"]),
        &["unknown queue \"emials\"", "known queues: emails, reports"],
    );
    fails(
        &rediq(&url, &["queue", "pause", "nope"]),
        &["unknown queue \"nope\""],
    );

    let totals = json(&url, &["stats"]);
    assert_eq!(
        (totals["queues"].as_u64(), totals["pending"].as_u64()),
        (Some(2), Some(4))
    );
    let one = json(&url, &["stats", "--queue", "reports"]);
    assert_eq!(
        (one["queues"].as_u64(), one["pending"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(one["latency_ms"].as_u64().unwrap() > 0, "{one}");
    let out = rediq(&url, &["stats"]);
    assert!(
        out.stdout.contains("pending             4"),
        "{}",
        out.stdout
    );

    // Flush asks first; without a terminal to ask on, it needs --yes.
    fails(&rediq(&url, &["queue", "flush", "emails"]), &["--yes"]);
    assert_eq!(json(&url, &["queue", "inspect", "emails"])["pending"], 3);
    let out = rediq(&url, &["queue", "flush", "emails", "--yes"]);
    assert!(
        out.stdout
            .contains("removed 3 pending, 0 active, 1 scheduled"),
        "{}",
        out.stdout
    );
    let flushed = json(&url, &["queue", "flush", "reports", "--yes"]);
    assert_eq!(flushed["removed"]["pending"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_worker_and_cron_commands() {
    let redis = RedisServer::start();
    let url = redis.url();
    let client = Client::builder().redis_url(&url).build().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(client.enqueue(task("emails", n)).await.unwrap());
    }
    // Pages, in the order the tasks will run.
    let page2 = json(
        &url,
        &["task", "list", "emails", "--page", "2", "--size", "2"],
    );
    let got: Vec<&str> = page2
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[3].as_str()]);
    assert_eq!(page2[0]["payload"], serde_json::json!({ "n": 2 }));
    assert_eq!(page2[0]["payload_encoding"], "json");
    assert_eq!(page2[0]["state"], "pending");
    assert_eq!(page2[0]["type"], "email:send");
    let out = rediq(&url, &["task", "list", "emails", "--size", "2"]);
    assert!(
        out.stdout.lines().next().unwrap().starts_with("ID"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&ids[0]) && out.stdout.contains(r#"{"n":0}"#),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("2 pending task(s) of queue emails, page 1"),
        "{}",
        out.stdout
    );

    // Cancel a pending task; a second cancel finds nothing.
    let out = rediq(
        &url,
        &["task", "cancel", "--id", &ids[4], "--queue", "emails"],
    );
    assert!(
        out.stdout.contains("removed from queue emails"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    fails(
        &rediq(
            &url,
            &["task", "cancel", "--id", &ids[4], "--queue", "emails"],
        ),
        &["no waiting or running task"],
    );

    // A server that fails every task (no retries) leaves them dead; retry one.
    let mut mux = Mux::new();
    mux.handle("email:send", Refuse);
    let state = ServerBuilder::new()
        .redis_url(&url)
        .queues(&["emails"])
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while json(&url, &["queue", "inspect", "emails"])["dead"] != 4 {
        assert!(std::time::Instant::now() < deadline, "tasks did not die");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Per day and memory: the four deaths are today's failed attempts.
    let one = json(&url, &["queue", "inspect", "emails", "--days", "3"]);
    assert!(one["memory_bytes"].as_u64().unwrap() > 0, "{one}");
    let days = one["history"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    assert_eq!(
        (days[2]["processed"].as_u64(), days[2]["failed"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(days[2]["date"].as_str().unwrap().len(), 10);
    let out = rediq(&url, &["queue", "inspect", "emails"]);
    assert!(
        out.stdout.contains("memory              ")
            && out.stdout.contains("DATE (UTC)")
            && out.stdout.lines().filter(|l| l.starts_with("20")).count() == 7,
        "{}",
        out.stdout
    );
    let totals = json(&url, &["stats", "--days", "2"]);
    assert_eq!(totals["failed_today"], 4);
    assert_eq!(totals["history"].as_array().unwrap().len(), 2);
    let out = rediq(&url, &["stats"]);
    assert!(
        out.stdout.contains("failed today        4"),
        "{}",
        out.stdout
    );
    let out = rediq(&url, &["stats", "--days", "91"]);
    assert!(
        !out.ok && out.stderr.contains("91 is not in 1..=90"),
        "{}",
        out.stderr
    );

    let workers = json(&url, &["worker", "list"]);
    assert_eq!(workers.as_array().unwrap().len(), 1);
    assert_eq!(workers[0]["queues"], serde_json::json!(["emails"]));
    assert_eq!(workers[0]["alive"], true);
    assert!(workers[0]["in_flight"].as_u64().is_some());
    let id = workers[0]["id"].as_str().unwrap().to_string();
    let one = json(&url, &["worker", "inspect", &id]);
    assert_eq!(
        (one["id"].as_str(), one["alive"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    assert!(one["tasks"].is_array());
    let out = rediq(&url, &["worker", "inspect", &id]);
    assert!(out.stdout.contains("status       alive"), "{}", out.stdout);
    fails(
        &rediq(&url, &["worker", "inspect", "nobody"]),
        &["no server \"nobody\""],
    );
    assert_eq!(
        workers[0]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    let out = rediq(&url, &["worker", "list"]);
    assert!(
        out.stdout.contains("1 server(s)") && out.stdout.contains("emails"),
        "{}",
        out.stdout
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let dead = json(&url, &["task", "list", "emails", "--state", "dead"]);
    assert_eq!(dead.as_array().unwrap().len(), 4);
    assert_eq!(dead[0]["last_error"], "smtp refused");
    assert_eq!(dead[0]["attempts"], 1);
    // One task, whole.
    let one = json(&url, &["task", "inspect", &ids[1]]);
    assert_eq!(one["state"], "dead");
    assert_eq!(one["queue"], "emails");
    assert_eq!(one["last_error"], "smtp refused");
    assert_eq!(one["lease"], Value::Null);
    assert_eq!(one["dependents"], serde_json::json!([]));
    let out = rediq(&url, &["task", "inspect", &ids[1], "--queue", "emails"]);
    assert!(out.stdout.contains("state          dead"), "{}", out.stdout);
    assert!(
        out.stdout.contains(r#"payload        {"n":1}"#),
        "{}",
        out.stdout
    );
    fails(
        &rediq(
            &url,
            &["task", "inspect", "01900000-0000-7000-8000-000000000000"],
        ),
        &["no task 01900000-0000-7000-8000-000000000000 found"],
    );
    // Search the dead tasks' errors, and one by id.
    let found = json(&url, &["task", "find", "emails", "smtp", "--state", "dead"]);
    assert_eq!(found["tasks"].as_array().unwrap().len(), 4);
    assert_eq!(found["cursor"], Value::Null);
    let found = json(
        &url,
        &["task", "find", "emails", &ids[1], "--state", "dead"],
    );
    assert_eq!(found["tasks"][0]["id"], ids[1].as_str());
    let out = rediq(
        &url,
        &["task", "find", "emails", "refused", "--state", "dead"],
    );
    assert!(
        out.stdout
            .contains("4 dead task(s) of queue emails match \"refused\""),
        "{}",
        out.stdout
    );
    let none = json(
        &url,
        &[
            "task",
            "find",
            "emails",
            "nothing like this",
            "--state",
            "dead",
        ],
    );
    assert_eq!(none["tasks"], serde_json::json!([]));
    let out = rediq(
        &url,
        &["task", "retry", "--id", &ids[0], "--queue", "emails"],
    );
    assert!(
        out.stdout.contains("is pending again"),
        "{} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(json(&url, &["queue", "inspect", "emails"])["pending"], 1);
    fails(
        &rediq(
            &url,
            &["task", "retry", "--id", &ids[0], "--queue", "emails"],
        ),
        &["no dead task"],
    );
    // Another dead one is deleted, once.
    let deleted = json(
        &url,
        &["task", "delete", "--id", &ids[1], "--queue", "emails"],
    );
    assert_eq!(deleted["outcome"], "deleted");
    assert_eq!(json(&url, &["queue", "inspect", "emails"])["dead"], 2);
    fails(
        &rediq(
            &url,
            &["task", "delete", "--id", &ids[1], "--queue", "emails"],
        ),
        &["no task", "to delete"],
    );

    let nightly = Task::builder("report:build")
        .queue("reports")
        .unique_key("nightly")
        .cron("CRON_TZ=Asia/Shanghai 0 0 11 * * *")
        .build()
        .unwrap();
    client.register_cron(&nightly).await.unwrap();
    let entries = json(&url, &["cron", "list"]);
    assert_eq!(entries[0]["id"], "nightly");
    assert_eq!(entries[0]["time_zone"], "Asia/Shanghai");
    assert_eq!(entries[0]["queue"], "reports");
    assert_eq!(entries[0]["paused"], false);
    assert!(entries[0]["next_run_ms"].as_u64().is_some());
    let out = rediq(&url, &["cron", "list"]);
    assert!(
        out.stdout.contains("nightly")
            && out.stdout.contains("03:00:00")
            && out.stdout.contains("Asia/Shanghai")
            && out.stdout.contains(" 0 0 11 * * * "),
        "{}",
        out.stdout
    );
    assert_eq!(
        rediq(&url, &["cron", "pause", "nightly"]).stdout.trim(),
        "paused periodic entry nightly"
    );
    assert_eq!(json(&url, &["cron", "list"])[0]["paused"], true);
    assert_eq!(json(&url, &["cron", "resume", "nightly"])["ok"], true);
    fails(
        &rediq(&url, &["cron", "remove", "weekly"]),
        &["no periodic entry \"weekly\""],
    );
    assert!(rediq(&url, &["cron", "remove", "nightly"]).ok);
    assert_eq!(json(&url, &["cron", "list"]), serde_json::json!([]));
}

#[test]
fn errors_are_one_line_and_never_show_a_password() {
    // Nothing listens on port 1.
    let out = rediq("redis://admin:hunter2@127.0.0.1:1", &["queue", "list"]);
    fails(&out, &["127.0.0.1:1"]);
    assert!(
        !out.stderr.contains("hunter2") && !out.stdout.contains("hunter2"),
        "{}",
        out.stderr
    );
    // A mode that does not match the server.
    let redis = RedisServer::start();
    let out = rediq(&redis.url(), &["--cluster", "queue", "list"]);
    fails(&out, &["standalone", "remove --cluster"]);
    // A bad state is refused by the parser, naming the choices.
    let out = rediq(&redis.url(), &["task", "list", "q", "--state", "done"]);
    assert!(!out.ok && out.stderr.contains("pending"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_flag_reads_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.seed_url();
    let client = Client::builder()
        .redis_url(&url)
        .cluster_mode()
        .build()
        .await
        .unwrap();
    client.partition_queue("hot", 3).await.unwrap();
    for n in 0..30 {
        client.enqueue(task("hot", n)).await.unwrap();
        client.enqueue(task("cold", n)).await.unwrap();
    }
    let list = json(&url, &["--cluster", "queue", "list"]);
    assert_eq!(list[0]["queue"], "cold");
    assert_eq!(
        (list[1]["queue"].as_str(), list[1]["pending"].as_u64()),
        (Some("hot"), Some(30))
    );
    assert_eq!(list[1]["partitions"], 3);
    let page = json(&url, &["--cluster", "task", "list", "hot", "--size", "50"]);
    assert_eq!(page.as_array().unwrap().len(), 30);
}
