//! Running one guest to its end: starting the machine, collecting its records, enforcing the
//! ready and run timeouts, and turning a crash or a hang into a failure that says what the
//! guest last did.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use vmm::exits::{ExitSnapshot, VcpuExits};
use vmm::{Event, Machine};

use crate::record::Record;

/// Console lines kept for failure reports.
const CONSOLE_TAIL: usize = 400;

#[derive(Clone, Debug)]
pub struct Limits {
    /// From the vCPUs' start to vCPU 0's `ready`.
    pub ready: Duration,
    /// From `ready` to the guest's exit.
    pub run: Duration,
}

/// A record with when it came and, through the mailbox, the exit counters at that moment.
#[derive(Clone, Debug)]
pub struct Timed {
    pub record: Record,
    pub vcpu: Option<usize>,
    pub at: Instant,
    pub exits: Option<ExitSnapshot>,
    /// CPU time of the VMM process when the record arrived (records with counters: the
    /// probe's mailbox records, console records on vmbench's VMM).
    pub cpu: Option<vmm::event::CpuTime>,
    /// KVM's own cumulative counters then (on hosts that offer them).
    pub kvm: Option<std::collections::BTreeMap<String, u64>>,
    /// The devices' operation counters then.
    pub devices: Option<vmm::counters::DeviceCounters>,
}

impl Timed {
    /// A record as it arrived, with the VMM's counters if it came with them.
    pub fn new(
        record: Record,
        vcpu: Option<usize>,
        at: Instant,
        counters: Option<vmm::event::Counters>,
    ) -> Timed {
        let (exits, cpu, kvm, devices) = match counters {
            Some(c) => (
                Some(c.exits),
                Some(c.cpu),
                (!c.kvm.is_empty()).then_some(c.kvm),
                Some(c.devices),
            ),
            None => (None, None, None, None),
        };
        Timed {
            record,
            vcpu,
            at,
            exits,
            cpu,
            kvm,
            devices,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub begin: Option<Instant>,
    pub setup_done: Option<Instant>,
    pub started: Option<Instant>,
    pub first_instruction: Vec<Option<Instant>>,
    pub ready: Vec<Option<Instant>>,
    pub exit: Option<Instant>,
    /// A Linux guest's first console line (the kernel's banner).
    pub kernel: Option<Instant>,
    /// A Linux guest's `Run /init as init process` console line: the agent starts.
    pub init: Option<Instant>,
    /// vmbench's VMM: stopping and dropping the machine after the session, in ms. Closing the
    /// VM waits for KVM's pending SRCU callbacks (docs/architecture.md, "Where `vmbench
    /// boot`'s time goes"), so this is where a change in their order shows.
    pub teardown_ms: Option<f64>,
}

/// The kernel's console line as it starts `/init` (the agent), on either engine.
pub const LINUX_INIT_LINE: &str = "Run /init as init process";

impl Timeline {
    fn ms(a: Option<Instant>, b: Option<Instant>) -> Option<f64> {
        Some(b?.saturating_duration_since(a?).as_secs_f64() * 1e3)
    }
    /// VMM set-up: from `Machine::new` to the vCPUs being ready to start.
    pub fn setup_ms(&self) -> Option<f64> {
        Self::ms(self.begin, self.setup_done)
    }
    /// From starting the vCPU threads to vCPU 0's first instruction.
    pub fn first_instruction_ms(&self) -> Option<f64> {
        Self::ms(
            self.started,
            self.first_instruction.first().copied().flatten(),
        )
    }
    /// From vCPU 0's first instruction to its `ready` record.
    pub fn ready_ms(&self) -> Option<f64> {
        Self::ms(
            self.first_instruction.first().copied().flatten(),
            self.ready.first().copied().flatten(),
        )
    }
    /// From `Machine::new` (QEMU: its start) to vCPU 0's `ready`.
    pub fn total_ms(&self) -> Option<f64> {
        Self::ms(self.begin, self.ready.first().copied().flatten())
    }
    /// From the start to a Linux guest's first console line.
    pub fn kernel_ms(&self) -> Option<f64> {
        Self::ms(self.begin, self.kernel)
    }
    /// From the start to a Linux guest's `Run /init`.
    pub fn init_ms(&self) -> Option<f64> {
        Self::ms(self.begin, self.init)
    }
}

#[derive(Clone, Debug)]
pub enum Ending {
    /// The guest wrote the debug-exit port.
    Exited { code: u32 },
    Crashed {
        vcpu: usize,
        reason: String,
        rip: u64,
        registers: String,
    },
    /// No `ready` in time, or no exit in time.
    TimedOut {
        phase: &'static str,
        after: Duration,
    },
    /// The user interrupted the run (Ctrl-C or SIGTERM: [`cancel_reason`]); the VM was stopped.
    Cancelled,
    /// The guest reset the machine (on vmbench's VMM: a Linux guest's i8042 reset after its
    /// reboot or panic, with `reboot=k`). Its own status is its `done` record.
    Reset,
    /// The guest powered off (on vmbench's VMM, which has no ACPI: every vCPU halted with
    /// interrupts masked, `vmm::machine::halt`). Its own status is its `done` record.
    PoweredOff,
    /// The engine (QEMU) ended without the guest's exit status; it says no more than this
    /// (no vCPU, no registers).
    EngineEnded { reason: String },
}

/// Set from a signal handler to stop the session in progress promptly.
pub static CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The signal that set [`CANCEL`] (0: none yet), so that a run says what stopped it.
static SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let _ = SIGNAL.compare_exchange(
        0,
        sig,
        std::sync::atomic::Ordering::SeqCst,
        std::sync::atomic::Ordering::SeqCst,
    );
    CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Why the run was cancelled, for results and messages: `interrupted by Ctrl-C (SIGINT)` or
/// `interrupted by SIGTERM`.
pub fn cancel_reason() -> String {
    match SIGNAL.load(std::sync::atomic::Ordering::SeqCst) {
        libc::SIGINT => "interrupted by Ctrl-C (SIGINT)".to_string(),
        libc::SIGTERM => "interrupted by SIGTERM".to_string(),
        0 => "interrupted".to_string(),
        n => format!("interrupted by signal {n}"),
    }
}

/// Ctrl-C and SIGTERM cancel the session in progress instead of killing the process, so the
/// VM is stopped and dropped properly (a TAP's network namespace removed with it).
pub fn cancel_on_signals() -> Result<(), vmm_sys_util::errno::Error> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::register_signal_handler(sig, on_signal)?;
    }
    Ok(())
}

