use axum::http::StatusCode;
use rediq::web::{router, WebConfig};
use rediq::Task;

use crate::helpers::*;

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

    // Guards: no token, a wrong one (on every action), another site's page.
    for path in every_action(&ids[0]) {
        let (status, _) = post(&app, &path, "", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "no token at all: {path}");
        let (status, _) = post(&app, &path, "csrf=nope&id=x&op=delete&scope=queue", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a wrong token: {path}");
    }
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
    until_dead(&redis, &inspector, "emails", 2).await;
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
        !page.contains(r#"method="post""#)
            && !page.contains("Flush…")
            && !page.contains("checkbox"),
        "{page}"
    );
    let (_, page, _) = get(&app, &format!("/queues/emails/tasks/{}", ids[0]), None).await;
    assert!(!page.contains(r#"method="post""#), "{page}");
    for path in every_action(&ids[0]) {
        let (status, _) = post(&app, &path, &form, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let (status, _, _) = get(&app, "/queues/emails/flush", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let s = inspector.queue_stats("emails").await.unwrap();
    assert_eq!((s.pending, s.paused), (3, false), "nothing happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_tasks_are_retried_deleted_and_cancelled_in_bulk_and_one_is_deleted() {
    let (redis, inspector, ids) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    let dead = dead_tasks(&redis, &inspector, "mail", 3).await;
    let (_, page, _) = get(&app, "/queues/mail?state=dead", None).await;
    assert!(
        page.contains(">Retry selected</button>")
            && page.contains(">Delete selected</button>")
            && page
                .matches(r#"class="pick" type="checkbox" name="id""#)
                .count()
                == 3,
        "{page}"
    );
    let form = format!("csrf={}", csrf_of(&page));
    let bulk = |op: &str, picked: &[&String]| {
        let mut f = format!("{form}&state=dead&op={op}");
        for id in picked {
            f.push_str(&format!("&id={id}"));
        }
        f
    };

    // Guarded like every action.
    let (status, _) = post(&app, "/queues/mail/bulk", "op=delete&id=x", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, to) = post(
        &app,
        "/queues/mail/bulk",
        &bulk("retry", &[&dead[0], &dead[1]]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(to
        .as_deref()
        .unwrap()
        .starts_with("/queues/mail?state=dead&msg="));
    assert_eq!(said(to), "2 task(s) run again");
    let s = inspector.queue_stats("mail").await.unwrap();
    assert_eq!((s.dead, s.pending), (1, 2), "they left the dead list");

    let (_, to) = post(
        &app,
        "/queues/mail/bulk",
        &bulk("delete", &[&dead[2], &dead[0]]),
        None,
    )
    .await;
    assert_eq!(said(to), "2 task(s) deleted");
    let s = inspector.queue_stats("mail").await.unwrap();
    assert_eq!((s.dead, s.pending), (0, 1));
    assert!(inspector.task(&dead[2], None).await.unwrap().is_none());

    let (_, to) = post(
        &app,
        "/queues/mail/bulk",
        &bulk("cancel", &[&dead[1], &dead[2]]),
        None,
    )
    .await;
    assert_eq!(
        said(to),
        "1 task(s) cancelled; 1 had moved on and were left alone"
    );
    assert_eq!(inspector.queue_stats("mail").await.unwrap().pending, 0);

    let (_, to) = post(
        &app,
        "/queues/mail/bulk",
        &bulk("explode", &[&dead[1]]),
        None,
    )
    .await;
    let msg = said(to);
    assert!(
        msg.starts_with("failed:") && msg.contains("explode"),
        "{msg}"
    );
    let (_, to) = post(&app, "/queues/mail/bulk", &bulk("retry", &[]), None).await;
    assert_eq!(said(to), "no task selected");

    // One task, from its page: a pending one is deleted; the page offers it.
    let (_, page, _) = get(&app, &format!("/queues/emails/tasks/{}", ids[0]), None).await;
    assert!(page.contains(">Delete</button>"), "{page}");
    let (_, to) = post(
        &app,
        &format!("/queues/emails/tasks/{}/delete", ids[0]),
        &form,
        None,
    )
    .await;
    assert_eq!(said(to), format!("task {} deleted", ids[0]));
    assert_eq!(inspector.queue_stats("emails").await.unwrap().pending, 2);
    let (_, to) = post(
        &app,
        &format!("/queues/emails/tasks/{}/delete", ids[0]),
        &form,
        None,
    )
    .await;
    assert!(said(to).contains("not deleted"));
}

#[tokio::test]
async fn limits_are_changed_from_the_queue_page() {
    let (_redis, inspector, _) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    let (_, page, _) = get(&app, "/queues/emails", None).await;
    assert!(page.contains(">Set the queue's limits</button>"), "{page}");
    let form = format!("csrf={}", csrf_of(&page));
    let set = |fields: &str| format!("{form}&{fields}");

    let (_, to) = post(
        &app,
        "/queues/emails/limits",
        &set("scope=queue&concurrency=5&rate=100%2F1s"),
        None,
    )
    .await;
    assert_eq!(said(to), "limits of emails: ≤5 100/1s");
    let l = inspector.queue_limits("emails").await.unwrap();
    assert_eq!(l.to_string(), "≤5 100/1s");
    let (_, page, _) = get(&app, "/queues/emails", None).await;
    assert!(
        page.contains(r#"name="concurrency" size="5" placeholder="none" value="5""#),
        "{page}"
    );

    post(
        &app,
        "/queues/emails/limits",
        &set("scope=rule&concurrency=2"),
        None,
    )
    .await;
    post(
        &app,
        "/queues/emails/limits",
        &set("scope=group&group=acme&rate=10%2F1m"),
        None,
    )
    .await;
    let g = inspector.group_limits("emails").await.unwrap();
    assert_eq!(g.rule.to_string(), "≤2");
    assert_eq!(g.for_group("acme").to_string(), "10/1m");
    let (_, page, _) = get(&app, "/queues/emails", None).await;
    assert!(page.contains("<dt>Group acme</dt><dd>10/1m</dd>"), "{page}");

    // Blank: no limit (a blank override gives the group back to the rule).
    let (_, to) = post(
        &app,
        "/queues/emails/limits",
        &set("scope=group&group=acme"),
        None,
    )
    .await;
    assert_eq!(said(to), "group acme follows the rule of emails again");
    assert_eq!(
        inspector
            .group_limits("emails")
            .await
            .unwrap()
            .for_group("acme")
            .to_string(),
        "≤2"
    );
    post(
        &app,
        "/queues/emails/limits",
        &set("scope=queue&concurrency=&rate="),
        None,
    )
    .await;
    assert!(inspector.queue_limits("emails").await.unwrap().is_empty());

    // Bad values are refused naming themselves, and nothing changes.
    for (fields, named) in [
        ("scope=queue&rate=lots", "lots"),
        ("scope=queue&concurrency=0", "0"),
        ("scope=queue&concurrency=many", "many"),
        ("scope=galaxy", "galaxy"),
    ] {
        let (_, to) = post(&app, "/queues/emails/limits", &set(fields), None).await;
        let msg = said(to);
        assert!(
            msg.starts_with("failed:") && msg.contains(named),
            "{fields}: {msg}"
        );
    }
    assert!(inspector.queue_limits("emails").await.unwrap().is_empty());
}

#[tokio::test]
async fn queue_names_that_need_encoding_and_hostile_payloads_are_safe() {
    let (redis, inspector, _) = seeded().await;
    let app = router(inspector.clone(), WebConfig::default());
    let odd = "a?b&c/d#e%50";
    let client = redis.client().build().await.unwrap();
    let id = client
        .enqueue(
            Task::builder("x")
                .queue(odd)
                .payload(&serde_json::json!({"note": "<script>alert(1)</script>"}))
                .unwrap()
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let link = "/queues/a%3Fb%26c%2Fd%23e%2550";
    let (_, page, _) = get(&app, "/", None).await;
    assert!(page.contains(&format!(r#"href="{link}""#)), "{page}");
    let (status, page, _) = get(&app, link, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!(r#"href="{link}/tasks/{id}""#)),
        "{page}"
    );
    let (status, page, _) = get(&app, &format!("{link}/tasks/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.contains("<script>"),
        "escaped: {page}"
    );
    // An action comes back to the same queue, and did act on it.
    let form = format!("csrf={}", csrf_of(&page));
    let (_, to) = post(&app, &format!("{link}/pause"), &form, None).await;
    assert_eq!(
        to.as_deref(),
        Some(format!("{link}?msg=paused%20queue%20a%3Fb%26c%2Fd%23e%2550").as_str())
    );
    assert!(inspector.queue_stats(odd).await.unwrap().paused);

    // A page number past any end is an empty page, not a failure.
    let (status, page, _) = get(&app, "/queues/emails?page=18446744073709551615", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("No pending tasks on this page."), "{page}");

    // Bulk actions are bounded.
    let mut f = format!("{form}&op=delete");
    for _ in 0..101 {
        f.push_str(&format!("&id={id}"));
    }
    let (_, to) = post(&app, "/queues/emails/bulk", &f, None).await;
    let msg = said(to);
    assert!(
        msg.starts_with("failed:") && msg.contains("101 tasks"),
        "{msg}"
    );

    // Behind a proxy that rewrites Host, the browser's host comes as X-Forwarded-Host.
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("{link}/resume"))
        .header("host", "127.0.0.1:8080")
        .header("x-forwarded-host", "ops.example")
        .header("origin", "https://ops.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(form.clone()))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(!inspector.queue_stats(odd).await.unwrap().paused);
}
