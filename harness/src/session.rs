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
    /// CPU time of the VMM process when the record arrived (mailbox records only).
    pub cpu: Option<vmm::event::CpuTime>,
    /// KVM's own cumulative counters then (mailbox records on hosts that offer them).
    pub kvm: Option<std::collections::BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Default)]
pub struct Timeline {
    pub begin: Option<Instant>,
    pub setup_done: Option<Instant>,
    pub started: Option<Instant>,
    pub first_instruction: Vec<Option<Instant>>,
    pub ready: Vec<Option<Instant>>,
    pub exit: Option<Instant>,
}

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
    /// From `Machine::new` to vCPU 0's `ready`.
    pub fn total_ms(&self) -> Option<f64> {
        Self::ms(self.begin, self.ready.first().copied().flatten())
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
    /// The user interrupted the run (Ctrl-C); the VM was stopped.
    Cancelled,
    /// The guest reset the machine (on vmbench's VMM: a Linux guest's i8042 reset after its
    /// power-off, reboot or panic). Its own status is its `done` record.
    Reset,
    /// The engine (QEMU) ended without the guest's exit status; it says no more than this
    /// (no vCPU, no registers).
    EngineEnded { reason: String },
}

/// Set from a signal handler to stop the session in progress promptly.
pub static CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    CANCEL.store(true, std::sync::atomic::Ordering::SeqCst);
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
    /// Device operation counters at the end (requests, frames, kicks...).
    pub device_counters:
        std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
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
        match &self.ending {
            Ending::Exited { code: 0 } => None,
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
            Ending::Cancelled => Some("interrupted by Ctrl-C; the VM was stopped".into()),
            Ending::Reset => match self.records_of("done").last() {
                Some(d) if d.record.get("status") == Some("ok") => None,
                Some(d) => Some(format!(
                    "the guest reported '{}' and reset the machine: {}",
                    d.record,
                    self.guest_error().unwrap_or_else(|| self.last_words())
                )),
                None => Some(format!(
                    "the guest reset the machine without reporting done (a panic or a reboot); {}",
                    self.last_words()
                )),
            },
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
    m.start()?;
    timeline.started = m.times().started;
    let start = Instant::now();
    let mut records = Vec::new();
    let mut console: VecDeque<String> = VecDeque::new();
    let ending = loop {
        let (phase, deadline) = match timeline.ready[0] {
            None => ("ready", start + limits.ready),
            Some(r) => ("run", r + limits.run),
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
            Event::Console { line, at } => {
                if let Some(record) = Record::parse(&line) {
                    let t = Timed {
                        record,
                        vcpu: None,
                        at,
                        exits: None,
                        cpu: None,
                        kvm: None,
                    };
                    note_ready(&mut timeline, &t);
                    on_record(&t);
                    records.push(t);
                } else {
                    if console.len() == CONSOLE_TAIL {
                        console.pop_front();
                    }
                    console.push_back(line);
                }
            }
            Event::Record {
                vcpu,
                text,
                at,
                exits,
                cpu,
                kvm,
            } => {
                if let Some(record) = Record::parse(&text) {
                    let t = Timed {
                        record,
                        vcpu: Some(vcpu),
                        at,
                        exits: Some(exits),
                        cpu: Some(cpu),
                        kvm: (!kvm.is_empty()).then_some(kvm),
                    };
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
        device_counters: m.device_counters(),
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
}

/// The cost of the measured window, from the exit snapshots the mailbox records carry;
/// `None` where the engine does not count exits (QEMU).
///
/// The doorbell exit that delivered `window-start` is counted after its snapshot, so it falls
/// inside the window; it belongs to vmbench's side channel, not to the device under test, and
/// is taken out.
pub fn window(out: &Outcome) -> Option<Window> {
    let start = out.records_of("window-start").next()?;
    let end = out.records_of("window-end").next()?;
    let mut exits = end.exits.as_ref()?.since(start.exits.as_ref()?).total();
    if let Some(n) = exits.by_device.remove("mailbox") {
        if let Some(out) = exits.by_reason.get_mut("pio_out") {
            *out = out.saturating_sub(n);
        }
        exits.by_reason.retain(|_, v| *v > 0);
    }
    let kvm = match (&start.kvm, &end.kvm) {
        (Some(a), Some(b)) => b
            .iter()
            .filter_map(|(k, v)| {
                let d = v.saturating_sub(a.get(k).copied().unwrap_or(0));
                (d > 0).then(|| (k.clone(), d))
            })
            .collect(),
        _ => Default::default(),
    };
    Some(Window {
        ops: end.record.get_u64("ops").unwrap_or(0),
        exits,
        cpu: end.cpu?.since(&start.cpu?),
        kvm,
    })
}