pub struct Outcome {
    pub ending: Ending,
    pub records: Vec<Timed>,
    pub console_tail: Vec<String>,
    pub timeline: Timeline,
    /// Exit counters at the end (`None` where the engine does not count exits: QEMU).
    pub exits: Option<ExitSnapshot>,
    /// What vCPU 0 was last doing (its last exit), for hang reports.
    pub last_exit: String,
    /// Doorbell writes KVM handled in the kernel (`None`: the engine does not count them).
    pub ioeventfd_writes: Option<u64>,
    /// The TSC rate the VMM told the guest (`None`: the engine does not say).
    pub tsc_khz: Option<u32>,
    /// Device threads that failed and stopped during the run (`None`: the engine cannot
    /// tell, QEMU). A failed device fails the run even if the guest exited cleanly.
    pub failed_workers: Option<Vec<String>>,
    /// Device operation counters at the end (requests, frames, kicks...).
    pub device_counters:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
    /// What ran the guest's code: `kvm` (vmbench's VMM, QEMU with KVM) or `tcg`.
    pub accel: &'static str,
}

#[cfg(test)]
impl Outcome {
    /// For tests: a guest that printed `lines` (records without their prefix) on vCPU 0 and
    /// exited with status 0 under KVM, with nothing else measured or counted.
    pub(crate) fn exited_with(lines: &[&str]) -> Outcome {
        let records = lines
            .iter()
            .map(|l| {
                let record = Record::parse(&format!("{}{l}", probe_abi::RECORD_PREFIX)).unwrap();
                Timed::new(record, Some(0), Instant::now(), None)
            })
            .collect();
        Outcome {
            ending: Ending::Exited { code: 0 },
            records,
            console_tail: Vec::new(),
            timeline: Timeline::default(),
            exits: None,
            last_exit: String::new(),
            ioeventfd_writes: None,
            tsc_khz: None,
            failed_workers: None,
            device_counters: Default::default(),
            accel: "kvm",
        }
    }
}

