//! The broker's transitions against a real redis-server: fencing, and a property test that runs
//! random sequences of enqueue / fetch / complete / fail / kill / lease-expiry / recovery /
//! forwarding against an in-memory model of the task states.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::testing::RedisServer;
use crate::Task;

const Q: &str = "model";
const NO_LIMITS: DeadLimits = DeadLimits {
    max_count: 1_000_000,
    max_age: Duration::from_secs(3600),
};

fn new_task(priority: i32) -> (String, NewTask) {
    let t = Task::builder("m")
        .queue(Q)
        .priority(priority)
        .build()
        .unwrap();
    let rec = record::encode(&t).unwrap();
    (
        t.id,
        NewTask {
            record: rec,
            delay_ms: 0,
            unique: None,
        },
    )
}

impl Broker {
    /// Makes a lease look expired (test only).
    async fn expire_lease(&self, queue: &str, id: &[u8]) {
        let mut c = self.conn.clone();
        let _: () = c.zadd(QueueKeys::new(queue).lease, id, 0).await.unwrap();
    }

    async fn flushall(&self) {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    }
}

#[tokio::test]
async fn stale_holder_is_fenced_off_everywhere() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let (id, nt) = new_task(50);
    b.enqueue(Q, &[nt], EnqueueMode::Each).await.unwrap();
    let first = b
        .fetch(Q, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.records.len(), 1);
    let raw = record::raw_id(&first.records[0]).to_vec();
    assert_eq!(record::id_text(&raw), id);

    // Not expired yet: the recoverer sees nothing.
    assert!(b.expired(Q, 10).await.unwrap().is_empty());
    b.expire_lease(Q, &raw).await;
    let exp = b.expired(Q, 10).await.unwrap();
    assert_eq!(exp.len(), 1);
    assert_eq!(exp[0].token, first.token);
    assert_eq!(
        b.requeue(Q, &[(raw.clone(), exp[0].token, None)], true)
            .await
            .unwrap(),
        1
    );

    let second = b
        .fetch(Q, 10, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert!(second.token > first.token);
    let stale = Ack {
        id: raw.clone(),
        token: first.token,
        unique_key: None,
    };
    // The first holder wakes up late: every transition it tries is refused.
    assert_eq!(
        b.complete(Q, std::slice::from_ref(&stale), None)
            .await
            .unwrap(),
        vec![0]
    );
    assert!(!b
        .retry(Q, &raw, first.token, &first.records[0], Duration::ZERO)
        .await
        .unwrap());
    assert!(!b
        .kill(
            Q,
            &raw,
            first.token,
            &first.records[0],
            None,
            NO_LIMITS,
            false
        )
        .await
        .unwrap());
    assert_eq!(
        b.extend(Q, &[(raw.clone(), first.token)], Duration::from_secs(60))
            .await
            .unwrap(),
        vec![0]
    );
    assert_eq!(
        b.requeue(Q, &[(raw.clone(), first.token, None)], false)
            .await
            .unwrap(),
        0
    );
    // The new owner's state is untouched, and its ack lands.
    let st = b.stats(Q).await.unwrap();
    assert_eq!(
        (st.active, st.pending, st.retry, st.dead, st.processed_total),
        (1, 0, 0, 0, 0)
    );
    let fresh = Ack {
        token: second.token,
        ..stale
    };
    assert!(b.complete(Q, &[fresh], None).await.unwrap().is_empty());
    let st = b.stats(Q).await.unwrap();
    assert_eq!((st.active, st.processed_total), (0, 1));
}

