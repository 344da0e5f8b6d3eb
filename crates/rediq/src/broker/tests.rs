//! The broker's transitions against a real redis-server: fencing, and a property test that runs
//! random sequences of enqueue / fetch / complete / fail / kill / lease-expiry / recovery /
//! forwarding against an in-memory model of the task states.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
            task_type: "m".into(),
            delay_ms: 0,
            unique: None,
        },
    )
}

impl Broker {
    /// Makes a server's lease look lapsed (test only).
    async fn expire_lease(&self, queue: &str, server: &str) {
        let mut c = self.conn.clone();
        let _: () = c
            .zadd(&QueueKeys::new(queue).leases, server, 0)
            .await
            .unwrap();
    }

    async fn flushall(&self) {
        let mut c = self.conn.clone();
        let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    }
}

const S1: &str = "host:1:aaaa";
const SERVERS: [&str; 2] = ["host:1:aaaa", "host:2:bbbb"];
const S2: &str = "host:2:bbbb";

#[tokio::test]
async fn stale_holder_is_fenced_off_everywhere() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let (id, nt) = new_task(50);
    b.enqueue(Q, &[nt], EnqueueMode::Each).await.unwrap();
    let lease = Duration::from_secs(60);
    let first = b.fetch(Q, S1, 10, lease).await.unwrap().unwrap();
    assert_eq!(first.records.len(), 1);
    let raw = record::raw_id(&first.records[0]).to_vec();
    assert_eq!(record::id_text(&raw), id);

    // The lease is valid: nobody may take the task back.
    assert!(b.expired_servers(Q, 10).await.unwrap().is_empty());
    assert_eq!(
        b.requeue(Q, S1, &[(raw.clone(), first.token, None)], true)
            .await
            .unwrap(),
        0
    );
    // S1 stalls; its lease lapses and the recoverer gives the task back.
    b.expire_lease(Q, S1).await;
    assert_eq!(
        b.expired_servers(Q, 10).await.unwrap(),
        vec![S1.to_string()]
    );
    let held = b.held(Q, S1).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].token, &held[0].record),
        (first.token, &first.records[0])
    );
    assert_eq!(
        b.requeue(Q, S1, &[(raw.clone(), first.token, None)], true)
            .await
            .unwrap(),
        1
    );
    assert!(
        b.expired_servers(Q, 10).await.unwrap().is_empty(),
        "empty lapsed lease dropped"
    );

    // S2 takes it. Then S1 wakes up: every transition it tries is refused.
    let second = b.fetch(Q, S2, 10, lease).await.unwrap().unwrap();
    assert!(second.token > first.token);
    let stale = Ack {
        id: raw.clone(),
        token: first.token,
        unique_key: None,
    };
    assert_eq!(
        b.complete(Q, S1, std::slice::from_ref(&stale), None, rand::random())
            .await
            .unwrap(),
        vec![0]
    );
    assert!(!b
        .retry(Q, S1, &raw, first.token, &first.records[0], Duration::ZERO)
        .await
        .unwrap());
    assert!(!b
        .kill(
            Q,
            S1,
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
        b.extend(Q, S1, &[(raw.clone(), first.token)], lease)
            .await
            .unwrap(),
        vec![0]
    );
    assert_eq!(
        b.requeue(Q, S1, &[(raw.clone(), first.token, None)], false)
            .await
            .unwrap(),
        0
    );
    // Even under S2's name the old token is refused.
    assert_eq!(
        b.complete(Q, S2, std::slice::from_ref(&stale), None, rand::random())
            .await
            .unwrap(),
        vec![0]
    );
    let st = b.stats(Q).await.unwrap();
    assert_eq!(
        (st.active, st.pending, st.retry, st.dead, st.processed_total),
        (1, 0, 0, 0, 0)
    );
    // The new owner's ack lands.
    let fresh = Ack {
        token: second.token,
        ..stale
    };
    assert!(b
        .complete(Q, S2, &[fresh], None, rand::random())
        .await
        .unwrap()
        .is_empty());
    let st = b.stats(Q).await.unwrap();
    assert_eq!((st.active, st.processed_total), (0, 1));
}