impl Outcome {
    pub fn records_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Timed> + 'a {
        self.records.iter().filter(move |r| r.record.kind == kind)
    }

    /// The guest's first `error` record, as a sentence.
    pub fn guest_error(&self) -> Option<String> {
        self.records_of("error")
            .next()
            .map(|t| format!("the guest reported: {}", t.record.text))
    }

    /// Why the session did not end with the guest exiting cleanly (status 0), in one line
    /// that says what the guest last did; `None` if it did.
    pub fn failure(&self) -> Option<String> {
        if let (Ending::Exited { code }, false) = (&self.ending, self.reported_ready()) {
            return Some(format!(
                "the guest exited with status {code} without ever reporting ready; {}",
                self.last_words()
            ));
        }
        match &self.ending {
            Ending::Exited { code: 0 } => self.worker_failure().or_else(|| self.workload_errors()),
            Ending::Exited { code } => Some(format!(
                "the guest ended with status {code}: {}",
                self.guest_error().unwrap_or_else(|| self.last_words())
            )),
            Ending::Crashed {
                vcpu,
                reason,
                rip,
                registers,
            } => Some(format!(
                "the guest crashed on vCPU {vcpu} at rip={rip:#x}: {reason}; registers: {registers}; {}",
                self.last_words()
            )),
            Ending::Cancelled => Some(format!("{}; the VM was stopped", cancel_reason())),
            Ending::Reset | Ending::PoweredOff => {
                let (did, without) = match self.ending {
                    Ending::Reset => ("reset the machine", "a panic or a reboot"),
                    _ => ("powered off", "a power-off or halt"),
                };
                match self.records_of("done").last() {
                    Some(d) if d.record.get("status") == Some("ok") => None,
                    Some(d) => Some(format!(
                        "the guest reported '{}' and {did}: {}",
                        d.record,
                        self.guest_error().unwrap_or_else(|| self.last_words())
                    )),
                    None => Some(format!(
                        "the guest {did} without reporting done ({without}); {}",
                        self.last_words()
                    )),
                }
            }
            Ending::EngineEnded { reason } => Some(format!("{reason}; {}", self.last_words())),
            Ending::TimedOut { phase, after } => {
                let what = if *phase == "ready" {
                    "did not report ready"
                } else {
                    "did not finish its workload"
                };
                Some(format!(
                    "the guest {what} within {:.1} s, so the VM was stopped; {}; {}",
                    after.as_secs_f64(),
                    self.last_words(),
                    self.last_exit
                ))
            }
        }
    }

    /// Whether vCPU 0 reported ready (a guest that never did could not be used at all).
    pub fn reported_ready(&self) -> bool {
        self.records_of("ready").any(|t| t.vcpu.unwrap_or(0) == 0)
    }

    /// The device threads that failed during the run, as a sentence.
    pub fn worker_failure(&self) -> Option<String> {
        let failed = self.failed_workers.as_ref().filter(|w| !w.is_empty())?;
        Some(format!(
            "device thread(s) failed during the run: {} (the VMM's log says why)",
            failed.join(", ")
        ))
    }

    /// Errors a workload counted in its result or `done` records although the guest exited
    /// cleanly: failed requests, bytes read back wrong, `done status=failed`.
    pub fn workload_errors(&self) -> Option<String> {
        const COUNTS: [&str; 4] = ["errors", "write_errors", "read_errors", "mismatches"];
        for t in self.records_of("result") {
            let r = &t.record;
            let seen: Vec<String> = COUNTS
                .iter()
                .filter_map(|k| r.get_u64(k).filter(|&n| n > 0).map(|n| format!("{k}={n}")))
                .collect();
            if !seen.is_empty() {
                return Some(format!(
                    "the workload {} saw errors: {}",
                    r.get("name").unwrap_or("?"),
                    seen.join(" ")
                ));
            }
        }
        self.records_of("done")
            .find(|t| t.record.get("status").is_some_and(|s| s != "ok"))
            .map(|t| format!("the guest's workload ended with '{}'", t.record))
    }

    /// The last thing the guest said: its last record or console line.
    pub fn last_words(&self) -> String {
        let rec = self
            .records
            .last()
            .map(|r| format!("last record '{}'", r.record));
        let con = self
            .console_tail
            .last()
            .map(|l| format!("last console line '{l}'"));
        match (rec, con) {
            (Some(r), _) => r,
            (None, Some(c)) => c,
            (None, None) => "no record or console output".into(),
        }
    }
}

