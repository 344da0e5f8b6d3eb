//! Configuration of the three topologies: every URL form the docs list reaches a real private
//! cluster or sentinel set through each builder (client, server, inspector), and a mode that
//! does not match the server fails at `build()` with one sentence that names the fix, quickly,
//! and without the password.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rediq::server::ServerBuilder;
use rediq::testing::{RedisCluster, RedisSentinel, RedisServer};
use rediq::{Client, Inspector, Task};
use support::{counting_mux, start, wait_for};

/// The error of a build that must fail, as text, after checking it came within 10 s.
async fn refused<T: std::fmt::Debug>(
    build: impl std::future::Future<Output = rediq::Result<T>>,
) -> String {
    let t = Instant::now();
    let err = build.await.expect_err("the build should have failed");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}",
        t.elapsed()
    );
    let text = err.to_string();
    assert!(!text.contains("s3cret"), "password in the message: {text}");
    text
}

#[tokio::test]
async fn a_mode_that_does_not_match_the_server_fails_at_build() {
    let single = RedisServer::start();
    let cluster = RedisCluster::start();
    let ha = RedisSentinel::start();
    let port = |url: String| url.rsplit(':').next().unwrap().to_string();

    // Cluster mode against a standalone server.
    let e = refused(
        Client::builder()
            .redis_url(single.url())
            .cluster_mode()
            .build(),
    )
    .await;
    assert!(e.contains("remove .cluster_mode()"), "{e}");
    // Standalone against a cluster node.
    let e = refused(Client::builder().redis_url(cluster.seed_url()).build()).await;
    assert!(e.contains("add .cluster_mode()"), "{e}");
    // Standalone against a sentinel.
    let sentinel = format!("redis://127.0.0.1:{}", ha.sentinel_ports()[0]);
    let e = refused(ServerBuilder::new().redis_url(sentinel.clone()).build()).await;
    assert!(e.contains("add .sentinel_mode()"), "{e}");
    // Sentinel mode against a data node.
    let e = refused(
        Inspector::builder()
            .redis_url(single.url())
            .sentinel_mode()
            .build(),
    )
    .await;
    assert!(e.contains("not a Redis Sentinel"), "{e}");
    // A master name no sentinel knows.
    let e = refused(
        Client::builder()
            .redis_url(sentinel.clone())
            .sentinel_mode()
            .sentinel_master("nosuchmaster")
            .build(),
    )
    .await;
    assert!(e.contains("\"nosuchmaster\""), "{e}");
    // No sentinel reachable (a port nobody listens on), with a password in the URL.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = refused(
        Client::builder()
            .redis_url(format!(
                "redis+sentinel://:s3cret@127.0.0.1:{closed}/mymaster"
            ))
            .sentinel_mode()
            .build(),
    )
    .await;
    assert!(e.contains(&closed.to_string()), "{e}");
    // A list of hosts without a mode, a database on a cluster, two master names.
    let e = refused(Client::builder().redis_url(cluster.seed_list_url()).build()).await;
    assert!(e.contains(".cluster_mode() or .sentinel_mode()"), "{e}");
    let e = refused(
        Client::builder()
            .redis_url(format!("redis://127.0.0.1:{}/3", port(cluster.seed_url())))
            .cluster_mode()
            .build(),
    )
    .await;
    assert!(e.contains("only database 0"), "{e}");
    let e = refused(
        Client::builder()
            .redis_url(ha.url())
            .sentinel_mode()
            .sentinel_master("other")
            .build(),
    )
    .await;
    assert!(e.contains("keep one"), "{e}");
    let e = refused(
        Client::builder()
            .redis_url(single.url())
            .sentinel_master("mymaster")
            .build(),
    )
    .await;
    assert!(e.contains("add it or drop them"), "{e}");
}