#[tokio::test]
async fn shutdown_requeue_ignores_the_lease_and_keeps_the_place() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let (_, nt) = new_task(10);
    let (_, later) = new_task(10);
    b.enqueue(Q, &[nt, later], EnqueueMode::Each).await.unwrap();
    let f = b
        .fetch(Q, S1, 1, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let raw = record::raw_id(&f.records[0]).to_vec();
    // The recoverer must not take a task whose lease is still valid...
    assert!(!b
        .kill(Q, S1, &raw, f.token, &f.records[0], None, NO_LIMITS, true)
        .await
        .unwrap());
    // ...while shutdown puts it back regardless, unchanged and ahead of the later task.
    assert_eq!(
        b.requeue(Q, S1, &[(raw, f.token, None)], false)
            .await
            .unwrap(),
        1
    );
    let again = b
        .fetch(Q, S1, 1, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.records, f.records);
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue(i32),
    Fetch(usize, bool),
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
        3 => (1..4usize, any::<bool>()).prop_map(|(n, s)| Op::Fetch(n, s)),
        2 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::StaleComplete),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Kill),
        1 => any::<bool>().prop_map(|s| Op::Expire(usize::from(s))),
        1 => Just(Op::Recover),
        1 => Just(Op::Forward),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// In `Model::bands[prio]`, which orders it.
    Pending {
        prio: i32,
    },
    Active {
        server: usize,
        token: u64,
        prio: i32,
    },
    Retry {
        prio: i32,
        order: u64,
    },
    Dead,
    Done,
}

#[derive(Default)]
struct Model {
    tasks: HashMap<Vec<u8>, State>,
    /// Deliveries handed out, as (server, id, token, record); some may have been taken back.
    held: Vec<(usize, Vec<u8>, u64, Vec<u8>)>,
    /// Per server: whether it has a lease entry, and whether that entry has lapsed.
    lease: [Option<bool>; 2],
    /// The pending ids of each priority band, in the order they run.
    bands: BTreeMap<i32, VecDeque<Vec<u8>>>,
    fails: u64,
    processed: u64,
}

impl Model {
    fn count(&self, f: impl Fn(&State) -> bool) -> u64 {
        self.tasks.values().filter(|s| f(s)).count() as u64
    }
    /// Tasks given back go to the front of their band in id order (bands.lua's
    /// `bands_give_back`): each before the first of the band's head elements (the first 64,
    /// plus those given back before it in this call) whose id is greater.
    fn give_back(&mut self, prio: i32, mut ids: Vec<Vec<u8>>) {
        let band = self.bands.entry(prio).or_default();
        ids.sort();
        for (window, id) in (band.len().min(64)..).zip(ids) {
            let at = band.iter().take(window).position(|x| *x > id);
            band.insert(at.unwrap_or(window), id);
        }
    }

