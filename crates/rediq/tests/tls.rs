//! TLS (`rediss://`, cargo feature `tls`): a private server, a private cluster and a private
//! sentinel set that listen with TLS only, under a throwaway certificate authority. Client, server and inspector reach
//! them when given the CA's certificate, tasks are processed (on every shard of the cluster,
//! blocking waits and the cancel subscription included), and without the certificate `build()`
//! refuses the server's certificate.
//!
//! `cargo test -p rediq-queue --features tls --test tls`

mod support;

use std::time::Duration;

use rediq::server::ServerBuilder;
use rediq::testing::{RedisCluster, RedisSentinel, RedisServer, TlsFiles};
use rediq::{Client, Inspector, Task};
use support::{counting_mux, start, wait_for};

#[derive(Clone, Copy)]
enum Mode {
    Standalone,
    Cluster,
    Sentinel,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topology_over_tls() {
    let tls = TlsFiles::generate().expect("openssl makes the certificates");
    let single = RedisServer::start_tls(&tls);
    let cluster = RedisCluster::start_tls(&tls);
    let ha = RedisSentinel::start_tls(&tls);
    let queues = ["tls-a", "tls-b", "tls-c", "tls-d"];
    for (form, url, mode) in [
        ("standalone", single.url(), Mode::Standalone),
        ("cluster", cluster.seed_list_url(), Mode::Cluster),
        ("sentinel", ha.url(), Mode::Sentinel),
    ] {
        assert!(url.starts_with("rediss"), "{url}");
        let mode_client = |b: rediq::ClientBuilder| match mode {
            Mode::Standalone => b,
            Mode::Cluster => b.cluster_mode(),
            Mode::Sentinel => b.sentinel_mode(),
        };
        // Without the CA, the server's certificate is refused at build.
        let e = mode_client(Client::builder().redis_url(url.clone()))
            .build()
            .await
            .expect_err("an unknown CA must be refused");
        assert!(
            e.to_string().to_lowercase().contains("certificate")
                || e.to_string().to_lowercase().contains("tls"),
            "{form}: {e}"
        );
        let client = mode_client(Client::builder().redis_url(url.clone()))
            .tls_root_certificate(tls.ca_pem())
            .build()
            .await
            .unwrap_or_else(|e| panic!("{form}: {e}"));
        let server = ServerBuilder::new()
            .redis_url(url.clone())
            .tls_root_certificate(tls.ca_pem());
        let server = match mode {
            Mode::Standalone => server,
            Mode::Cluster => server.cluster_mode(),
            Mode::Sentinel => server.sentinel_mode(),
        };
        let inspector = Inspector::builder()
            .redis_url(url.clone())
            .tls_root_certificate(tls.ca_pem());
        let inspector = match mode {
            Mode::Standalone => inspector,
            Mode::Cluster => inspector.cluster_mode(),
            Mode::Sentinel => inspector.sentinel_mode(),
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
