//! Turning one guest session into a results repetition: the workload's own figures, the VM
//! exits and VMM CPU time of its measurement window, the cross-check against what the peer
//! counted, and the boot timeline.

use std::collections::BTreeMap;

use crate::record::Record;
use crate::results::{BootTimeline, CpuTime, Exits, Repetition};
use crate::scenario::{Case, CaseParams, EngineKind, NetBackendKind, WorkloadKind};
use crate::session::Outcome;
use vmm::kinds::{DiskKind, NicKind};

/// The metric a case is judged by in the summary, and whether higher is better.
pub fn primary(kind: WorkloadKind) -> (&'static str, bool) {
    match kind {
        WorkloadKind::NetTx | WorkloadKind::NetRx => ("ops_per_sec", true),
        WorkloadKind::NetRr | WorkloadKind::Ping => ("latency_p50_ns", false),
        WorkloadKind::TcpStream | WorkloadKind::Iperf3 => ("mbit_per_sec", true),
        WorkloadKind::BlkRead | WorkloadKind::BlkWrite => ("ops_per_sec", true),
        WorkloadKind::Hello => ("boot_total_ms", false),
        WorkloadKind::Calibrate => ("pio_exit_ns", false),
    }
}

fn result_of<'a>(out: &'a Outcome, name: &str) -> Option<&'a Record> {
    out.records_of("result")
        .map(|t| &t.record)
        .find(|r| r.get("name") == Some(name))
}