/// `t + d`, or a deadline a year away where that overflows (the flags are bounded to a day;
/// this keeps a limit from elsewhere from panicking).
fn after(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(365 * 86_400))
}

/// Starts `m`, runs it to its end or a limit, stops it, and reports. `on_record` sees each
/// record as it arrives (for live output).
pub fn run(
    m: &mut Machine,
    limits: &Limits,
    mut on_record: impl FnMut(&Timed),
) -> Result<Outcome, vmm::machine::Error> {
    let vcpus = m.vcpu_count();
    let times = m.times();
    let mut timeline = Timeline {
        begin: Some(times.begin),
        setup_done: Some(times.ready),
        first_instruction: vec![None; vcpus],
        ready: vec![None; vcpus],
        ..Default::default()
    };
    let linux = m.boots_linux();
    m.start()?;
    timeline.started = m.times().started;
    let start = Instant::now();
    let mut records = Vec::new();
    let mut console: VecDeque<String> = VecDeque::new();
    let ending = loop {
        let (phase, deadline) = match timeline.ready[0] {
            None => ("ready", after(start, limits.ready)),
            Some(r) => ("run", after(r, limits.run)),
        };
        let now = Instant::now();
        if now >= deadline {
            let after = match phase {
                "ready" => limits.ready,
                _ => limits.run,
            };
            break Ending::TimedOut { phase, after };
        }
        if CANCEL.load(std::sync::atomic::Ordering::SeqCst) {
            break Ending::Cancelled;
        }
        // Wake up now and then to notice a cancellation.
        let wait = (deadline - now).min(Duration::from_millis(100));
        let ev = match m.events().recv_timeout(wait) {
            Ok(ev) => ev,
            Err(_) => continue,
        };
        match ev {
            Event::Console { line, at, counters } => match Record::parse(&line) {
                Some(record) => {
                    let t = Timed::new(record, None, at, counters.map(|c| *c));
                    note_ready(&mut timeline, &t);
                    on_record(&t);
                    records.push(t);
                }
                None => {
                    if linux {
                        // The kernel's log: its first line, and the start of the agent.
                        timeline.kernel.get_or_insert(at);
                        if timeline.init.is_none() && line.contains(LINUX_INIT_LINE) {
                            timeline.init = Some(at);
                        }
                    }
                    if console.len() == CONSOLE_TAIL {
                        console.pop_front();
                    }
                    console.push_back(line);
                }
            },
            Event::Record {
                vcpu,
                text,
                at,
                counters,
            } => {
                if let Some(record) = Record::parse(&text) {
                    let t = Timed::new(record, Some(vcpu), at, Some(*counters));
                    note_ready(&mut timeline, &t);
                    on_record(&t);
                    records.push(t);
                }
            }
            Event::Entry { vcpu, at } => {
                if let Some(slot) = timeline.first_instruction.get_mut(vcpu) {
                    slot.get_or_insert(at);
                }
            }
            Event::Exit { code, at } => {
                timeline.exit = Some(at);
                break Ending::Exited { code };
            }
            Event::Reset { at } => {
                timeline.exit = Some(at);
                break Ending::Reset;
            }
            Event::Halted { at } => {
                timeline.exit = Some(at);
                break Ending::PoweredOff;
            }
            Event::Crash {
                vcpu,
                reason,
                rip,
                registers,
                ..
            } => {
                break Ending::Crashed {
                    vcpu,
                    reason,
                    rip,
                    registers,
                }
            }
        }
    };
    let last = m.exits().last_exit(0);
    let last_exit = match last.reason() {
        Some(r) => format!("vCPU 0's last exit: {} at {:#x}", r.name(), last.addr),
        None => "vCPU 0 never exited to the VMM".into(),
    };
    m.stop();
    Ok(Outcome {
        ending,
        records,
        console_tail: console.into_iter().collect(),
        timeline,
        exits: Some(m.exits().snapshot()),
        last_exit,
        ioeventfd_writes: Some(m.ioeventfd_count()),
        tsc_khz: Some(m.tsc_khz()),
        failed_workers: Some(m.failed_workers().into_iter().map(String::from).collect()),
        device_counters: m.device_counters(),
        accel: "kvm",
    })
}

