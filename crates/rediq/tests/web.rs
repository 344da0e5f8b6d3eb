//! The web UI's handlers against a real Redis (a private `redis-server` per test): the pages
//! show what the Inspector reads, links follow the base path, unknown queues and tasks are
//! 404, and authentication refuses what it should.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use base64::Engine;
use http_body_util::BodyExt;
use rediq::testing::RedisServer;
use rediq::web::{router, Auth, WebConfig};
use rediq::{Client, Inspector, Task};
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
            read_only: false,
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
            read_only: false,
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
            read_only: false,
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

/// The anti-forgery token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with the token")
        + 19;
    page[at..at + page[at..].find('"').unwrap()].to_string()
}

async fn post(
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
struct Refuse;

#[rediq::async_trait]
impl rediq::processor::Handler for Refuse {
    async fn handle(&self, _task: &Task) -> rediq::Result<()> {
        Err(rediq::Error::handler("smtp refused"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_run_through_the_inspector_and_are_guarded() {
    let (redis, inspector, ids) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    let (_, page, _) = get(&app, "/queues/emails", None).await;
    assert!(
        page.contains(">Pause</button>") && page.contains("Flush…"),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let form = format!("csrf={csrf}");

    // Guards: no token, a wrong one, another site's page.
    let (status, _) = post(&app, "/queues/emails/pause", "", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "no token at all");
    let (status, _) = post(&app, "/queues/emails/pause", "csrf=nope", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post(
        &app,
        "/queues/emails/pause",
        &form,
        Some("https://evil.example"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        !inspector.queue_stats("emails").await.unwrap().paused,
        "nothing happened"
    );

    // Pause and resume, from this site's page.
    let (status, to) = post(
        &app,
        "/queues/emails/pause",
        &form,
        Some("http://ui.example"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        to.as_deref(),
        Some("/queues/emails?msg=paused%20queue%20emails")
    );
    assert!(inspector.queue_stats("emails").await.unwrap().paused);
    let (_, page, _) = get(&app, to.as_deref().unwrap(), None).await;
    assert!(
        page.contains("paused queue emails") && page.contains(">Resume</button>"),
        "{page}"
    );
    post(&app, "/queues/emails/resume", &form, None).await;
    assert!(!inspector.queue_stats("emails").await.unwrap().paused);

    // Cancel a pending task.
    let (status, _) = post(
        &app,
        &format!("/queues/emails/tasks/{}/cancel", ids[0]),
        &form,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(inspector.queue_stats("emails").await.unwrap().pending, 2);

    // Two tasks die; one is retried from its page, the other with "retry all dead".
    let state = rediq::server::ServerBuilder::new()
        .redis_url(redis.url())
        .queues(&["emails"])
        .build()
        .await
        .unwrap();
    let mut mux = rediq::processor::Mux::new();
    mux.handle("email:send", Refuse);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(rediq::server::Server::from(state).run_until(mux, async {
        let _ = stopped.await;
    }));
    let began = std::time::Instant::now();
    while inspector.queue_stats("emails").await.unwrap().dead < 2 {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(60),
            "the tasks die"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    inspector.pause_queue("emails").await.unwrap();
    let _ = stop.send(());
    run.await.unwrap().unwrap();
    let (_, page, _) = get(&app, &format!("/queues/emails/tasks/{}", ids[1]), None).await;
    assert!(
        page.contains(">Retry</button>") && page.contains("smtp refused"),
        "{page}"
    );
    let (status, _) = post(
        &app,
        &format!("/queues/emails/tasks/{}/retry", ids[1]),
        &form,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let s = inspector.queue_stats("emails").await.unwrap();
    assert_eq!((s.dead, s.pending), (1, 1), "it left the dead list");
    let (_, page, _) = get(&app, "/queues/emails?state=dead", None).await;
    assert!(page.contains(">Retry all dead</button>"), "{page}");
    let (_, to) = post(&app, "/queues/emails/retry-dead", &form, None).await;
    assert!(to.unwrap().contains("1%20dead%20task"));
    let s = inspector.queue_stats("emails").await.unwrap();
    assert_eq!((s.dead, s.pending), (0, 2));

    // Flush asks for the queue's name first.
    let (status, page, _) = get(&app, "/queues/emails/flush", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Type the queue's name"), "{page}");
    let (_, to) = post(
        &app,
        "/queues/emails/flush",
        &format!("{form}&confirm=email"),
        None,
    )
    .await;
    assert!(to.unwrap().contains("not%20flushed"));
    assert_eq!(inspector.queue_stats("emails").await.unwrap().pending, 2);
    let (_, to) = post(
        &app,
        "/queues/emails/flush",
        &format!("{form}&confirm=emails"),
        None,
    )
    .await;
    assert!(to.unwrap().contains("flushed%20emails%3A%202%20task"));
    assert_eq!(inspector.queue_stats("emails").await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_read_only_ui_offers_no_action_and_refuses_every_one() {
    let (_redis, inspector, ids) = seeded().await;
    let writable = router(inspector.clone(), WebConfig::default());
    let (_, page, _) = get(&writable, "/queues/emails", None).await;
    let form = format!("csrf={}", csrf_of(&page));
    let app = router(
        inspector.clone(),
        WebConfig {
            read_only: true,
            ..WebConfig::default()
        },
    );
    let (_, page, _) = get(&app, "/queues/emails", None).await;
    assert!(
        !page.contains("<form") && !page.contains("Flush…"),
        "{page}"
    );
    let (_, page, _) = get(&app, &format!("/queues/emails/tasks/{}", ids[0]), None).await;
    assert!(!page.contains("<form"), "{page}");
    for path in [
        "/queues/emails/pause".to_string(),
        "/queues/emails/flush".to_string(),
        format!("/queues/emails/tasks/{}/cancel", ids[0]),
    ] {
        let (status, _) = post(&app, &path, &form, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _, _) = get(&app, "/queues/emails/flush", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let s = inspector.queue_stats("emails").await.unwrap();
    assert_eq!((s.pending, s.paused), (3, false), "nothing happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_cron_entries_are_shown_and_entries_paused_and_resumed() {
    let (redis, inspector, _) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    let (_, page, _) = get(&app, "/servers", None).await;
    assert!(page.contains("No server is registered"), "{page}");
    // A running server shows as alive, with its queues and concurrency.
    let state = rediq::server::ServerBuilder::new()
        .redis_url(redis.url())
        .queues(&["reports"])
        .concurrency(3)
        .build()
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(rediq::server::Server::from(state).run_until(
        rediq::processor::Mux::new(),
        async {
            let _ = stopped.await;
        },
    ));
    let began = std::time::Instant::now();
    let page = loop {
        let (_, page, _) = get(&app, "/servers", None).await;
        if page.contains("<td>alive</td>") {
            break page;
        }
        assert!(
            began.elapsed() < std::time::Duration::from_secs(20),
            "{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("<td>reports</td>") && page.contains(r#"<td class="n">3</td>"#),
        "{page}"
    );
    let _ = stop.send(());
    run.await.unwrap().unwrap();

    // A periodic entry, paused and resumed from the page.
    let client = Client::builder()
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
    client
        .enqueue(
            Task::builder("report:nightly")
                .queue("reports")
                .unique_key("nightly")
                .cron("CRON_TZ=Asia/Shanghai 0 2 * * *")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, page, _) = get(&app, "/cron", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("<td>nightly</td>") && page.contains("Asia/Shanghai"),
        "{page}"
    );
    assert!(
        page.contains("<td>0 2 * * *</td>") && page.contains("<td>active</td>"),
        "{page}"
    );
    let form = format!("csrf={}&id=nightly", csrf_of(&page));
    let (status, to) = post(&app, "/cron/pause", &form, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(to.as_deref(), Some("/cron?msg=paused%20entry%20nightly"));
    assert!(inspector.cron_entries().await.unwrap()[0].paused);
    let (_, page, _) = get(&app, "/cron", None).await;
    assert!(
        page.contains("<td><span class=\"paused\">paused</span></td>"),
        "{page}"
    );
    post(&app, "/cron/resume", &form, None).await;
    assert!(!inspector.cron_entries().await.unwrap()[0].paused);
    let (status, _) = post(&app, "/cron/pause", "csrf=wrong&id=nightly", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_queue_page_shows_its_limits_group_rule_overrides_and_groups() {
    let (_redis, inspector, _) = seeded().await;
    let at_most = |n| rediq::QueueLimits {
        concurrency: Some(n),
        rate: None,
    };
    inspector
        .set_queue_limits("emails", &at_most(5))
        .await
        .unwrap();
    inspector
        .set_group_limits("emails", &at_most(2))
        .await
        .unwrap();
    inspector
        .set_group_override("emails", "acme", Some(&at_most(8)))
        .await
        .unwrap();
    let app = router(inspector, WebConfig::default());
    let (status, page, _) = get(&app, "/queues/emails", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<dt>Queue limits</dt><dd>≤5</dd>"), "{page}");
    assert!(page.contains("<dt>Every group</dt><dd>≤2</dd>"), "{page}");
    assert!(page.contains("<dt>Group acme</dt><dd>≤8</dd>"), "{page}");
    // The one grouped task of the seed: group acme, 1 pending, its override applying.
    assert!(
        page.contains(
            r#"<td>acme</td><td class="n">1</td><td class="n">0</td><td>-</td><td>≤8</td>"#
        ),
        "{page}"
    );
    let (_, overview, _) = get(&app, "/", None).await;
    assert!(overview.contains("≤5 · group ≤2"), "{overview}");
}