/// Builds the repetition; `Err` when the guest did not produce the figures the workload must.
/// `duration_secs` is the configured window, used when the guest did not time its own.
pub fn repetition(
    case: &Case,
    index: u32,
    out: &Outcome,
    wall_secs: f64,
    duration_secs: f64,
) -> Result<Repetition, String> {
    let kind = case.params.workload.kind();
    let mut metrics = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut sample_strides = BTreeMap::new();
    let t = &out.timeline;
    for (k, v) in [
        ("boot_setup_ms", t.setup_ms()),
        ("boot_first_instruction_ms", t.first_instruction_ms()),
        ("boot_ready_ms", t.ready_ms()),
        ("boot_total_ms", t.total_ms()),
        ("boot_kernel_ms", t.kernel_ms()),
        ("boot_init_ms", t.init_ms()),
        ("boot_teardown_ms", t.teardown_ms),
    ] {
        if let Some(v) = v {
            metrics.insert(k.to_string(), v);
        }
    }
    let mut exits = Exits::default();
    let mut cpu = CpuTime::default();
    match kind {
        WorkloadKind::Hello => {}
        WorkloadKind::Calibrate => {
            for r in out.records_of("result").map(|t| &t.record) {
                if let (Some(name), Some(median)) = (r.get("name"), r.get_u64("median")) {
                    metrics.insert(format!("{name}_ns"), median as f64);
                    if let Some(p90) = r.get_u64("p90") {
                        metrics.insert(format!("{name}_p90_ns"), p90 as f64);
                    }
                }
            }
            if !metrics.contains_key("pio_exit_ns") {
                return Err("calibrate reported no pio_exit figure".into());
            }
        }
        _ => {
            let name = kind.as_str();
            let r = result_of(out, name).ok_or_else(|| format!("{name} reported no result"))?;
            let ops = r.get_u64("ops").unwrap_or(0);
            if ops == 0 {
                return Err(format!("{name} completed no operation in its window: {r}"));
            }
            let window_s = r
                .get_u64("window_ns")
                .map(|ns| ns as f64 / 1e9)
                .unwrap_or(duration_secs);
            metrics.insert("ops".into(), ops as f64);
            metrics.insert("ops_per_sec".into(), ops as f64 / window_s);
            if let Some(bytes) = r.get_u64("bytes") {
                metrics.insert("mb_per_sec".into(), bytes as f64 / window_s / 1e6);
                metrics.insert("gbit_per_sec".into(), bytes as f64 * 8.0 / window_s / 1e9);
                if kind.needs_tcp() {
                    metrics.insert("mbit_per_sec".into(), bytes as f64 * 8.0 / window_s / 1e6);
                }
            }
            if kind.needs_tcp() && !metrics.contains_key("mbit_per_sec") {
                return Err(format!("{name} reported no byte count: {r}"));
            }
            // iperf3's own figures (TCP retransmissions, bytes the sender wrote).
            for k in ["retransmits", "bytes_sent"] {
                if let Some(v) = r.get_u64(k) {
                    metrics.insert(k.into(), v as f64);
                }
            }
            for k in ["errors", "mismatches", "lost"] {
                if let Some(v) = r.get_u64(k) {
                    metrics.insert(k.into(), v as f64);
                    if v > 0 {
                        return Err(format!("{name} reported {k}={v}: {r}"));
                    }
                }
            }
            let latency = out.records_of("latency").next().map(|t| &t.record);
            if let Some(l) = latency {
                for (k, m) in [
                    ("p50", "latency_p50_ns"),
                    ("p90", "latency_p90_ns"),
                    ("p99", "latency_p99_ns"),
                    ("p999", "latency_p999_ns"),
                    ("mean", "latency_mean_ns"),
                ] {
                    if let Some(v) = l.get_u64(k) {
                        metrics.insert(m.into(), v as f64);
                    }
                }
            }
            let lat: Vec<f64> = out
                .records_of("samples")
                .flat_map(|t| {
                    t.record
                        .text
                        .split(' ')
                        .filter_map(|w| w.parse::<f64>().ok())
                        .collect::<Vec<_>>()
                })
                .collect();
            if !lat.is_empty() {
                samples.insert("latency_ns".to_string(), lat);
                let stride = latency.and_then(|l| l.get_u64("raw_stride")).unwrap_or(1);
                if stride > 1 {
                    sample_strides.insert("latency_ns".to_string(), stride);
                }
            }
            if let Some(w) = crate::session::window(out) {
                exits = Exits::from_counts(&w.exits, w.ops.max(ops))
                    .with_registers(&w.devices, w.ops.max(ops));
                if let Some(n) = w.kvm.get("exits") {
                    metrics.insert("kvm_exits_per_op".into(), *n as f64 / ops as f64);
                }
                exits.kvm = w.kvm.clone();
                metrics.insert("exits_per_op".into(), w.exits.total() as f64 / ops as f64);
                cpu = CpuTime {
                    user_s: w.cpu.vmm_user_ns() as f64 / 1e9,
                    sys_s: w.cpu.sys_ns as f64 / 1e9,
                };
                metrics.insert(
                    "vmm_cpu_us_per_op".into(),
                    (w.cpu.vmm_user_ns() + w.cpu.sys_ns) as f64 / 1e3 / ops as f64,
                );
                notifications(&w, &case.params, ops, &mut metrics);
            }
            // What the guest's driver counted itself: the notifies it wrote in its window.
            if let Some(k) = r.get_u64("kicks") {
                metrics.insert("guest_kicks_per_op".into(), k as f64 / ops as f64);
            }
            // Device-side operation counts: notifications and register traffic per op are
            // what explains the cost of a device.
            cross_check(out, r, &case.params, &mut metrics)?;
        }
    }
    Ok(Repetition {
        index,
        samples,
        sample_strides,
        metrics,
        exits,
        cpu,
        boot: BootTimeline::from(&out.timeline),
        wall_secs,
        accel: Some(out.accel.to_string()),
    })
}

/// Kicks (guest-to-device notifications, virtio's ioeventfd writes) and interrupts
/// (device-to-guest) per operation over the measured window, from the counters of the device
/// under test (KVM's own exit count, `kvm_exits_per_op`, includes the kicks). The e1000's and
/// IDE's "kicks" are register writes, already counted as exits, so they get none.
fn notifications(
    w: &crate::session::Window,
    params: &CaseParams,
    ops: u64,
    metrics: &mut BTreeMap<String, f64>,
) {
    let device = match params.workload.kind() {
        WorkloadKind::NetTx
        | WorkloadKind::NetRx
        | WorkloadKind::NetRr
        | WorkloadKind::Ping
        | WorkloadKind::TcpStream
        | WorkloadKind::Iperf3 => params.nic.map(NicKind::device_name),
        WorkloadKind::BlkRead | WorkloadKind::BlkWrite => params.disk.map(DiskKind::device_name),
        WorkloadKind::Hello | WorkloadKind::Calibrate => None,
    };
    let per_op = |n: u64| n as f64 / ops as f64;
    if let Some(c) = device.and_then(|d| w.devices.get(d)) {
        let kicks: Vec<u64> = c
            .iter()
            .filter(|(k, _)| *k == "kicks" || k.ends_with("_kicks"))
            .map(|(_, v)| *v)
            .collect();
        if !kicks.is_empty() {
            metrics.insert("kicks_per_op".into(), per_op(kicks.iter().sum()));
        }
        if let Some(n) = c.get("interrupts") {
            metrics.insert("interrupts_per_op".into(), per_op(*n));
        }
    }
}

