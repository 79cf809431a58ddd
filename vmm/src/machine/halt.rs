//! The halt watch: ends a Linux guest's machine once none of its vCPUs can ever run again.
//!
//! vmbench's machine has no ACPI, so Linux cannot power it off: `poweroff` (and `halt`) end
//! with every CPU in `stop_this_cpu`, halted with interrupts masked, forever. With the in-kernel
//! local APIC such a HLT never leaves KVM_RUN, so the VMM sees nothing. The watch looks instead:
//! a vCPU whose KVM exit count has not moved since the last look (or every vCPU, where KVM has
//! no binary stats) is kicked out of KVM_RUN and asked, on its own thread, for its state
//! ([`vcpu::Liveness`]). When every vCPU is halted with interrupts masked or still waits for
//! its start-up IPIs, only a vCPU could wake another and none can run: the machine is off, and
//! the watch says so ([`Event::Halted`]) as the i8042 says a reset.
//!
//! A vCPU that exits on its own (it is running) is never kicked, so a busy guest's exit counts
//! are untouched; the watch's kicks are not counted as exits.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::event::Event;
use crate::kvm::stats::VcpuStats;
use crate::kvm::vcpu::{self, Liveness};

/// How often the watch looks. A powered-off machine ends within about two of these.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// The KVM statistic that moves whenever a vCPU leaves guest mode.
const EXITS_STAT: &str = "exits";

/// One watched vCPU: its thread (to kick it) and its answers.
pub struct Watched {
    pub thread: libc::pthread_t,
    pub liveness: Arc<Liveness>,
}

impl Watched {
    pub fn new<T>(thread: &JoinHandle<T>, liveness: Arc<Liveness>) -> Watched {
        Watched {
            thread: thread.as_pthread_t(),
            liveness,
        }
    }
}

/// Starts the watch; it ends when `stop` is set (by it, after reporting, or by the owner).
/// The owner joins it before joining the vCPU threads it kicks.
pub fn spawn(
    vcpus: Vec<Watched>,
    stats: Arc<OnceLock<Vec<VcpuStats>>>,
    stop: Arc<AtomicBool>,
    events: Sender<Event>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("halt-watch".into())
        .spawn(move || watch(&vcpus, &stats, &stop, &events))
}

fn watch(
    vcpus: &[Watched],
    stats: &OnceLock<Vec<VcpuStats>>,
    stop: &AtomicBool,
    events: &Sender<Event>,
) {
    let mut last_exits: Vec<Option<u64>> = vec![None; vcpus.len()];
    loop {
        if !sleep_unless_stopped(INTERVAL, stop) {
            return;
        }
        // Per-vCPU stats only when every vCPU has them (they are opened in vCPU order).
        let stats = stats.get().filter(|s| s.len() == vcpus.len());
        let mut all_stuck = true;
        for (i, v) in vcpus.iter().enumerate() {
            let exits = stats.and_then(|s| s[i].read().get(EXITS_STAT).copied());
            let moved = exits.is_some() && exits != last_exits[i];
            last_exits[i] = exits;
            if moved || !v.liveness.stuck() {
                all_stuck = false;
            }
            if !moved {
                // Quiet since the last look: ask again (the answer may be stale, or the last
                // kick may have landed while the thread was out of KVM_RUN).
                v.liveness.ask();
                // SAFETY: the thread is a vCPU thread of this machine, not yet joined (the
                // owner joins the watch first), so its pthread_t is valid; the kick signal's
                // handler is installed and does nothing.
                unsafe {
                    libc::pthread_kill(v.thread, vcpu::kick_signal());
                }
            }
        }
        if all_stuck {
            log::info!("every vCPU is halted with interrupts off: the guest powered off");
            stop.store(true, Ordering::SeqCst);
            let _ = events.send(Event::Halted { at: Instant::now() });
            return;
        }
    }
}

/// Sleeps `d` in short slices; false if `stop` was set meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(10)));
    }
}
