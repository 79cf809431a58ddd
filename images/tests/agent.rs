//! The agent is a cargo workspace of its own (it is built for the guest with its own flags,
//! `images::linux::agent`), so the workspace's `cargo test` does not reach its unit tests
//! (argument parsing, /proc/interrupts parsing, the network set-up's checks...): this runs them.

use std::process::Command;

#[test]
fn the_agents_own_unit_tests_pass() {
    let manifest = images::linux::agent::source_dir().join("Cargo.toml");
    let target = images::cache_dir().join("agent-unit-tests");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["test", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let passed: u64 = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(passed > 0, "no agent test ran:\n{stdout}");
}
