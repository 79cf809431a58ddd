//! Latency samples summarised as the probe's `latency` record.

use crate::rec::Record;

#[derive(Default)]
pub struct Samples {
    v: Vec<u64>,
}

impl Samples {
    pub fn push(&mut self, ns: u64) {
        self.v.push(ns);
    }

    pub fn extend(&mut self, other: Samples) {
        self.v.extend(other.v);
    }

    pub fn report(&mut self, workload: &str, name: &str) {
        let mut r = Record::new("latency")
            .kv("workload", workload)
            .kv("name", name)
            .kv("unit", "ns")
            .kv("n", self.v.len())
            .kv("dropped", 0);
        for (k, v) in probe_abi::latency_summary(&mut self.v) {
            r = r.kv(k, v);
        }
        r.send();
    }
}

/// The measurement window: `warmup_ms` after the start it opens (a `window-start` record),
/// `duration_ms` later it closes (`window-end`).
pub struct Window {
    start: std::time::Instant,
    warmup: std::time::Duration,
    end: std::time::Duration,
    opened: Option<std::time::Instant>,
}

impl Window {
    pub fn new(warmup_ms: u64, duration_ms: u64) -> Window {
        Window {
            start: std::time::Instant::now(),
            warmup: std::time::Duration::from_millis(warmup_ms),
            end: std::time::Duration::from_millis(warmup_ms + duration_ms),
            opened: None,
        }
    }

    /// Whether operations now count; opens the window when the warm-up is over.
    pub fn measuring(&mut self) -> bool {
        if self.opened.is_none() && self.start.elapsed() >= self.warmup {
            self.opened = Some(std::time::Instant::now());
            Record::new("window-start").send();
        }
        self.opened.is_some()
    }

    pub fn over(&self) -> bool {
        self.start.elapsed() >= self.end
    }

    /// Sends `window-end`; returns the window's length in ns.
    pub fn close(&self, ops: u64) -> u64 {
        Record::new("window-end").kv("ops", ops).send();
        self.opened
            .map(|t| t.elapsed().as_nanos() as u64)
            .unwrap_or(0)
    }
}
