//! The `rediq` binary answers `--version` and `--help`.

use std::process::Command;

fn rediq(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rediq"))
        .args(args)
        .output()
        .expect("run the rediq binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (ok, out) = rediq(&["--version"]);
    assert!(ok);
    assert_eq!(out.trim(), format!("rediq {}", env!("CARGO_PKG_VERSION")));
    let (ok, out) = rediq(&["--help"]);
    assert!(ok);
    assert!(out.contains("--redis-url"), "{out}");
}