#[tokio::test]
async fn requeue_without_expiry_check_ignores_renewed_leases_only_when_asked() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let (_, nt) = new_task(10);
    b.enqueue(Q, &[nt], EnqueueMode::Each).await.unwrap();
    let f = b
        .fetch(Q, 1, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let raw = record::raw_id(&f.records[0]).to_vec();
    // The recoverer must not take a task whose lease is still valid...
    assert_eq!(
        b.requeue(Q, &[(raw.clone(), f.token, None)], true)
            .await
            .unwrap(),
        0
    );
    assert!(!b
        .kill(Q, &raw, f.token, &f.records[0], None, NO_LIMITS, true)
        .await
        .unwrap());
    // ...while shutdown puts it back regardless, unchanged and at its old place.
    assert_eq!(
        b.requeue(Q, &[(raw, f.token, None)], false).await.unwrap(),
        1
    );
    let again = b
        .fetch(Q, 1, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.records, f.records);
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(i32),
    Fetch(usize),
    Complete(usize),
    StaleComplete(usize),
    Fail(usize),
    Kill(usize),
    Expire(usize),
    Recover,
    Forward,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4i32).prop_map(|p| Op::Enqueue(p * 33)),
        3 => (1..4usize).prop_map(Op::Fetch),
        2 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::StaleComplete),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Kill),
        1 => any::<usize>().prop_map(Op::Expire),
        1 => Just(Op::Recover),
        1 => Just(Op::Forward),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending { prio: i32, seq: u64 },
    Active { token: u64, prio: i32, seq: u64 },
    Retry { prio: i32, order: u64 },
    Dead,
    Done,
}

#[derive(Default)]
struct Model {
    tasks: HashMap<Vec<u8>, State>,
    /// Deliveries handed out, as (id, token, record); some may have been taken over since.
    held: Vec<(Vec<u8>, u64, Vec<u8>)>,
    seq: u64,
    fails: u64,
    processed: u64,
}

impl Model {
    fn count(&self, f: impl Fn(&State) -> bool) -> u64 {
        self.tasks.values().filter(|s| f(s)).count() as u64
    }
    fn owns(&self, id: &[u8], token: u64) -> bool {
        matches!(self.tasks.get(id), Some(State::Active { token: t, .. }) if *t == token)
    }
}

