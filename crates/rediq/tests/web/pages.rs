use axum::http::StatusCode;
use base64::Engine;
use rediq::web::{router, Auth, WebConfig};
use rediq::Task;

use crate::helpers::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_and_cron_entries_are_shown_and_entries_paused_and_resumed() {
    let (redis, inspector, _) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    let (_, page, _) = get(&app, "/servers", None).await;
    assert!(page.contains("No server is registered"), "{page}");
    // A running server shows as alive, with its queues and concurrency.
    let state = redis
        .server()
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
    let client = redis.client().build().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_pages_queues_and_charts_their_history_and_memory() {
    let (redis, inspector, _) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    // Three failed attempts today in `mail`: its charts say so.
    dead_tasks(&redis, &inspector, "mail", 3).await;
    let (_, page, _) = get(&app, "/queues/mail", None).await;
    let today = chrono::Utc::now().date_naive();
    assert!(
        page.contains(&format!("{today}: 0 done, 3 failed")),
        "{page}"
    );
    assert!(page.contains(&format!("{today}: 100.0% failed")), "{page}");
    assert!(page.contains("(error rate 100.0%)"), "{page}");
    let memory = inspector.memory_usage("mail").await.unwrap().unwrap();
    assert!(page.contains(&rediq::display::bytes(memory)), "{page}");

    // 55 more queues: the overview shows 50 per page, by name, and filters by name.
    let client = redis.client().build().await.unwrap();
    for n in 0..55 {
        let t = Task::builder("x")
            .queue(format!("q{n:02}"))
            .build()
            .unwrap();
        client.enqueue(t).await.unwrap();
    }
    let (status, page, _) = get(&app, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("58 queue(s) · page 1 of 2"), "{page}");
    assert_eq!(page.matches("<tr><td><a href=\"/queues/").count(), 50);
    assert!(
        page.contains(r#"<a href="/queues/emails">"#)
            && !page.contains(r#"<a href="/queues/reports">"#)
    );
    // The page's history: mail's three failures, and its error rate in its row.
    assert!(page.contains("(error rate 100.0%)"), "{page}");
    let (_, page, _) = get(&app, "/?page=1", None).await;
    assert!(page.contains(r#"<a href="/queues/reports">"#) && page.contains("page 2 of 2"));
    assert_eq!(page.matches("<tr><td><a href=\"/queues/").count(), 8);
    let (_, page, _) = get(&app, "/?q=q0", None).await;
    assert!(page.contains("10 queue(s) · page 1 of 1"), "{page}");
    let (_, page, _) = get(&app, "/?q=nothing-like-it", None).await;
    assert!(
        page.contains("No queue name contains nothing-like-it."),
        "{page}"
    );
}

#[tokio::test]
async fn search_finds_tasks_by_payload_text_and_by_id_in_any_queue() {
    let (_redis, inspector, ids) = seeded().await;
    let app = router(inspector, WebConfig::default());
    let (status, page, _) = get(
        &app,
        "/queues/emails/search?text=user1%40example.com&state=pending",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("1 pending task(s) match"), "{page}");
    assert!(page.contains(&format!(r#"href="/queues/emails/tasks/{}""#, ids[1])));
    assert!(!page.contains(&ids[0]), "{page}");
    // The results can be acted on like a list.
    assert!(page.contains(">Cancel selected</button>"), "{page}");
    let (_, page, _) = get(&app, "/queues/emails/search?text=user&state=dead", None).await;
    assert!(
        page.contains("0 dead task(s) match") && page.contains("End of the dead tasks."),
        "{page}"
    );
    let (_, page, _) = get(
        &app,
        &format!("/queues/emails/search?text={}", ids[2]),
        None,
    )
    .await;
    assert!(page.contains("1 pending task(s) match"), "{page}");

    for (path, status) in [
        ("/queues/emails/search?text=", StatusCode::BAD_REQUEST),
        (
            "/queues/emails/search?text=a&state=lost",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/queues/emails/search?text=a&cursor=zz",
            StatusCode::BAD_REQUEST,
        ),
        ("/queues/nowhere/search?text=a", StatusCode::NOT_FOUND),
        ("/search?id=not-an-id", StatusCode::BAD_REQUEST),
        (
            "/search?id=01900000-0000-7000-8000-000000000000",
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(get(&app, path, None).await.0, status, "{path}");
    }
    // By id, from the header's box: to the task's page, whichever queue holds it.
    let res = get(&app, &format!("/search?id={}", ids[0]), None).await;
    assert_eq!(res.0, StatusCode::SEE_OTHER);
    assert_eq!(
        location(&app, &format!("/search?id={}", ids[0])).await,
        Some(format!("/queues/emails/tasks/{}", ids[0]))
    );
    let (_, page, _) = get(&app, &format!("/queues/emails/tasks/{}", ids[0]), None).await;
    assert!(
        page.contains(r#"form class="find" method="get" action="/search""#),
        "{page}"
    );
}
