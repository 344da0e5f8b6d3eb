//! The stored task record.
//!
//! A record is one Redis string: `[format=1][priority][16 id bytes][MessagePack body]`, or for a
//! task in a group `[format=2][priority][16 id bytes][group length][group][MessagePack body]`.
//! The fixed head lets Lua scripts read the priority, id and group with
//! `string.byte`/`string.sub` without decoding anything (groups.lua's `group_of`); the body is a MessagePack map with one-letter names in which default values are left
//! out, so a typical small task costs ~60 bytes. The record is itself the element of its band's
//! pending list (no separate hash per task): that is what keeps a pending task under 100 bytes
//! of Redis memory. Unknown body fields are ignored, so newer writers stay readable.

use serde::{Deserialize, Serialize};

use crate::task::{Task, TaskOptions, DEFAULT_MAX_RETRY, DEFAULT_TIMEOUT};
use crate::{Error, Result};

/// Format byte of the record layout of a task without a group.
const FORMAT: u8 = 1;
/// Format byte of a task in a group: the head is followed by the group's length (one byte)
/// and name.
const FORMAT_GROUPED: u8 = 2;
/// Task type of the stand-in record for bytes that could not be decoded.
pub(crate) const UNDECODABLE_TYPE: &str = "rediq:undecodable";
/// Length of the fixed head.
pub(crate) const HEAD: usize = 18;

#[derive(Serialize, Deserialize, Default)]
struct Body {
    #[serde(rename = "t")]
    task_type: String,
    #[serde(
        rename = "p",
        default,
        with = "serde_bytes",
        skip_serializing_if = "Vec::is_empty"
    )]
    payload: Vec<u8>,
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    max_retry: Option<u32>,
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    unique_key: Option<String>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(rename = "ut", default, skip_serializing_if = "Option::is_none")]
    unique_ttl_s: Option<u64>,
    #[serde(rename = "r", default, skip_serializing_if = "is_zero")]
    retry_cnt: u32,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    last_failed_at: Option<u64>,
    /// Dependencies, 16 id bytes each.
    #[serde(rename = "n", default, skip_serializing_if = "Vec::is_empty")]
    depends_on: Vec<serde_bytes::ByteBuf>,
    /// The producer's trace context (W3C `traceparent`), written with the `otel` feature.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

/// Deepest nesting accepted in a body. A body is at most three deep (the map, the list of
/// dependencies, an id); rmp-serde's own limit of 1024 lets a record of nested arrays in an
/// unknown field overflow a 2 MiB thread stack in a debug build (found by the fuzz test below),
/// which aborts the whole server on every fetch of that record.
const MAX_BODY_DEPTH: usize = 16;

/// Decodes a MessagePack body with the nesting bounded by [`MAX_BODY_DEPTH`].
fn body_from<'de, T: Deserialize<'de>>(body: &'de [u8]) -> std::result::Result<T, String> {
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_BODY_DEPTH);
    T::deserialize(&mut de).map_err(|e| e.to_string())
}