    fn owns(&self, server: usize, id: &[u8], token: u64) -> bool {
        matches!(self.tasks.get(id), Some(State::Active { server: s, token: t, .. }) if *t == token && *s == server)
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
                let id = record::id_bytes(&id).unwrap().to_vec();
                m.bands.entry(p).or_default().push_back(id.clone());
                m.tasks.insert(id, State::Pending { prio: p });
            }
            Op::Fetch(n, second) => {
                let server = usize::from(second);
                let mut taken: Vec<(i32, Vec<u8>)> = Vec::new();
                for (prio, band) in m.bands.iter_mut() {
                    while taken.len() < n {
                        let Some(id) = band.pop_front() else { break };
                        taken.push((*prio, id));
                    }
                }
                let want: Vec<Vec<u8>> = taken.iter().map(|t| t.1.clone()).collect();
                let got = b.fetch(Q, SERVERS[server], n, lease).await.unwrap();
                let (token, records) = got.map_or((0, vec![]), |f| (f.token, f.records));
                let ids: Vec<Vec<u8>> =
                    records.iter().map(|r| record::raw_id(r).to_vec()).collect();
                prop_assert_eq!(
                    &ids,
                    &want,
                    "fetch order: lowest priority value first, FIFO"
                );
                if !records.is_empty() {
                    m.lease[server] = Some(false);
                }
                for (r, (prio, id)) in records.into_iter().zip(taken) {
                    m.tasks.insert(
                        id.clone(),
                        State::Active {
                            server,
                            token,
                            prio,
                        },
                    );
                    m.held.push((server, id, token, r));
                }
            }
            Op::Complete(i) | Op::StaleComplete(i) | Op::Fail(i) | Op::Kill(i)
                if m.held.is_empty() =>
            {
                let _ = i;
            }
            Op::Complete(i) => {
                let (server, id, token, _) = m.held.remove(i % m.held.len());
                let owns = m.owns(server, &id, token);
                let ack = Ack {
                    id: id.clone(),
                    token,
                    unique_key: None,
                };
                let stale = b
                    .complete(Q, SERVERS[server], &[ack], None, rand::random())
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
                let (server, id, token, _) = m.held[i % m.held.len()].clone();
                let ack = Ack {
                    id,
                    token: token + 1_000_000,
                    unique_key: None,
                };
                let stale = b
                    .complete(Q, SERVERS[server], &[ack], None, rand::random())
                    .await
                    .unwrap();
                prop_assert_eq!(stale, vec![0]);
            }
            Op::Fail(i) => {
                let (server, id, token, rec) = m.held.remove(i % m.held.len());
                let owns = m.owns(server, &id, token);
                let ok = b
                    .retry(Q, SERVERS[server], &id, token, &rec, Duration::ZERO)
                    .await
                    .unwrap();
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
                let (server, id, token, rec) = m.held.remove(i % m.held.len());
                let owns = m.owns(server, &id, token);
                let ok = b
                    .kill(Q, SERVERS[server], &id, token, &rec, None, NO_LIMITS, false)
                    .await
                    .unwrap();
                prop_assert_eq!(ok, owns);
                if owns {
                    m.tasks.insert(id, State::Dead);
                }
            }
            Op::Expire(server) => {
                if m.lease[server].is_some() {
                    b.expire_lease(Q, SERVERS[server]).await;
                    m.lease[server] = Some(true);
                }
            }
            Op::Recover => {
                let mut lapsed = b.expired_servers(Q, 10).await.unwrap();
                lapsed.sort();
                let want: Vec<String> = (0..2)
                    .filter(|s| m.lease[*s] == Some(true))
                    .map(|s| SERVERS[s].to_string())
                    .collect();
                prop_assert_eq!(&lapsed, &want, "lapsed leases");
                for (server, name) in SERVERS.iter().enumerate() {
                    if m.lease[server] != Some(true) {
                        continue;
                    }
                    let held = b.held(Q, name).await.unwrap();
                    let items: Vec<Requeue> =
                        held.iter().map(|e| (e.id.clone(), e.token, None)).collect();
                    let moved = b.requeue(Q, name, &items, true).await.unwrap();
                    prop_assert_eq!(moved as usize, items.len());
                    let mut back: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
                    for e in held {
                        match m.tasks.get(&e.id).copied() {
                            Some(State::Active {
                                server: s,
                                token,
                                prio,
                            }) => {
                                prop_assert_eq!((s, token), (server, e.token));
                                back.entry(prio).or_default().push(e.id.clone());
                                m.tasks.insert(e.id, State::Pending { prio });
                            }
                            other => prop_assert!(false, "held task in state {:?}", other),
                        }
                    }
                    prop_assert!(
                        !m.tasks
                            .values()
                            .any(|t| matches!(t, State::Active { server: s, .. } if *s == server)),
                        "every task of the lapsed server was given back"
                    );
                    m.lease[server] = None;
                    for (prio, ids) in back {
                        m.give_back(prio, ids);
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
                    m.bands.entry(prio).or_default().push_back(id.clone());
                    m.tasks.insert(id, State::Pending { prio });
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

/// A fetch asking for no task leases none (fetch.lua's LRANGE would otherwise read to the end).
#[tokio::test]
async fn a_fetch_of_zero_tasks_leases_none() {
    let redis = RedisServer::start();
    let b = Broker::connect(&redis.url()).await.unwrap();
    let (_, t) = new_task(0);
    b.enqueue(Q, &[t], EnqueueMode::Each).await.unwrap();
    assert!(b
        .fetch(Q, S1, 0, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        b.fetch(Q, S1, 5, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap()
            .records
            .len(),
        1
    );
}
