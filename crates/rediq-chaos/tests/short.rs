//! The short run of the fault suite, part of `cargo test --workspace`: every scenario, a few
//! seconds of workload each (the two failover scenarios run their minimum, 12 s on a cluster
//! and 25 s under Sentinel; about three and a half minutes in all). Each scenario must keep
//! its promises — nothing lost, nothing completed twice, and the rest the driver checks —
//! except those listed in `KNOWN_FAILING` (none today: the last one, a double completion after
//! Redis restarts, went with idempotent enqueue), which would fail because of a known defect
//! being fixed: remove a scenario from the list when its fix lands.

use std::process::Command;

/// Scenarios that fail on today's code, each with the defect (issue 13, section 1) behind it
/// and the one failure that defect explains (its message starts so). That failure is printed,
/// not asserted; every other check of the scenario still is. Do not add to this list to make the
/// test pass.
const KNOWN_FAILING: &[(&str, &str, &str)] = &[];

const SCENARIOS: [&str; 9] = [
    "kill",
    "stop",
    "redis-restart-always",
    "redis-restart-everysec",
    "redis-down",
    "garbage",
    "handlers",
    "cluster-failover",
    "sentinel-failover",
];

#[test]
fn every_scenario_keeps_its_promises_in_a_short_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_rediq-chaos"))
        .args(["--scenario", "all", "--seconds", "6"])
        .output()
        .expect("run rediq-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");

    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CHAOS-RESULT "))
        .map(|j| serde_json::from_str(j).expect("a result line is JSON"))
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["scenario"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(names, SCENARIOS, "every scenario reports, in order");

    let mut broken = Vec::new();
    for r in &rows {
        let name = r["scenario"].as_str().unwrap_or("?");
        let failures: Vec<&str> = r["failures"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
            .unwrap_or_default();
        assert!(
            r["enqueued"].as_u64().unwrap_or(0) > 0,
            "{name}: nothing was enqueued"
        );
        let known = KNOWN_FAILING.iter().find(|(n, _, _)| *n == name);
        if let Some((_, allowed, defect)) = known {
            let (explained, other): (Vec<&str>, Vec<&str>) =
                failures.iter().partition(|f| f.starts_with(allowed));
            if explained.is_empty() {
                println!(
                    "{name} passed this time: remove it from KNOWN_FAILING once the fix of \
                     ({defect}) has landed"
                );
            } else {
                println!("{name} fails as known ({defect}): {explained:?}");
            }
            if !other.is_empty() {
                broken.push(format!("{name}: {other:?}"));
            } else if let Some(dir) = r["dir"].as_str().filter(|d| d.contains("rediq-chaos-")) {
                // The driver keeps a failed scenario's directory for debugging; a known
                // failure's is of no use to CI.
                let _ = std::fs::remove_dir_all(dir);
            }
        }
        // Redis with appendfsync everysec may lose the last second of acknowledged writes:
        // reported, not promised.
        if name != "redis-restart-everysec" && r["lost"].as_u64() != Some(0) {
            broken.push(format!("{name}: lost {} tasks", r["lost"]));
        }
        if known.is_some() {
            continue;
        }
        if r["double_completions"].as_u64() != Some(0) {
            broken.push(format!(
                "{name}: {} double completions",
                r["double_completions"]
            ));
        }
        if !failures.is_empty() {
            broken.push(format!("{name}: {failures:?}"));
        }
    }
    assert!(broken.is_empty(), "promises broken: {broken:#?}");
    // The driver exits non-zero exactly when a scenario failed.
    let any_failed = rows
        .iter()
        .any(|r| r["failures"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(
        out.status.success(),
        !any_failed,
        "exit status {}",
        out.status
    );
}
