//! TLS (`rediss://`, cargo feature `tls`): a private server and a private cluster that listen
//! with TLS only, under a throwaway certificate authority. Client, server and inspector reach
//! them when given the CA's certificate, tasks are processed (on every shard of the cluster,
//! blocking waits and the cancel subscription included), and without the certificate `build()`
//! refuses the server's certificate.
//!
//! `cargo test -p rediq --features tls --test tls`

mod support;

use std::time::Duration;

use rediq::server::ServerBuilder;
use rediq::testing::{RedisCluster, RedisServer, TlsFiles};
use rediq::{Client, Inspector, Task};
use support::{counting_mux, start, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_and_cluster_over_tls() {
    let tls = TlsFiles::generate().expect("openssl makes the certificates");
    let single = RedisServer::start_tls(&tls);
    let cluster = RedisCluster::start_tls(&tls);
    let queues = ["tls-a", "tls-b", "tls-c", "tls-d"];
    for (form, url, cluster_mode) in [
        ("standalone", single.url(), false),
        ("cluster", cluster.seed_list_url(), true),
    ] {
        assert!(url.starts_with("rediss://"), "{url}");
        let mode = |b: rediq::ClientBuilder| if cluster_mode { b.cluster_mode() } else { b };
        // Without the CA, the server's certificate is refused at build.
        let e = mode(Client::builder().redis_url(url.clone()))
            .build()
            .await
            .expect_err("an unknown CA must be refused");
        assert!(
            e.to_string().to_lowercase().contains("certificate")
                || e.to_string().to_lowercase().contains("tls"),
            "{form}: {e}"
        );
        let client = mode(Client::builder().redis_url(url.clone()))
            .tls_root_certificate(tls.ca_pem())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let server = ServerBuilder::new()
            .redis_url(url.clone())
            .tls_root_certificate(tls.ca_pem());
        let server = if cluster_mode {
            server.cluster_mode()
        } else {
            server
        };
        let inspector = Inspector::builder()
            .redis_url(url.clone())
            .tls_root_certificate(tls.ca_pem());
        let inspector = if cluster_mode {
            inspector.cluster_mode()
        } else {
            inspector
        }
        .build()
        .await
        .unwrap_or_else(|e| panic!("{form}: {e}"));
        let (mux, runs) = counting_mux("t");
        let srv = start(server.queues(&queues), mux).await;
        // Enqueued while the server idles: its blocking waits (one per queue on the cluster)
        // run over TLS too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for q in queues {
            client
                .enqueue(Task::builder("t").queue(q).build().unwrap())
                .await
                .unwrap();
        }
        assert!(
            wait_for(Duration::from_secs(10), || async {
                *runs.lock().unwrap() == queues.len() as u32
            })
            .await,
            "{form}: ran {} of {}",
            runs.lock().unwrap(),
            queues.len()
        );
        srv.shutdown().await;
        for q in queues {
            assert_eq!(
                inspector.queue_stats(q).await.unwrap().processed_total,
                1,
                "{form}: queue {q}"
            );
        }
    }
}