async fn check(b: &Broker, ops: Vec<Op>) -> Result<(), TestCaseError> {
    b.flushall().await;
    let mut m = Model::default();
    let lease = Duration::from_secs(60);
    for op in ops {
        match op {
            Op::Enqueue(p) => {
                let (id, nt) = new_task(p);
                b.enqueue(Q, &[nt], EnqueueMode::Each).await.unwrap();
                m.seq += 1;
                m.tasks.insert(
                    record::id_bytes(&id).unwrap().to_vec(),
                    State::Pending {
                        prio: p,
                        seq: m.seq,
                    },
                );
            }
            Op::Fetch(n) => {
                let mut pending: Vec<(i32, u64, Vec<u8>)> = m
                    .tasks
                    .iter()
                    .filter_map(|(id, s)| match s {
                        State::Pending { prio, seq } => Some((*prio, *seq, id.clone())),
                        _ => None,
                    })
                    .collect();
                pending.sort();
                let want: Vec<Vec<u8>> = pending.iter().take(n).map(|p| p.2.clone()).collect();
                let got = b.fetch(Q, n, lease).await.unwrap();
                let (token, records) = got.map_or((0, vec![]), |f| (f.token, f.records));
                let ids: Vec<Vec<u8>> =
                    records.iter().map(|r| record::raw_id(r).to_vec()).collect();
                prop_assert_eq!(
                    &ids,
                    &want,
                    "fetch order: lowest priority value first, FIFO"
                );
                for (r, (prio, seq, id)) in records.into_iter().zip(pending) {
                    m.tasks
                        .insert(id.clone(), State::Active { token, prio, seq });
                    m.held.push((id, token, r));
                }
            }
            Op::Complete(i) | Op::StaleComplete(i) | Op::Fail(i) | Op::Kill(i) | Op::Expire(i)
                if m.held.is_empty() =>
            {
                let _ = i;
            }
            Op::Complete(i) => {
                let (id, token, _) = m.held.remove(i % m.held.len());
                let owns = m.owns(&id, token);
                let stale = b
                    .complete(
                        Q,
                        &[Ack {
                            id: id.clone(),
                            token,
                            unique_key: None,
                        }],
                        None,
                    )
                    .await
                    .unwrap();
                prop_assert_eq!(
                    stale.is_empty(),
                    owns,
                    "ack accepted iff the token is current"
                );
                if owns {
                    m.tasks.insert(id, State::Done);
                    m.processed += 1;
                }
            }
            Op::StaleComplete(i) => {
                let (id, token, _) = m.held[i % m.held.len()].clone();
                let stale = b
                    .complete(
                        Q,
                        &[Ack {
                            id,
                            token: token + 1_000_000,
                            unique_key: None,
                        }],
                        None,
                    )
                    .await
                    .unwrap();
                prop_assert_eq!(stale, vec![0]);
            }
            Op::Fail(i) => {
                let (id, token, rec) = m.held.remove(i % m.held.len());
                let owns = m.owns(&id, token);
                let ok = b.retry(Q, &id, token, &rec, Duration::ZERO).await.unwrap();
                prop_assert_eq!(ok, owns);
                if let (true, Some(State::Active { prio, .. })) = (owns, m.tasks.get(&id).copied())
                {
                    m.fails += 1;
                    m.tasks.insert(
                        id,
                        State::Retry {
                            prio,
                            order: m.fails,
                        },
                    );
                }
                // Retry tasks become due in the order they failed; a distinct millisecond per
                // failure keeps that order free of ties.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Op::Kill(i) => {
                let (id, token, rec) = m.held.remove(i % m.held.len());
                let owns = m.owns(&id, token);
                let ok = b
                    .kill(Q, &id, token, &rec, None, NO_LIMITS, false)
                    .await
                    .unwrap();
                prop_assert_eq!(ok, owns);
                if owns {
                    m.tasks.insert(id, State::Dead);
                }
            }
            Op::Expire(i) => {
                let (id, _, _) = m.held[i % m.held.len()].clone();
                if matches!(m.tasks.get(&id), Some(State::Active { .. })) {
                    b.expire_lease(Q, &id).await;
                }
            }
            Op::Recover => {
                let expired = b.expired(Q, 1000).await.unwrap();
                let items: Vec<Requeue> = expired
                    .iter()
                    .map(|e| (e.id.clone(), e.token, None))
                    .collect();
                let moved = b.requeue(Q, &items, true).await.unwrap();
                prop_assert_eq!(moved as usize, items.len());
                for e in expired {
                    match m.tasks.get(&e.id).copied() {
                        Some(State::Active { token, prio, seq }) => {
                            prop_assert_eq!(token, e.token);
                            m.tasks.insert(e.id, State::Pending { prio, seq });
                        }
                        other => {
                            prop_assert!(false, "expired lease of a task in state {:?}", other)
                        }
                    }
                }
            }
            Op::Forward => {
                let moved = b.forward(Q, Waiting::Retry, 1000).await.unwrap();
                let mut retry: Vec<Vec<u8>> = m
                    .tasks
                    .iter()
                    .filter(|(_, s)| matches!(s, State::Retry { .. }))
                    .map(|(id, _)| id.clone())
                    .collect();
                prop_assert_eq!(moved as usize, retry.len());
                retry.sort_by_key(|id| match m.tasks[id] {
                    State::Retry { order, .. } => order,
                    _ => unreachable!(),
                });
                let bytes: Vec<(Vec<u8>, i32)> = retry
                    .into_iter()
                    .map(|id| {
                        let State::Retry { prio, .. } = m.tasks[&id] else {
                            unreachable!()
                        };
                        (id, prio)
                    })
                    .collect();
                for (id, prio) in bytes {
                    m.seq += 1;
                    m.tasks.insert(id, State::Pending { prio, seq: m.seq });
                }
            }
        }
        let st = b.stats(Q).await.unwrap();
        prop_assert_eq!(st.pending, m.count(|s| matches!(s, State::Pending { .. })));
        prop_assert_eq!(st.active, m.count(|s| matches!(s, State::Active { .. })));
        prop_assert_eq!(st.retry, m.count(|s| matches!(s, State::Retry { .. })));
        prop_assert_eq!(st.dead, m.count(|s| matches!(s, State::Dead)));
        prop_assert_eq!(st.processed_total, m.processed);
    }
    Ok(())
}

#[test]
fn random_transition_sequences_match_the_model() {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let b = rt.block_on(Broker::connect(&redis.url())).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            rt.block_on(check(&b, ops))
        })
        .unwrap();
}
