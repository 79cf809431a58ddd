//! Issue 15, item 7: a child started with `die_with_parent` dies when vmbench is killed with
//! SIGKILL (no destructor runs); one started without it lives on as an orphan. The "vmbench"
//! here is this test binary run again in the `parent_role` test, which spawns `sleep`, prints
//! its pid and waits to be killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmm::process::DieWithParent;

const ROLE: &str = "VMBENCH_TEST_PARENT_ROLE";

/// Only does something when run as the parent by the tests below.
#[test]
fn parent_role() {
    let Ok(mode) = std::env::var(ROLE) else {
        return;
    };
    let mut cmd = Command::new("sleep");
    cmd.arg("1000").stdout(Stdio::null());
    if mode == "tied" {
        cmd.die_with_parent();
    }
    let mut child = cmd.spawn().unwrap();
    println!("child {}", child.id());
    std::thread::sleep(Duration::from_secs(1000));
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the parent role, returns (parent, the pid of the child it started).
fn start_parent(mode: &str) -> (std::process::Child, u32) {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "parent_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = BufReader::new(parent.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        // libtest prints "test parent_role ... " on the same line.
        if let Some((_, pid)) = line.split_once("child ") {
            return (parent, pid.trim().parse().unwrap());
        }
    }
    let _ = parent.kill();
    let _ = parent.wait();
    panic!("the parent role printed no child pid");
}

/// Alive and not a zombie waiting for a reaper that may never come (PID 1 in a container).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn kill_9_then_wait(parent: &mut std::process::Child, child: u32) -> bool {
    parent.kill().unwrap(); // SIGKILL
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    alive(child)
}

#[test]
fn a_tied_child_dies_with_its_killed_parent() {
    let (mut parent, child) = start_parent("tied");
    assert!(alive(child));

    let survived = kill_9_then_wait(&mut parent, child);

    assert!(!survived, "child {child} outlived its parent's kill -9");
}

#[test]
fn an_untied_child_outlives_its_killed_parent() {
    // The control: without die_with_parent the orphan stays, which is the bug being fixed.
    let (mut parent, child) = start_parent("untied");

    let survived = kill_9_then_wait(&mut parent, child);
    let _ = Command::new("kill")
        .args(["-9", &child.to_string()])
        .status();

    assert!(survived, "the control child died by itself");
}
