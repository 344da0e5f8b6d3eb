//! What the web tests share: a seeded private Redis, requests through the router, the
//! anti-forgery token of a page, and a handler whose tasks die.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rediq::testing::Topology;
use rediq::{Inspector, Task};
use tower::ServiceExt;

/// A private Redis with tasks in `emails` (3 pending, one of them grouped) and `reports`.
/// The Redis is the topology `REDIQ_TEST_TOPOLOGY` names (standalone when unset; `.ci/run`
/// runs these tests on a cluster too).
pub async fn seeded() -> (Topology, Inspector, Vec<String>) {
    let redis = Topology::from_env();
    let client = redis.client().build().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3u32 {
        let mut b = Task::builder("email:send")
            .queue("emails")
            .payload(&serde_json::json!({"to": format!("user{n}@example.com"), "n": n}))
            .unwrap();
        if n == 2 {
            b = b.group("acme");
        }
        ids.push(client.enqueue(b.build().unwrap()).await.unwrap());
    }
    client
        .enqueue(
            Task::builder("report:build")
                .queue("reports")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let inspector = redis.inspector().build().await.unwrap();
    (redis, inspector, ids)
}

pub async fn get(
    app: &axum::Router,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut req = Request::builder().uri(path);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap(), challenge)
}

/// The anti-forgery token a page's forms carry.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with the token")
        + 19;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

pub async fn post(
    app: &axum::Router,
    path: &str,
    form: &str,
    origin: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::HOST, "ui.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(o) = origin {
        req = req.header(header::ORIGIN, o);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(form.to_string())).unwrap())
        .await
        .unwrap();
    let to = res
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string());
    (res.status(), to)
}

/// A handler that always fails (its tasks, without retries, go to the dead-letter queue).
pub struct Refuse;

#[rediq::async_trait]
impl rediq::processor::Handler for Refuse {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        Err(rediq::Error::handler("smtp refused"))
    }
}

/// Enqueues `n` tasks without retries to `queue` and lets a server with [`Refuse`] run them
/// until all are dead; returns their ids (the queue is paused afterwards, so nothing runs).
pub async fn dead_tasks(
    redis: &Topology,
    inspector: &Inspector,
    queue: &str,
    n: usize,
) -> Vec<String> {
    let client = redis.client().build().await.unwrap();
    let mut ids = Vec::new();
    for k in 0..n {
        let t = Task::builder("email:send")
            .queue(queue)
            .max_retry(0)
            .payload(&serde_json::json!({"to": format!("dead{k}@example.com")}))
            .unwrap()
            .build()
            .unwrap();
        ids.push(client.enqueue(t).await.unwrap());
    }
    until_dead(redis, inspector, queue, n as u64).await;
    ids
}

/// Serves `queue` with [`Refuse`] until it holds `n` dead tasks, then pauses it (so nothing
/// runs afterwards).
pub async fn until_dead(redis: &Topology, inspector: &Inspector, queue: &str, n: u64) {
    let state = redis.server().queues(&[queue]).build().await.unwrap();
    let mut mux = rediq::processor::Mux::new();
    mux.handle("email:send", Refuse);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(rediq::server::Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    let began = std::time::Instant::now();
    while inspector.queue_stats(queue).await.unwrap().dead < n {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(60),
            "the tasks die"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    inspector.pause_queue(queue).await.unwrap();
    let _ = stop.send(());
    run.await.unwrap().unwrap();
}

/// The `Location` of a redirect, decoded for reading (`%20` → space).
pub fn said(to: Option<String>) -> String {
    let to = to.expect("a redirect");
    let msg = to.split("msg=").nth(1).unwrap_or("");
    url::form_urlencoded::parse(format!("m={msg}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Every action path of the UI (each a POST), for a task `id` of queue `emails`: the
/// refusals (read-only, anti-forgery) are checked on all of them.
pub fn every_action(id: &str) -> Vec<String> {
    let mut paths: Vec<String> = ["pause", "resume", "retry-dead", "flush", "bulk", "limits"]
        .iter()
        .map(|a| format!("/queues/emails/{a}"))
        .collect();
    for a in ["retry", "cancel", "delete"] {
        paths.push(format!("/queues/emails/tasks/{id}/{a}"));
    }
    paths.extend(["/cron/pause".to_string(), "/cron/resume".to_string()]);
    paths
}

/// Where a GET of `path` is sent (`Location`), if it is redirected.
pub async fn location(app: &axum::Router, path: &str) -> Option<String> {
    let res = app
        .clone()
        .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    res.headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
}