/// Every builder reaches a cluster from a seed list and from one seed, and a sentinel set from
/// the `redis+sentinel://` form and from one sentinel; a server built so processes a task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builder_takes_every_url_form() {
    let cluster = RedisCluster::start();
    let ha = RedisSentinel::start();
    let one_sentinel = format!("redis://127.0.0.1:{}", ha.sentinel_ports()[0]);
    let forms: Vec<(&str, String, bool)> = vec![
        ("cluster seed list", cluster.seed_list_url(), true),
        ("cluster one seed", cluster.seed_url(), true),
        ("redis+sentinel", ha.url(), false),
        ("one sentinel, default master", one_sentinel, false),
    ];
    for (i, (form, url, is_cluster)) in forms.into_iter().enumerate() {
        let queue = format!("q{i}");
        let client = if is_cluster {
            Client::builder().redis_url(url.clone()).cluster_mode()
        } else {
            Client::builder().redis_url(url.clone()).sentinel_mode()
        }
        .build()
        .await
        .unwrap_or_else(|e| panic!("{form}: {e}"));
        let server = if is_cluster {
            ServerBuilder::new().redis_url(url.clone()).cluster_mode()
        } else {
            ServerBuilder::new().redis_url(url.clone()).sentinel_mode()
        };
        let inspector = if is_cluster {
            Inspector::builder().redis_url(url.clone()).cluster_mode()
        } else {
            Inspector::builder().redis_url(url.clone()).sentinel_mode()
        }
        .build()
        .await
        .unwrap_or_else(|e| panic!("{form}: {e}"));
        let (mux, runs) = counting_mux("t");
        let srv = start(server.queues(&[&queue]), mux).await;
        client
            .enqueue(Task::builder("t").queue(&queue).build().unwrap())
            .await
            .unwrap();
        assert!(
            wait_for(Duration::from_secs(10), || async {
                *runs.lock().unwrap() == 1
            })
            .await,
            "{form}: the task did not run"
        );
        srv.shutdown().await;
        assert!(
            inspector.queues().await.unwrap().contains(&queue),
            "{form}: the inspector does not see the queue"
        );
    }
}

/// The data nodes' password comes from the URL, the sentinels' own from `sentinel_auth`: a
/// deployment where both require one (different ones) is reached, and a wrong data password
/// is refused at build without being printed.
#[tokio::test]
async fn sentinel_and_data_node_passwords_are_separate() {
    let ha = RedisSentinel::start_with_passwords("s3cret-data", "s3cret-sentinel");
    let url = ha
        .url()
        .replacen("redis+sentinel://", "redis+sentinel://:s3cret-data@", 1);
    let client = Client::builder()
        .redis_url(url.clone())
        .sentinel_mode()
        .sentinel_auth(None, "s3cret-sentinel")
        .build()
        .await
        .expect("both passwords given");
    client
        .enqueue(Task::builder("t").queue("pw").build().unwrap())
        .await
        .unwrap();
    let e = refused(
        Client::builder()
            .redis_url(
                ha.url()
                    .replacen("redis+sentinel://", "redis+sentinel://:s3cret-wrong@", 1),
            )
            .sentinel_mode()
            .sentinel_auth(None, "s3cret-sentinel")
            .build(),
    )
    .await;
    assert!(
        e.to_lowercase().contains("auth") || e.contains("WRONGPASS"),
        "{e}"
    );
    let e = refused(Client::builder().redis_url(url).sentinel_mode().build()).await;
    assert!(e.to_lowercase().contains("auth"), "{e}");
}

/// An ACL user with a password (the default user switched off, so nothing else could work;
/// `INFO` denied, so the mode check at build takes the mode on trust)
/// reaches a standalone server and a cluster through the URL, on every builder, and no output
/// (error messages, `Debug` of a builder) shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_reach_standalone_and_cluster() {
    let single = RedisServer::start();
    let cluster = RedisCluster::start();
    let lock_down = |url: String| {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("ACL")
            .arg(&[
                "SETUSER",
                "alice",
                "on",
                ">s3cret-acl",
                "~*",
                "&*",
                "+@all",
                "-info",
            ])
            .query(&mut c)
            .unwrap();
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "default", "off"])
            .query(&mut c)
            .unwrap();
    };
    lock_down(single.url());
    for port in cluster.ports() {
        lock_down(format!("redis://127.0.0.1:{port}"));
    }
    let with_user = |url: String| url.replacen("redis://", "redis://alice:s3cret-acl@", 1);
    let single_url = with_user(single.url());
    let cluster_url = with_user(cluster.seed_list_url());
    for (form, url, cluster_mode) in [
        ("standalone", &single_url, false),
        ("cluster", &cluster_url, true),
    ] {
        let b = Client::builder().redis_url(url.clone());
        let b = if cluster_mode { b.cluster_mode() } else { b };
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cret"), "{form}: {shown}");
        let client = b.build().await.unwrap_or_else(|e| panic!("{form}: {e}"));
        let server = ServerBuilder::new().redis_url(url.clone());
        let server = if cluster_mode {
            server.cluster_mode()
        } else {
            server
        };
        let (mux, runs) = counting_mux("t");
        let srv = start(server.queues(&["acl-a", "acl-b"]), mux).await;
        for q in ["acl-a", "acl-b"] {
            client
                .enqueue(Task::builder("t").queue(q).build().unwrap())
                .await
                .unwrap();
        }
        assert!(
            wait_for(Duration::from_secs(10), || async {
                *runs.lock().unwrap() == 2
            })
            .await,
            "{form}: the tasks did not run"
        );
        srv.shutdown().await;
        // A wrong password: refused at build, and not shown.
        let wrong = url.replace("s3cret-acl", "s3cret-wrong");
        let b = Client::builder().redis_url(wrong);
        let b = if cluster_mode { b.cluster_mode() } else { b };
        let e = refused(b.build()).await;
        assert!(e.contains("alice"), "{form}: {e}");
    }
}

