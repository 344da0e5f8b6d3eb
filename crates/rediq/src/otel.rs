//! OpenTelemetry trace propagation from producer to worker (cargo feature `otel`).
//!
//! This module owns the one format the trace context travels in: a W3C `traceparent` string
//! (`00-<trace id>-<span id>-<flags>`) stored in the task record. At enqueue, the client writes
//! the context of the caller's current `tracing` span (as seen by `tracing-opentelemetry`); the
//! worker makes that context the parent of the task's `rediq.task` span, so the handler's spans
//! join the producer's trace. Retries keep the context. Without the feature (or without an
//! OpenTelemetry layer in the subscriber) nothing is written and nothing is read.
//!
//! No global propagator is used: the format is written and parsed here, with the
//! `opentelemetry` API crate's types only.

/// The current span's trace context as a `traceparent`, or `None` (feature off, no
/// OpenTelemetry layer, or no valid span).
#[cfg(feature = "otel")]
pub(crate) fn producer_context() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    ))
}

/// Without the `otel` feature: never a context.
#[cfg(not(feature = "otel"))]
pub(crate) fn producer_context() -> Option<String> {
    None
}

/// Makes the context in `traceparent` the parent of `span` (a task's span, not yet entered).
/// A malformed value is ignored with a debug event: tracing must never fail a task.
#[cfg(feature = "otel")]
pub(crate) fn continue_trace(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::trace::{SpanContext, TraceContextExt, TraceState};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let Some(sc) = parse(traceparent) else {
        tracing::debug!(traceparent, "ignoring a malformed trace context");
        return;
    };
    let sc = SpanContext::new(
        sc.0,
        sc.1,
        sc.2,
        true, // it comes from another process
        TraceState::default(),
    );
    let cx = opentelemetry::Context::new().with_remote_span_context(sc);
    // Fails only when the span is disabled or no OpenTelemetry layer is installed: then there
    // is no trace to continue.
    let _ = span.set_parent(cx);
}

/// Without the `otel` feature: nothing to continue.
#[cfg(not(feature = "otel"))]
pub(crate) fn continue_trace(_span: &tracing::Span, _traceparent: &str) {}

/// The trace context a leased record carries; without the feature it is not even read.
pub(crate) fn trace_of(record: &[u8]) -> Option<String> {
    if cfg!(feature = "otel") {
        crate::broker::record::trace_of(record)
    } else {
        None
    }
}

#[cfg(feature = "otel")]
fn parse(
    tp: &str,
) -> Option<(
    opentelemetry::trace::TraceId,
    opentelemetry::trace::SpanId,
    opentelemetry::trace::TraceFlags,
)> {
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
    let mut parts = tp.split('-');
    if parts.next()? != "00" {
        return None;
    }
    let trace = TraceId::from_hex(parts.next().filter(|p| p.len() == 32)?).ok()?;
    let span = SpanId::from_hex(parts.next().filter(|p| p.len() == 16)?).ok()?;
    let flags = u8::from_str_radix(parts.next().filter(|p| p.len() == 2)?, 16).ok()?;
    if parts.next().is_some() || trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some((trace, span, TraceFlags::new(flags)))
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use super::*;

    #[test]
    fn parses_only_well_formed_traceparents() {
        let ok = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (t, s, f) = parse(ok).unwrap();
        assert_eq!(format!("00-{t}-{s}-{:02x}", f.to_u8()), ok);
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-zzz-b7ad6b7169203331-01",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
