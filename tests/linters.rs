//! Formatting and lints are tests (as glommio does), so CI fails on them like on any bug.
//!
//! Clippy runs with its own target dir (`<target dir>/lint`): the `cargo test` that runs this file may
//! hold the lock on the main build dir, and a check build there would also evict nothing we need.
//! A missing rustfmt or clippy is a failure, never a skip (`scripts/test` installs both);
//! `SKEIN_SKIP_LINTERS=1` skips them on purpose, for quick local runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn skip() -> bool {
    if std::env::var("SKEIN_SKIP_LINTERS").is_ok_and(|v| !v.is_empty() && v != "0") {
        eprintln!("note: SKEIN_SKIP_LINTERS is set; skipping");
        return true;
    }
    false
}

fn cargo() -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rustfmt() {
    if skip() {
        return;
    }
    let output = cargo()
        .args(["fmt", "--check"])
        .output()
        .expect("run cargo fmt");
    assert_success("cargo fmt --check (run `cargo fmt` to fix)", &output);
}

#[test]
fn clippy() {
    if skip() {
        return;
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("lint");
    let output = cargo()
        .args(["clippy", "--all-targets", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("run cargo clippy");
    assert_success("cargo clippy --all-targets -- -D warnings", &output);
}
