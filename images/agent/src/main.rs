//! vmbench's Linux guest agent. The linux image's initramfs runs it as `/init` (PID 1): it
//! mounts proc, sys and devtmpfs, loads the image's kernel modules in dependency order,
//! brings up the NIC, runs the workload named on the kernel command line and reports on the
//! console in the probe's record format (`docs/probe.md`), then powers the machine off.
//!
//! Kernel command line: `... vmb.ip=ADDR/PREFIX vmb.gw=ADDR -- WORKLOAD key=value ...`
//! (everything after ` -- ` is the workload, as the probe reads its whole command line).

mod args;
mod blk;
mod irq;
mod net;
mod rec;
mod samples;
mod sys;
mod tcp;

use rec::Record;

/// A workload's outcome: `Ok` reports `done status=ok`; `Err(why)` an `error` record and
/// `done status=failed`.
pub type Outcome = Result<(), String>;

/// What the agent knows when the workload starts.
pub struct Boot {
    pub ip: Option<String>,
    pub gw: Option<String>,
}

fn main() {
    std::panic::set_hook(Box::new(|info| {
        Record::new("error")
            .text(&format!("agent panicked: {info}"))
            .send();
        Record::new("done").kv("status", "failed").send();
        sys::power_off();
    }));
    let status = run();
    Record::new("done")
        .kv("status", if status.is_ok() { "ok" } else { "failed" })
        .send();
    sys::power_off();
}

fn run() -> Outcome {
    if let Err(e) = sys::mount_basics() {
        Record::new("error").text(&e).send();
        return Err(e);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (kernel_args, exec) = match cmdline.trim().split_once(" -- ") {
        Some((k, w)) => (k.to_string(), w.trim().to_string()),
        None => (
            cmdline.trim().trim_end_matches("--").to_string(),
            String::new(),
        ),
    };
    let exec = if exec.is_empty() {
        "hello".to_string()
    } else {
        exec
    };
    let param = |key: &str| {
        kernel_args
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key).map(str::to_string))
    };
    let boot = Boot {
        ip: param("vmb.ip="),
        gw: param("vmb.gw="),
    };
    let loaded = sys::load_modules();
    Record::new("ready")
        .kv("vcpu", 0)
        .kv("uptime_ns", sys::uptime_ns())
        .send();
    Record::new("info")
        .kv("engine", "linux")
        .kv("kernel", sys::kernel_release())
        .kv("mem", sys::mem_bytes())
        .kv("vcpus", sys::online_cpus())
        .kv("modules", loaded.loaded)
        .send();
    if loaded.failed > 0 {
        let e = format!("{} kernel module(s) failed to load", loaded.failed);
        Record::new("error").text(&e).send();
        return Err(e);
    }
    let mut words = exec.split_ascii_whitespace();
    let name = words.next().unwrap_or("hello");
    let rest: Vec<&str> = words.collect();
    let result = dispatch(name, &rest, &boot);
    if let Err(e) = &result {
        Record::new("error")
            .text(&format!("workload {name}: {e}"))
            .send();
    }
    // How the drivers' interrupts arrived, for the devices the workload drove.
    irq::report();
    result
}

/// Every workload the agent runs, for the error on an unknown one.
pub const WORKLOADS: &[&str] = &[
    "hello",
    "blk-pattern",
    "blk-read",
    "blk-write",
    "net-rr",
    "net-tx",
    "net-rx",
    "ping",
    "tcp-stream",
    "iperf3",
];

fn dispatch(name: &str, rest: &[&str], boot: &Boot) -> Outcome {
    match name {
        "hello" => hello(rest),
        "blk-pattern" => blk::pattern(rest),
        "blk-read" => blk::stream(rest, false),
        "blk-write" => blk::stream(rest, true),
        "net-rr" => net::rr(rest, boot),
        "net-tx" => net::tx(rest, boot),
        "net-rx" => net::rx(rest, boot),
        "ping" => net::ping(rest, boot),
        "tcp-stream" => tcp::stream(rest, boot),
        "iperf3" => tcp::iperf3(rest, boot),
        other => Err(format!(
            "unknown workload `{other}`; the agent runs {}",
            WORKLOADS.join(", ")
        )),
    }
}

/// `hello`: what the guest sees (block devices and network interfaces with their drivers).
fn hello(rest: &[&str]) -> Outcome {
    args::Args::parse(rest, &[])?;
    for (dir, kind) in [("/sys/block", "disk"), ("/sys/class/net", "nic")] {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for n in names.iter().filter(|n| *n != "lo") {
            Record::new(kind)
                .kv("name", n)
                .kv("driver", sys::driver_of(&format!("{dir}/{n}")))
                .send();
        }
    }
    Ok(())
}
