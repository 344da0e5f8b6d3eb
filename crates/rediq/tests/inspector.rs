//! The Inspector's paged listings against real Redis (on the topology `REDIQ_TEST_TOPOLOGY`
//! names): pages of pending tasks across priority bands, of delayed tasks, and of a partitioned
//! queue, each page the matching slice of the whole listing.

mod support;

use std::time::Duration;

use rediq::{Task, TaskState};
use support::*;

/// Every page of `size`, concatenated, is the whole listing; the page past the end is empty.
async fn pages_match_the_listing(env: &Env, queue: &str, state: TaskState, total: usize) {
    let all: Vec<String> = env
        .inspector
        .list(queue, state, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(all.len(), total);
    for size in [1, 7, 50] {
        let mut paged = Vec::new();
        for page in 0.. {
            let got = env
                .inspector
                .list_page(queue, state, page, size)
                .await
                .unwrap();
            assert!(got.len() <= size);
            if got.is_empty() {
                break;
            }
            assert!(got.iter().all(|t| t.queue == queue));
            paged.extend(got.into_iter().map(|t| t.id));
        }
        assert_eq!(paged, all, "pages of {size} in {queue} {state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_are_slices_of_the_listing_in_every_state_and_partition() {
    let env = Env::new().await;
    let c = &env.client;
    // Pending over three priority bands: the listing runs band by band.
    let mut tasks = Vec::new();
    for n in 0..60u32 {
        tasks.push(
            Task::builder("work")
                .queue("paged")
                .priority([1, 5, 9][(n % 3) as usize])
                .payload(&n)
                .unwrap()
                .build()
                .unwrap(),
        );
    }
    c.enqueue_batch(tasks).await.unwrap();
    let first = env
        .inspector
        .list_page("paged", TaskState::Pending, 0, 20)
        .await
        .unwrap();
    let priorities: Vec<i32> = first.iter().map(|t| t.options.priority).collect();
    assert!(
        priorities.windows(2).all(|w| w[0] >= w[1]),
        "{priorities:?}"
    );
    pages_match_the_listing(&env, "paged", TaskState::Pending, 60).await;

    for n in 0..25u64 {
        let t = Task::builder("work")
            .queue("paged")
            .delay(Duration::from_secs(600 + n))
            .build()
            .unwrap();
        c.enqueue(t).await.unwrap();
    }
    pages_match_the_listing(&env, "paged", TaskState::Delayed, 25).await;

    c.partition_queue("parted", 3).await.unwrap();
    let batch: Vec<Task> = (0..40u32)
        .map(|n| {
            Task::builder("work")
                .queue("parted")
                .payload(&n)
                .unwrap()
                .build()
                .unwrap()
        })
        .collect();
    c.enqueue_batch(batch).await.unwrap();
    pages_match_the_listing(&env, "parted", TaskState::Pending, 40).await;
    assert!(env
        .inspector
        .list_page("parted", TaskState::Pending, 1000, 10)
        .await
        .unwrap()
        .is_empty());
}