/// How long a running task's cancellation takes to reach its handler (from `cancel_task` to
/// the handler's future being dropped), on one server and on a cluster, where the classic
/// `PUBLISH` is forwarded to every node over the cluster bus: printed for
/// docs/deployment.md, and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_reaches_its_handler_on_every_topology() {
    /// Notes when the handler's future is dropped.
    struct Dropped(Arc<Mutex<HashMap<String, Instant>>>, String);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0
                .lock()
                .unwrap()
                .insert(self.1.clone(), Instant::now());
        }
    }
    for name in ["standalone", "cluster"] {
        let redis = rediq::testing::Topology::start(name);
        let client = redis.client().build().await.unwrap();
        let inspector = Inspector::from_client(&client);
        let dropped: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let started: Arc<Mutex<Vec<String>>> = Arc::default();
        let (d, s) = (dropped.clone(), started.clone());
        let mux = support::mux_with("t", move |t: Task| {
            let guard = Dropped(d.clone(), t.id.clone());
            s.lock().unwrap().push(t.id.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let queues = ["cx-a", "cx-b", "cx-c", "cx-d"];
        let srv = start(redis.server().queues(&queues).concurrency(40), mux).await;
        let mut ids = Vec::new();
        for i in 0..20 {
            let q = queues[i % queues.len()];
            let t = Task::builder("t").queue(q).build().unwrap();
            ids.push((q, client.enqueue(t).await.unwrap()));
        }
        assert!(
            wait_for(Duration::from_secs(10), || async {
                started.lock().unwrap().len() == 20
            })
            .await,
            "{name}: not every task started"
        );
        let mut took = Vec::new();
        for (q, id) in &ids {
            let t0 = Instant::now();
            let outcome = inspector.cancel_task(q, id).await.unwrap();
            assert_eq!(outcome, rediq::CancelOutcome::Signalled, "{name}");
            assert!(
                wait_for(Duration::from_secs(5), || async {
                    dropped.lock().unwrap().contains_key(id)
                })
                .await,
                "{name}: the cancellation of {id} never reached its handler"
            );
            took.push(dropped.lock().unwrap()[id].saturating_duration_since(t0));
        }
        took.sort();
        eprintln!(
            "cancel {name}: median {:?}, slowest {:?} over {} running tasks",
            took[took.len() / 2],
            took[took.len() - 1],
            took.len()
        );
        srv.shutdown().await;
    }
}

/// The database number in a URL is used where it applies: a standalone server and a sentinel
/// deployment's master write to it, and nothing lands in database 0.
#[tokio::test]
async fn the_database_number_is_used_on_standalone_and_sentinel() {
    let single = RedisServer::start();
    let ha = RedisSentinel::start();
    let dbsize = |url: String, db: i64| {
        let mut c = redis::Client::open(format!("{url}/{db}"))
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap()
    };
    let master = format!("redis://127.0.0.1:{}", ha.current_master_port().unwrap());
    for (form, url, data, sentinel) in [
        (
            "standalone",
            format!("{}/3", single.url()),
            single.url(),
            false,
        ),
        ("sentinel", format!("{}/3", ha.url()), master, true),
    ] {
        let b = Client::builder().redis_url(url);
        let b = if sentinel { b.sentinel_mode() } else { b };
        let client = b.build().await.unwrap_or_else(|e| panic!("{form}: {e}"));
        client
            .enqueue(Task::builder("t").queue("db").build().unwrap())
            .await
            .unwrap();
        assert!(dbsize(data.clone(), 3) > 0, "{form}: nothing in database 3");
        assert_eq!(dbsize(data, 0), 0, "{form}: keys in database 0");
    }
}

/// A password may hold a comma (or other URL sub-delimiters): only a comma in the host part
/// names several hosts.
#[tokio::test]
async fn a_comma_in_a_password_is_not_a_host_list() {
    let single = RedisServer::start();
    let mut c = redis::Client::open(single.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "requirepass", "s3cret,with;delims"])
        .query(&mut c)
        .unwrap();
    let url = single
        .url()
        .replacen("redis://", "redis://:s3cret,with;delims@", 1);
    let client = Client::builder()
        .redis_url(url)
        .build()
        .await
        .expect("a comma in the password is fine");
    client
        .enqueue(Task::builder("t").queue("pw").build().unwrap())
        .await
        .unwrap();
}
