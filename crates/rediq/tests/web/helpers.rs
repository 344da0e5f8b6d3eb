//! What the web tests share: a seeded private Redis, requests through the router, the
//! anti-forgery token of a page, and a handler whose tasks die.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rediq::testing::RedisServer;
use rediq::{Client, Inspector, Task};
use tower::ServiceExt;

/// A private Redis with tasks in `emails` (3 pending, one of them grouped) and `reports`.
pub async fn seeded() -> (RedisServer, Inspector, Vec<String>) {
    let redis = RedisServer::start();
    let client = Client::builder()
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
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
    let inspector = Inspector::connect(&redis.url()).await.unwrap();
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
