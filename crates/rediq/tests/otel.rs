//! The `otel` feature: the producer's trace context travels in the task and the worker's
//! `rediq.task` span continues it, so the handler runs inside the producer's trace.
//!
//! `cargo test -p rediq-queue --features otel --test otel`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rediq::{Error, Task};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::prelude::*;

mod support;
use support::{mux_with, start, wait_for, Env};

/// The current span's (trace id, span id).
fn current_ids() -> (TraceId, SpanId) {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.trace_id(), sc.span_id())
}

// One thread: the subscriber set with `set_default` is this thread's, and the server's tasks
// run on it too.
#[tokio::test(flavor = "current_thread")]
async fn parent_span_id_crosses_from_client_to_handler() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("rediq-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::new().await;
    let seen: Arc<Mutex<Vec<(TraceId, u32)>>> = Arc::default();
    let s = seen.clone();
    let server = start(
        env.server()
            .queues(&["traced"])
            .retry_delay_fn(|_, _| Duration::from_millis(10)),
        mux_with("traced", move |t| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((current_ids().0, t.retry_cnt + 1));
                if t.retry_cnt == 0 {
                    return Err(Error::handler("fail once: the retry keeps the trace"));
                }
                Ok(())
            }
        }),
    )
    .await;

    // The producer enqueues inside its own span.
    let producer = tracing::info_span!("checkout");
    let (trace_id, producer_span_id) = producer.in_scope(current_ids);
    assert_ne!(trace_id, TraceId::INVALID);
    let task = Task::builder("traced").queue("traced").build().unwrap();
    env.client
        .enqueue(task)
        .instrument(producer.clone())
        .await
        .unwrap();
    drop(producer);

    let insp = env.inspector.clone();
    let done = wait_for(Duration::from_secs(10), || {
        let insp = insp.clone();
        async move {
            insp.queue_stats("traced")
                .await
                .is_ok_and(|s| s.processed_total == 1)
        }
    })
    .await;
    server.shutdown().await;
    assert!(done, "the task was not processed");

    // The handler ran in the producer's trace, on both attempts.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(trace_id, 1), (trace_id, 2)]);

    // Each exported rediq.task span is a child of the producer's span, remote parent.
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let task_spans: Vec<_> = spans.iter().filter(|s| s.name == "rediq.task").collect();
    assert_eq!(task_spans.len(), 2, "one span per attempt: {spans:#?}");
    for s in task_spans {
        assert_eq!(s.span_context.trace_id(), trace_id);
        assert_eq!(s.parent_span_id, producer_span_id);
        assert!(s.parent_span_is_remote);
    }
    let checkout = spans
        .iter()
        .find(|s| s.name == "checkout")
        .expect("producer span");
    assert_eq!(checkout.span_context.span_id(), producer_span_id);
}
