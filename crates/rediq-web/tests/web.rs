//! The web UI's handlers against a real Redis (a private `redis-server` per test): the pages
//! show what the Inspector reads, links follow the base path, unknown queues and tasks are
//! 404, and authentication refuses what it should.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use rediq::testing::RedisServer;
use rediq::{Client, Inspector, Task};
use rediq_web::{router, Auth, WebConfig};
use tower::ServiceExt;

/// A private Redis with tasks in `emails` (3 pending, one of them grouped) and `reports`.
async fn seeded() -> (RedisServer, Inspector, Vec<String>) {
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

async fn get(
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

#[tokio::test]
async fn the_pages_show_queues_tasks_and_details() {
    let (_redis, inspector, ids) = seeded().await;
    let app = router(inspector, WebConfig::default());

    let (status, body, _) = get(&app, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(r#"<a href="/queues/emails">emails</a>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/queues/reports">reports</a>"#),
        "{body}"
    );
    // The pending count of emails (3) sits in the row of emails.
    let row = body.split("/queues/emails").nth(1).unwrap();
    assert!(row.contains(r#"<td class="n">3</td>"#), "{row}");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "nothing from elsewhere"
    );

    let (status, body, _) = get(&app, "/queues/emails", None).await;
    assert_eq!(status, StatusCode::OK);
    for id in &ids {
        assert!(
            body.contains(&format!("/queues/emails/tasks/{id}")),
            "{id} listed: {body}"
        );
    }
    assert!(
        body.contains("pending (3)") && body.contains("dead (0)"),
        "{body}"
    );
    assert!(body.contains("<td>acme</td>"), "the group is shown: {body}");

    let (status, body, _) = get(&app, "/queues/emails?state=dead", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("No dead tasks"), "{body}");

    let (status, body, _) = get(&app, &format!("/queues/emails/tasks/{}", ids[1]), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("user1@example.com"), "{body}");
    assert!(
        body.contains("&quot;n&quot;: 1"),
        "pretty-printed JSON: {body}"
    );
    assert!(body.contains("<dd>pending</dd>"), "{body}");
}

#[tokio::test]
async fn unknown_queues_tasks_and_states_are_refused_with_a_reason() {
    let (_redis, inspector, ids) = seeded().await;
    let app = router(inspector, WebConfig::default());
    let (status, body, _) = get(&app, "/queues/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no queue &quot;nope&quot;"), "{body}");
    let (status, body, _) = get(&app, "/queues/emails?state=sleeping", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("sleeping"), "{body}");
    let (status, _, _) = get(&app, "/queues/emails/tasks/not-a-uuid", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&app, &format!("/queues/reports/tasks/{}", ids[0]), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a task of another queue");
}

#[tokio::test]
async fn links_follow_the_base_path_when_nested() {
    let (_redis, inspector, _) = seeded().await;
    let ui = router(
        inspector,
        WebConfig {
            base_path: "/ops/rediq/".into(),
            auth: Auth::None,
        },
    );
    let app = axum::Router::new().nest("/ops/rediq", ui);
    let (status, body, _) = get(&app, "/ops/rediq", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains(r#"href="/ops/rediq/queues/emails""#),
        "{body}"
    );
    assert!(
        body.contains(r#"<a href="/ops/rediq">Rediq</a>"#),
        "home link: {body}"
    );
    let (status, _, _) = get(&app, "/ops/rediq/queues/emails", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_token_or_basic_auth_guards_every_page() {
    let (_redis, inspector, _) = seeded().await;
    let bearer = router(
        inspector.clone(),
        WebConfig {
            base_path: String::new(),
            auth: Auth::Bearer("s3cret".into()),
        },
    );
    for path in ["/", "/queues/emails"] {
        let (status, body, challenge) = get(&bearer, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!body.contains("s3cret"));
        assert_eq!(challenge.as_deref(), Some("Bearer realm=\"rediq\""));
        let (status, _, _) = get(&bearer, path, Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = get(&bearer, path, Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let basic = router(
        inspector,
        WebConfig {
            base_path: String::new(),
            auth: Auth::Basic {
                user: "ops".into(),
                password: "hunter2".into(),
            },
        },
    );
    let (status, _, challenge) = get(&basic, "/", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge.unwrap().starts_with("Basic realm=\"rediq\""));
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let (status, _, _) = get(&basic, "/", Some(&format!("Basic {}", enc("ops:nope")))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body, _) = get(&basic, "/", Some(&format!("Basic {}", enc("ops:hunter2")))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("hunter2"), "no page shows the password");
}