fn note_ready(timeline: &mut Timeline, t: &Timed) {
    if t.record.kind != "ready" {
        return;
    }
    let vcpu = t
        .record
        .get_u64("vcpu")
        .map(|v| v as usize)
        .or(t.vcpu)
        .unwrap_or(0);
    if let Some(slot) = timeline.ready.get_mut(vcpu) {
        slot.get_or_insert(t.at);
    }
}

/// What the measured window (between `window-start` and `window-end`) cost.
pub struct Window {
    pub ops: u64,
    pub exits: VcpuExits,
    pub cpu: vmm::event::CpuTime,
    /// KVM's own counters over the window (empty where the host has no binary stats).
    pub kvm: std::collections::BTreeMap<String, u64>,
    /// The devices' counters over the window (kicks, interrupts, requests...), by device.
    pub devices: vmm::counters::DeviceCounters,
}

/// The cost of the measured window, from the counters the records carry (a probe's mailbox
/// records, a Linux agent's console records on vmbench's VMM); `None` where the engine does
/// not count exits (QEMU).
///
/// vmbench's side channels are taken out, here and from KVM's own counts: the doorbell exit
/// that delivered the probe's `window-start` (counted after its snapshot, so inside the
/// window), and the serial console's exits, one per register access (a Linux guest's
/// `window-end` line is counted into the window up to its newline, and the guest's kernel may
/// print meanwhile). Neither is the device under test.
pub fn window(out: &Outcome) -> Option<Window> {
    let start = out.records_of("window-start").next()?;
    let end = out.records_of("window-end").next()?;
    let mut exits = end.exits.as_ref()?.since(start.exits.as_ref()?).total();
    let devices: vmm::counters::DeviceCounters = match (&start.devices, &end.devices) {
        (Some(a), Some(b)) => b
            .iter()
            .map(|(dev, counts)| {
                let before = a.get(dev);
                let d = counts
                    .iter()
                    .map(|(k, v)| {
                        let was = before.and_then(|c| c.get(k)).copied().unwrap_or(0);
                        (k.clone(), v.saturating_sub(was))
                    })
                    .collect();
                (dev.clone(), d)
            })
            .collect(),
        _ => Default::default(),
    };
    // (exits to take out, from which reason)
    let mut side: Vec<(u64, &str)> = Vec::new();
    if let Some(n) = exits.by_device.remove("mailbox") {
        side.push((n, "pio_out"));
    }
    if exits.by_device.remove("serial").is_some() {
        let c = |k: &str| {
            devices
                .get("serial")
                .and_then(|c| c.get(k))
                .copied()
                .unwrap_or(0)
        };
        side.push((c("reads"), "pio_in"));
        side.push((c("writes"), "pio_out"));
    }
    let mut kvm: std::collections::BTreeMap<String, u64> = match (&start.kvm, &end.kvm) {
        (Some(a), Some(b)) => b
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect(),
        _ => Default::default(),
    };
    let take = |map: &mut std::collections::BTreeMap<String, u64>, key: &str, n: u64| {
        if let Some(v) = map.get_mut(key) {
            *v = v.saturating_sub(n);
        }
    };
    for (n, reason) in side {
        take(&mut exits.by_reason, reason, n);
        take(&mut kvm, "exits", n);
        take(&mut kvm, "io_exits", n);
    }
    exits.by_reason.retain(|_, v| *v > 0);
    kvm.retain(|_, v| *v > 0);
    Some(Window {
        ops: end.record.get_u64("ops").unwrap_or(0),
        exits,
        cpu: end.cpu?.since(&start.cpu?),
        kvm,
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windows_console_exits_are_taken_out_by_reason_and_from_kvms_count() {
        use std::collections::BTreeMap;
        let map = |kv: &[(&str, u64)]| -> BTreeMap<String, u64> {
            kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        // (pio_in, pio_out, mmio_write) by reason; serial's and e1000's share by device.
        let at = |t: &mut Timed, pio: [u64; 3], serial: [u64; 2], kvm: [u64; 2]| {
            t.exits = Some(ExitSnapshot {
                vcpus: vec![VcpuExits {
                    by_reason: map(&[
                        ("pio_in", pio[0]),
                        ("pio_out", pio[1]),
                        ("mmio_write", pio[2]),
                    ]),
                    by_device: map(&[("serial", serial[0] + serial[1]), ("e1000", pio[2])]),
                }],
            });
            t.devices = Some(
                [
                    (
                        "serial".to_string(),
                        map(&[("reads", serial[0]), ("writes", serial[1])]),
                    ),
                    ("e1000".to_string(), map(&[("interrupts", pio[2] / 10)])),
                ]
                .into_iter()
                .collect(),
            );
            t.kvm = Some(map(&[("exits", kvm[0]), ("io_exits", kvm[1])]));
            t.cpu = Some(vmm::event::CpuTime::default());
        };
        let mut out = Outcome::exited_with(&["window-start", "window-end ops=10"]);
        // Before: 15 console accesses; in the window: 20 reads and 30 writes of the console
        // (the window-end line), 70 e1000 register writes, 30 exits KVM handled itself.
        at(&mut out.records[0], [5, 10, 100], [5, 10], [200, 15]);
        at(&mut out.records[1], [25, 40, 170], [25, 40], [350, 65]);

        let w = window(&out).unwrap();
        assert_eq!(w.exits.by_reason, map(&[("mmio_write", 70)]));
        assert_eq!(w.exits.by_device, map(&[("e1000", 70)]));
        assert_eq!(w.exits.total(), 70);
        assert_eq!(w.kvm, map(&[("exits", 100)]));
        assert_eq!(w.devices["e1000"]["interrupts"], 7);
        assert_eq!(w.ops, 10);
    }

    fn outcome(lines: &[&str], failed_workers: Option<Vec<String>>) -> Outcome {
        Outcome {
            failed_workers,
            ..Outcome::exited_with(lines)
        }
    }

    #[test]
    fn a_clean_exit_fails_on_errors_counted_failed_workers_or_no_ready() {
        let ok = [
            "ready vcpu=0",
            "result name=blk-pattern write_errors=0 mismatches=0",
            "done status=ok",
        ];
        let counted = [
            "ready vcpu=0",
            "result name=blk-pattern write_errors=16 mismatches=1044480",
            "done status=ok",
        ];
        let never_ready = ["log hello"];

        assert_eq!(outcome(&ok, Some(vec![])).failure(), None);
        assert_eq!(outcome(&ok, None).failure(), None);
        let e = outcome(&counted, None).failure().unwrap();
        assert!(
            e.contains("blk-pattern saw errors: write_errors=16 mismatches=1044480"),
            "{e}"
        );
        let w = outcome(&ok, Some(vec!["virtio-blk".into()]))
            .failure()
            .unwrap();
        assert!(
            w.contains("device thread(s) failed during the run: virtio-blk"),
            "{w}"
        );
        let n = outcome(&never_ready, None);
        assert!(!n.reported_ready());
        assert!(n
            .failure()
            .unwrap()
            .contains("without ever reporting ready"));
    }

    #[test]
    fn a_reset_or_power_off_is_good_only_after_done_status_ok() {
        let ok = ["ready vcpu=0", "done status=ok"];
        let failed = [
            "ready vcpu=0",
            "error workload net-rr: no link",
            "done status=failed",
        ];
        let no_done = ["ready vcpu=0"];
        for (ending, did, without) in [
            (Ending::Reset, "reset the machine", "a panic or a reboot"),
            (Ending::PoweredOff, "powered off", "a power-off or halt"),
        ] {
            let with = |lines: &[&str]| Outcome {
                ending: ending.clone(),
                ..Outcome::exited_with(lines)
            };
            assert_eq!(with(&ok).failure(), None);
            let f = with(&failed).failure().unwrap();
            assert!(
                f.contains(&format!("and {did}: the guest reported: workload net-rr")),
                "{f}"
            );
            let n = with(&no_done).failure().unwrap();
            assert!(
                n.contains(&format!(
                    "the guest {did} without reporting done ({without})"
                )),
                "{n}"
            );
        }
    }
}
