//! The measurement window every timed workload shares: a warm-up, then `duration_ms` during
//! which operations count, marked by `window-start` and `window-end` records (the VMM
//! attaches its exit counters and CPU time to both, so the harness can charge exactly the
//! window's cost to its operations).

use crate::io::rdtsc;
use crate::report::Record;
use crate::Env;

pub struct Window {
    warm_end: u64,
    /// The window's length in TSC ticks.
    length: u64,
    /// When the window closes: `length` after it opened (not after the warm-up was due, so a
    /// vCPU descheduled across the planned window still measures a whole one).
    end: u64,
    start: Option<u64>,
}

impl Window {
    /// Starts the warm-up now.
    pub fn new(env: &Env, warmup_ms: u64, duration_ms: u64) -> Window {
        let khz = u64::from(env.tsc_khz);
        let warm_end = rdtsc() + warmup_ms * khz;
        Window {
            warm_end,
            length: duration_ms * khz,
            end: u64::MAX,
            start: None,
        }
    }

    /// At TSC `now`: opens the window (sending `window-start`) once the warm-up is over, and
    /// says whether an operation started now counts.
    pub fn tick(&mut self, env: &Env, now: u64) -> bool {
        if self.start.is_none() && now >= self.warm_end {
            self.start = Some(now);
            self.end = now.saturating_add(self.length);
            Record::new("window-start").send(env);
        }
        self.start.is_some() && now < self.end
    }

    /// The window is over at `now` (never before it opened: see [`Window::tick`]).
    pub fn over(&self, now: u64) -> bool {
        now >= self.end
    }

    /// Sends `window-end` with the operations counted; returns the window's length in ns.
    pub fn close(&self, env: &Env, ops: u64) -> u64 {
        let now = rdtsc();
        let start = self.start.unwrap_or(now);
        let ns = env.ns(now.min(self.end).saturating_sub(start));
        Record::new("window-end").kv("ops", ops).send(env);
        ns
    }
}