/// Guest figures against what the other side counted over the whole session. On vmbench's
/// VMM the in-process peer sees every frame, so a difference fails the repetition; QEMU's NIC
/// reaches the peer over a loopback UDP link that drops when its socket buffer fills, and a
/// TAP's host sockets (either engine) may drop too, so there the loss is recorded
/// (`link_lost_frames`) rather than treated as a failure.
fn cross_check(
    out: &Outcome,
    r: &Record,
    params: &CaseParams,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<(), String> {
    let kind = WorkloadKind::from_name(r.get("name").unwrap_or("")).unwrap_or(WorkloadKind::Hello);
    // Every frame the guest sends must reach the back-end only where nothing lossy lies
    // between: vmbench's VMM hands frames to the in-process peer directly; a TAP's host
    // socket and QEMU's loopback UDP link may drop under load.
    let lossless = match (params.engine, params.net_backend) {
        (EngineKind::Vmbench, NetBackendKind::Peer) => true,
        (EngineKind::Vmbench, NetBackendKind::Tap) | (EngineKind::Qemu, _) => false,
    };
    // Both engines count the back-end's side under its name (`peer`, `tap`).
    let Some(peer) = out.device_counters.get(params.net_backend.as_str()) else {
        // Both engines report their back-end's counters; tcp-stream is not judged without.
        return match kind {
            WorkloadKind::TcpStream => Err(format!(
                "the {} back-end reported no counters to check tcp-stream against",
                params.net_backend
            )),
            _ => Ok(()),
        };
    };
    let get = |k: &str| peer.get(k).copied().unwrap_or(0);
    match kind {
        WorkloadKind::NetTx => {
            let total = r.get_u64("frames_total").unwrap_or(0);
            metrics.insert("peer_frames".into(), get("sunk_frames") as f64);
            metrics.insert("guest_frames_total".into(), total as f64);
            metrics.insert(
                "link_lost_frames".into(),
                total.saturating_sub(get("sunk_frames")) as f64,
            );
            // The in-process peer sees every frame; a TAP's host socket may drop some.
            if lossless && get("sunk_frames") != total {
                return Err(format!(
                    "the guest sent {total} frames but the peer received {}",
                    get("sunk_frames")
                ));
            }
        }
        WorkloadKind::NetRx => {
            let total = r.get_u64("frames_total").unwrap_or(0);
            metrics.insert("peer_frames".into(), get("sourced_frames") as f64);
            metrics.insert("guest_frames_total".into(), total as f64);
            if get("sourced_frames") < total {
                return Err(format!(
                    "the guest received {total} frames but the peer sent only {}",
                    get("sourced_frames")
                ));
            }
        }
        WorkloadKind::NetRr => {
            metrics.insert("peer_frames".into(), get("echoed_frames") as f64);
            let ops = r.get_u64("ops").unwrap_or(0);
            if get("echoed_frames") < ops {
                return Err(format!(
                    "the guest counted {ops} round trips but the peer echoed only {}",
                    get("echoed_frames")
                ));
            }
        }
        WorkloadKind::TcpStream => {
            // The guest reads to the host's end of the connection before it reports, so the
            // host's TCP service has counted exactly the connection's bytes (TCP retransmits
            // what a lossy path drops: no loss to allow for).
            let total = r.get_u64("bytes_total").unwrap_or(0);
            let (counter, verb) = match r.get("direction") {
                Some("rx") => ("tcp_sourced_bytes", "sent"),
                _ => ("tcp_sunk_bytes", "received"),
            };
            let Some(&host) = peer.get(counter) else {
                return Err(format!(
                    "the {} back-end reports no `{counter}` to check tcp-stream against",
                    params.net_backend
                ));
            };
            metrics.insert("guest_bytes_total".into(), total as f64);
            metrics.insert("host_bytes".into(), host as f64);
            if host != total {
                return Err(format!(
                    "the guest counted {total} bytes on its TCP connection but the host {verb} {host}"
                ));
            }
        }
        // iperf3's figures are its own, from both of its ends; hello, calibrate, blk-* and
        // ping have no back-end count to compare.
        WorkloadKind::Iperf3
        | WorkloadKind::Ping
        | WorkloadKind::Hello
        | WorkloadKind::Calibrate
        | WorkloadKind::BlkRead
        | WorkloadKind::BlkWrite => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn outcome(result: &str, tap: &[(&str, u64)]) -> Outcome {
        let mut device_counters = BTreeMap::new();
        if !tap.is_empty() {
            device_counters.insert(
                "tap".to_string(),
                tap.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            );
        }
        Outcome {
            device_counters,
            accel: "tcg",
            ..Outcome::exited_with(&["ready", result, "done status=ok"])
        }
    }

    fn case(direction: &str) -> Case {
        let text = format!("guest = \"linux\"\nengine = \"qemu\"\n[devices]\nnic = \"virtio\"\nnet_backend = \"tap\"\n[workload]\nname = \"tcp-stream\"\ndirection = \"{direction}\"\n");
        Scenario::parse("x.toml", &text).unwrap().cases.remove(0)
    }

    #[test]
    fn tcp_stream_is_judged_by_throughput_and_checked_against_the_taps_count() {
        let rx = case("rx");
        let result = "result name=tcp-stream ops=10 bytes=2500000 bytes_total=3000000 window_ns=2000000000 direction=rx mismatches=0";
        let rep = repetition(
            &rx,
            0,
            &outcome(result, &[("tcp_sourced_bytes", 3_000_000)]),
            1.0,
            2.0,
        )
        .unwrap();
        assert_eq!(primary(WorkloadKind::TcpStream), ("mbit_per_sec", true));
        assert_eq!(rep.metrics["mbit_per_sec"], 10.0);
        assert_eq!(rep.metrics["host_bytes"], 3_000_000.0);
        // A byte the host did not count, or no count at all, fails the repetition.
        let e = repetition(
            &rx,
            0,
            &outcome(result, &[("tcp_sourced_bytes", 2_999_999)]),
            1.0,
            2.0,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "the guest counted 3000000 bytes on its TCP connection but the host sent 2999999"
        );
        let e = repetition(&rx, 0, &outcome(result, &[]), 1.0, 2.0).unwrap_err();
        assert!(e.contains("reported no counters"), "{e}");
        // tx is checked against the sink.
        let tx = case("tx");
        let result = result.replace("direction=rx", "direction=tx");
        let e = repetition(
            &tx,
            0,
            &outcome(&result, &[("tcp_sourced_bytes", 3_000_000)]),
            1.0,
            2.0,
        )
        .unwrap_err();
        assert!(e.contains("no `tcp_sunk_bytes`"), "{e}");
        repetition(
            &tx,
            0,
            &outcome(&result, &[("tcp_sunk_bytes", 3_000_000)]),
            1.0,
            2.0,
        )
        .unwrap();
    }

    #[test]
    fn raw_samples_sent_one_in_k_are_kept_with_their_stride() {
        let text = "engine = \"qemu\"\n[devices]\ndisk = \"virtio\"\n[workload]\nname = \"blk-read\"\npattern = \"rand\"\nblock_size = 4096\nqueue_depth = 32\n";
        let case = Scenario::parse("x.toml", text).unwrap().cases.remove(0);
        let run = |stride: &str| {
            let latency = format!(
                "latency workload=blk-read name=latency unit=ns n=30 dropped=0 p50=2000{stride}"
            );
            let out = Outcome {
                accel: "kvm",
                ..Outcome::exited_with(&[
                    "ready",
                    "samples name=latency 1000 2000 3000",
                    &latency,
                    "result name=blk-read ops=30 bytes=122880 errors=0 window_ns=2000000000 qd=32 bs=4096",
                    "done status=ok",
                ])
            };
            repetition(&case, 0, &out, 1.0, 2.0).unwrap()
        };
        let sub = run(" raw_stride=10");
        assert_eq!(sub.samples["latency_ns"], vec![1000.0, 2000.0, 3000.0]);
        assert_eq!(sub.sample_strides["latency_ns"], 10);
        assert_eq!(sub.metrics["latency_p50_ns"], 2000.0);
        assert!(run(" raw_stride=1").sample_strides.is_empty());
        assert!(run("").sample_strides.is_empty());
    }
}
