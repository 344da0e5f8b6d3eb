//! `rediq web` against real Redis: the binary serves the UI on the address given, asks for the
//! token from the environment, refuses a bad setting naming the variable (never its value),
//! and stops on Ctrl-C (SIGINT).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rediq::testing::RedisServer;
use rediq::{Client, Task};

/// A free port on localhost (bound and released: another process could take it first, which
/// would fail the test loudly, not pass it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` with an optional Authorization header: the status code and the body.
fn get(port: u16, path: &str, auth: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    Some((code, out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediq_web_serves_the_ui_behind_a_token() {
    let redis = RedisServer::start();
    let client = Client::builder()
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
    client
        .enqueue(Task::builder("email:send").queue("emails").build().unwrap())
        .await
        .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rediq"))
        .args([
            "--redis-url",
            &redis.url(),
            "web",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("REDIQ_WEB_TOKEN", "t0k3n")
        .env_remove("REDIQ_WEB_USER")
        .env_remove("REDIQ_WEB_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rediq web");
    let began = Instant::now();
    let first = loop {
        if let Some(r) = get(port, "/", None) {
            break r;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "rediq web never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first.0, 401, "{}", first.1);
    assert!(!first.1.contains("t0k3n"));
    let (code, page) = get(port, "/", Some("Bearer t0k3n")).unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("href=\"/queues/emails\""), "{page}");
    // Ctrl-C stops it.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let began = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "rediq web did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains(&format!("http://127.0.0.1:{port}/")), "{err}");
}

#[test]
fn a_bad_auth_setting_is_refused_naming_the_variable_not_its_value() {
    let redis = RedisServer::start();
    let out = Command::new(env!("CARGO_BIN_EXE_rediq"))
        .args([
            "--redis-url",
            &redis.url(),
            "web",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("REDIQ_WEB_USER", "ops")
        .env_remove("REDIQ_WEB_PASSWORD")
        .env("REDIQ_WEB_TOKEN", "hunter2")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REDIQ_WEB_TOKEN") && !err.contains("hunter2"),
        "{err}"
    );
}