/// Only the trace context of a body (every other field is skipped).
#[derive(Deserialize)]
struct TraceOnly {
    #[serde(rename = "x", default)]
    trace: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The 16 bytes of a task id as stored.
pub(crate) fn id_bytes(id: &str) -> Result<[u8; 16]> {
    uuid::Uuid::parse_str(id)
        .map(|u| *u.as_bytes())
        .map_err(|e| Error::validation("task id", format!("{id:?} is not a UUID: {e}")))
}

/// Two bytes derived from a queue name, written into the last two bytes of every id `build()` makes
/// (random bits of a UUIDv7, past the 42-bit counter that keeps ids of one millisecond apart). They let a dependency id say which queue to look in first; they
/// are only a hint, since `Task::queue` may be changed after `build()`.
pub(crate) fn queue_hint(queue: &str) -> [u8; 2] {
    // FNV-1a, folded to 16 bits.
    let mut h: u32 = 0x811c_9dc5;
    for b in queue.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let folded = ((h >> 16) ^ (h & 0xffff)) as u16;
    folded.to_be_bytes()
}

/// A fresh time-ordered task id carrying the hint of its queue.
pub(crate) fn new_id(queue: &str) -> String {
    let mut b = *uuid::Uuid::now_v7().as_bytes();
    b[14..16].copy_from_slice(&queue_hint(queue));
    uuid::Uuid::from_bytes(b).to_string()
}

/// The id text of stored id bytes (hex when they are not 16 bytes, as in a foreign record).
pub(crate) fn id_text(bytes: &[u8]) -> String {
    match uuid::Uuid::from_slice(bytes) {
        Ok(u) => u.to_string(),
        Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// The id bytes exactly as the Lua scripts see them (`string.sub(record, 3, 18)`), also for a
/// record too short or foreign to decode.
pub(crate) fn raw_id(record: &[u8]) -> &[u8] {
    let end = record.len().min(HEAD);
    record.get(2..end).unwrap_or(&[])
}

/// Encodes a task as a record.
pub(crate) fn encode(task: &Task) -> Result<Vec<u8>> {
    encode_traced(task, None)
}

/// The trace context (W3C `traceparent`) a record carries, if any.
pub(crate) fn trace_of(record: &[u8]) -> Option<String> {
    let body = record.get(body_at(record).ok()?..)?;
    body_from::<TraceOnly>(body).ok()?.trace
}

/// Encodes a task as a record carrying a trace context.
pub(crate) fn encode_traced(task: &Task, trace: Option<&str>) -> Result<Vec<u8>> {
    let id = id_bytes(&task.id)?;
    let o = &task.options;
    let body = Body {
        task_type: task.task_type.clone(),
        payload: task.payload.clone(),
        max_retry: (o.max_retry != DEFAULT_MAX_RETRY).then_some(o.max_retry),
        timeout_ms: (o.timeout != DEFAULT_TIMEOUT).then_some(o.timeout.as_millis() as u64),
        unique_key: o.unique_key.clone(),
        delay_ms: o.delay.map(|d| d.as_millis() as u64),
        unique_ttl_s: o.unique_ttl.map(|d| d.as_secs()),
        retry_cnt: task.retry_cnt,
        last_error: task.last_error.clone(),
        last_failed_at: task.last_failed_at,
        depends_on: o
            .depends_on
            .iter()
            .flatten()
            .map(|d| id_bytes(d).map(|b| serde_bytes::ByteBuf::from(b.to_vec())))
            .collect::<Result<_>>()?,
        trace: trace.map(str::to_string),
    };
    let mut out = Vec::with_capacity(HEAD + 24 + task.payload.len() + task.task_type.len());
    out.push(FORMAT);
    // Validated to 0..=100 at build(); clamp anyway so a hand-made Task cannot corrupt the order.
    out.push(o.priority.clamp(0, 100) as u8);
    out.extend_from_slice(&id);
    if let Some(g) = &o.group {
        // Validated to 1..=128 bytes at build() and at enqueue.
        let len = u8::try_from(g.len())
            .map_err(|_| Error::validation("group", format!("{} bytes is too long", g.len())))?;
        out[0] = FORMAT_GROUPED;
        out.push(len);
        out.extend_from_slice(g.as_bytes());
    }
    rmp_serde::encode::write_named(&mut out, &body)
        .map_err(|e| Error::Serialization(format!("cannot encode task {}: {e}", task.id)))?;
    Ok(out)
}

/// Decodes a record of `queue`. The error says why, for the dead-letter entry.
pub(crate) fn decode(queue: &str, record: &[u8]) -> std::result::Result<Task, String> {
    if record.len() < HEAD {
        return Err(format!(
            "record of {} bytes is shorter than its head",
            record.len()
        ));
    }
    let at = body_at(record)?;
    let group = match record[0] {
        FORMAT_GROUPED => Some(
            std::str::from_utf8(&record[HEAD + 1..at])
                .map_err(|_| "group name is not UTF-8".to_string())?
                .to_string(),
        ),
        _ => None,
    };
    let body: Body = body_from(&record[at..])?;
    Ok(Task {
        id: id_text(&record[2..HEAD]),
        task_type: body.task_type,
        queue: queue.to_string(),
        payload: body.payload,
        options: TaskOptions {
            max_retry: body.max_retry.unwrap_or(DEFAULT_MAX_RETRY),
            timeout: body
                .timeout_ms
                .map_or(DEFAULT_TIMEOUT, std::time::Duration::from_millis),
            priority: i32::from(record[1]),
            unique_key: body.unique_key,
            delay: body.delay_ms.map(std::time::Duration::from_millis),
            unique_ttl: body.unique_ttl_s.map(std::time::Duration::from_secs),
            depends_on: (!body.depends_on.is_empty())
                .then(|| body.depends_on.iter().map(|d| id_text(d)).collect()),
            group,
            ..TaskOptions::default()
        },
        retry_cnt: body.retry_cnt,
        last_error: body.last_error,
        last_failed_at: body.last_failed_at,
    })
}

/// Where the body of a record starts: after the head, and after the group of a grouped one.
fn body_at(record: &[u8]) -> std::result::Result<usize, String> {
    match record.first() {
        Some(&FORMAT) => Ok(HEAD),
        Some(&FORMAT_GROUPED) => {
            let len = usize::from(*record.get(HEAD).ok_or("grouped record without its group")?);
            if len == 0 || record.len() < HEAD + 1 + len {
                return Err(format!(
                    "grouped record too short for its group of {len} bytes"
                ));
            }
            Ok(HEAD + 1 + len)
        }
        Some(f) => Err(format!("unknown record format {f}")),
        None => Err("empty record".into()),
    }
}

/// The group a record names (format 2), as groups.lua's `group_of` reads it.
pub(crate) fn group_of(record: &[u8]) -> Option<&[u8]> {
    if record.first() != Some(&FORMAT_GROUPED) {
        return None;
    }
    let at = body_at(record).ok()?;
    record.get(HEAD + 1..at)
}

/// A dead-letter record for bytes that could not be decoded: type `rediq:undecodable`, the raw
/// bytes as payload, and the reason as its error, so nothing is lost and the CLI can show it.
pub(crate) fn undecodable(raw: &[u8], reason: &str) -> Vec<u8> {
    let body = Body {
        task_type: UNDECODABLE_TYPE.into(),
        payload: raw.to_vec(),
        max_retry: Some(0),
        last_error: Some(format!("undecodable: {reason}")),
        last_failed_at: Some(crate::task::now_ms()),
        ..Body::default()
    };
    let mut out = vec![FORMAT, 100];
    let mut id = [0u8; 16];
    let src = raw_id(raw);
    id[..src.len()].copy_from_slice(src);
    out.extend_from_slice(&id);
    // Encoding a struct of strings and integers into a Vec cannot fail.
    rmp_serde::encode::write_named(&mut out, &body).expect("encoding a plain struct into a Vec");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips_and_stays_small() {
        let t = Task::builder("bench")
            .payload(&serde_json::json!({"n": 12345, "s": "hello world!"}))
            .unwrap()
            .build()
            .unwrap();
        let rec = encode(&t).unwrap();
        assert!(rec.len() < 64, "record is {} bytes", rec.len());
        assert_eq!(rec[1], 50);
        assert_eq!(raw_id(&rec), &id_bytes(&t.id).unwrap());
        let back = decode("default", &rec).unwrap();
        assert_eq!(back, t);

        let t = Task::builder("x")
            .queue("q")
            .priority(3)
            .max_retry(9)
            .timeout(Duration::from_millis(1500))
            .unique_key("k")
            .unique_ttl(Duration::from_secs(90))
            .delay(Duration::from_millis(2500))
            .build()
            .unwrap();
        let mut t2 = t.clone();
        t2.retry_cnt = 2;
        t2.last_error = Some("boom".into());
        t2.last_failed_at = Some(7);
        t2.options.depends_on = Some(vec![new_id("a"), new_id("b")]);
        let back = decode("q", &encode(&t2).unwrap()).unwrap();
        assert_eq!(back, t2);
    }

    #[test]
    fn ids_carry_their_queue_hint_and_stay_v7() {
        let id = new_id("emails");
        let u = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.as_bytes()[14..16], queue_hint("emails"));
        assert_ne!(queue_hint("emails"), queue_hint("payments"));
        assert_ne!(new_id("emails"), new_id("emails"));
    }

    #[test]
    fn a_grouped_record_carries_its_group_in_the_head() {
        let t = Task::builder("x")
            .group("customer-42")
            .priority(7)
            .build()
            .unwrap();
        let rec = encode_traced(&t, Some("tp")).unwrap();
        assert_eq!(rec[0], FORMAT_GROUPED);
        assert_eq!(rec[1], 7);
        assert_eq!(usize::from(rec[HEAD]), "customer-42".len());
        assert_eq!(group_of(&rec), Some(&b"customer-42"[..]));
        assert_eq!(raw_id(&rec), &id_bytes(&t.id).unwrap());
        assert_eq!(decode("default", &rec).unwrap(), t);
        assert_eq!(trace_of(&rec).as_deref(), Some("tp"));
        let plain = encode(&Task::builder("x").build().unwrap()).unwrap();
        assert_eq!(group_of(&plain), None);
        // A group longer than the record, or of length 0, is refused with a reason.
        let mut cut = rec.clone();
        cut.truncate(HEAD + 5);
        assert!(decode("default", &cut).unwrap_err().contains("too short"));
        let mut zero = rec.clone();
        zero[HEAD] = 0;
        assert!(decode("default", &zero).is_err());
        assert!(Task::builder("x").group("").build().is_err());
        assert!(Task::builder("x").group("a\nb").build().is_err());
        assert!(Task::builder("x").group("g".repeat(129)).build().is_err());
    }

    #[test]
    fn trace_context_rides_along_and_old_records_have_none() {
        let t = Task::builder("x").build().unwrap();
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let rec = encode_traced(&t, Some(tp)).unwrap();
        assert_eq!(trace_of(&rec).as_deref(), Some(tp));
        assert_eq!(decode("default", &rec).unwrap(), t);
        assert_eq!(trace_of(&encode(&t).unwrap()), None);
        assert_eq!(trace_of(b"short"), None);
    }

    /// A decoded record either is a task that encodes again (a retry re-encodes it) or an
    /// error with a reason, which the stand-in record for the dead-letter queue carries.
    fn decode_is_total(record: &[u8]) {
        match decode("q", record) {
            Ok(t) => {
                let _ = encode(&t); // may refuse (a foreign dependency id), never panic
            }
            Err(reason) => {
                assert!(!reason.is_empty(), "an error without a reason");
                let stand_in = decode("q", &undecodable(record, &reason))
                    .expect("the stand-in record decodes");
                assert_eq!(stand_in.payload, record);
            }
        }
    }

    fn arb_task() -> impl proptest::strategy::Strategy<Value = Task> {
        use proptest::prelude::*;
        (
            "[a-z:]{1,12}",
            proptest::collection::vec(any::<u8>(), 0..64),
            0i32..=100,
            0u32..20,
            1u64..100_000,
            proptest::option::of("[a-z0-9]{1,8}"),
            proptest::option::of(0u64..10_000),
            0u32..9,
            proptest::option::of(".{0,20}"),
            0usize..3,
        )
            .prop_map(
                |(ty, payload, prio, max_retry, timeout, unique, delay, retry, err, deps)| {
                    let mut b = Task::builder(ty)
                        .payload_bytes(payload)
                        .priority(prio)
                        .max_retry(max_retry)
                        .timeout(Duration::from_millis(timeout));
                    if let Some(k) = unique {
                        b = b.unique_key(k);
                    }
                    if let Some(d) = delay {
                        b = b.delay(Duration::from_millis(d));
                    }
                    let ids: Vec<String> = (0..deps).map(|_| new_id("a")).collect();
                    if !ids.is_empty() {
                        b = b.depends_on(&ids);
                    }
                    let mut t = b.build().expect("valid options");
                    t.retry_cnt = retry;
                    t.last_error = err;
                    t
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic_the_decoder(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            decode_is_total(&raw);
            // The same bytes behind a valid head reach the MessagePack decoder.
            let mut headed = vec![FORMAT, 50];
            headed.extend_from_slice(&[7u8; 16]);
            headed.extend_from_slice(&raw);
            decode_is_total(&headed);
        }

        #[test]
        fn truncated_and_mutated_records_never_panic_the_decoder(
            t in arb_task(),
            cut in 0usize..400,
            flips in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..6),
            insert in proptest::option::of((0usize..400, proptest::collection::vec(proptest::prelude::any::<u8>(), 1..8))),
        ) {
            let rec = encode(&t).unwrap();
            proptest::prop_assert_eq!(decode("default", &rec).unwrap(), t.clone());
            decode_is_total(&rec[..cut.min(rec.len())]);
            let mut m = rec.clone();
            for (at, b) in &flips {
                let i = at % m.len();
                m[i] ^= b;
            }
            if let Some((at, bytes)) = &insert {
                let i = at % (m.len() + 1);
                m.splice(i..i, bytes.iter().copied());
            }
            decode_is_total(&m);
        }
    }

    #[test]
    fn deeply_nested_and_huge_length_bodies_are_errors() {
        let mut head = vec![FORMAT, 50];
        head.extend_from_slice(&[7u8; 16]);
        // {"z": [[[[…]]]]}: an unknown field nested 100,000 deep.
        let mut deep = head.clone();
        deep.extend_from_slice(&[0x82, 0xa1, b't', 0xa1, b'x', 0xa1, b'z']);
        deep.extend(std::iter::repeat_n(0x91u8, 100_000));
        assert!(decode("q", &deep).is_err());
        // A bin32 payload and an array32 of dependencies claiming 4 GiB, with nothing behind.
        for claim in [
            &[
                0x82, 0xa1, b't', 0xa1, b'x', 0xa1, b'p', 0xc6, 0xff, 0xff, 0xff, 0xff,
            ][..],
            &[
                0x82, 0xa1, b't', 0xa1, b'x', 0xa1, b'n', 0xdd, 0xff, 0xff, 0xff, 0xff,
            ][..],
        ] {
            let mut rec = head.clone();
            rec.extend_from_slice(claim);
            decode_is_total(&rec);
            assert!(decode("q", &rec).is_err());
        }
    }

    #[test]
    fn foreign_bytes_are_reported_not_panicked_on() {
        assert!(decode("q", b"hello").is_err());
        assert!(decode("q", &[9u8; 40]).is_err());
        let mut bad = vec![FORMAT, 1];
        bad.extend_from_slice(&[0u8; 16]);
        bad.extend_from_slice(b"\xc1garbage");
        assert!(decode("q", &bad).is_err());
        let dead = undecodable(b"hello", "too short");
        let t = decode("q", &dead).unwrap();
        assert_eq!(t.task_type, "rediq:undecodable");
        assert_eq!(t.payload, b"hello");
        assert!(t.last_error.unwrap().starts_with("undecodable"));
    }
}
