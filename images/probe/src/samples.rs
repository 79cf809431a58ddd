//! Latency samples: kept in probe memory during the window, summarised as percentiles after
//! it, and optionally sent raw (in `samples` records of 64 values) for the harness to keep.
//!
//! Without vmbench's mailbox (under QEMU) every byte of a record is a port write and an exit:
//! a million samples would take minutes to send. There the raw samples are a systematic
//! subsample, every `raw_stride`-th, at most [`RAW_MAX_WITHOUT_MAILBOX`]; the `latency`
//! record says the stride and its percentiles are always over every sample.

use crate::report::{has_mailbox, Record};
use crate::Env;

/// The most raw samples sent when each record byte is an exit (~60 KB of text).
pub const RAW_MAX_WITHOUT_MAILBOX: usize = 8192;

pub struct Samples {
    buf: &'static mut [u64],
    n: usize,
    dropped: u64,
}

impl Samples {
    pub fn new(cap: usize) -> Samples {
        let addr = crate::alloc::alloc(cap as u64 * 8, 4096);
        let buf = match addr {
            // SAFETY: freshly allocated, owned by this struct for the rest of the run.
            Some(a) => unsafe { crate::alloc::slice::<u64>(a, cap) },
            None => &mut [],
        };
        Samples {
            buf,
            n: 0,
            dropped: 0,
        }
    }

    pub fn push(&mut self, v: u64) {
        if let Some(slot) = self.buf.get_mut(self.n) {
            *slot = v;
            self.n += 1;
        } else {
            self.dropped += 1;
        }
    }

    /// Sends the raw samples (if asked) and a `latency` summary record.
    pub fn report(&mut self, env: &Env, workload: &str, name: &str, raw: bool) {
        let s = &mut self.buf[..self.n];
        let stride = if has_mailbox(&env.boot) {
            1
        } else {
            s.len().div_ceil(RAW_MAX_WITHOUT_MAILBOX).max(1)
        };
        if raw {
            let mut chunk = [0u64; 64];
            let mut k = 0;
            for &v in s.iter().step_by(stride) {
                chunk[k] = v;
                k += 1;
                if k == chunk.len() {
                    send_samples(env, name, &chunk);
                    k = 0;
                }
            }
            if k > 0 {
                send_samples(env, name, &chunk[..k]);
            }
        }
        let mut r = Record::new("latency")
            .kv("workload", workload)
            .kv("name", name)
            .kv("unit", "ns")
            .kv("n", s.len())
            .kv("dropped", self.dropped);
        if raw {
            r = r.kv("raw_stride", stride);
        }
        for (k, v) in probe_abi::latency_summary(s) {
            r = r.kv(k, v);
        }
        r.send(env);
    }
}

fn send_samples(env: &Env, name: &str, values: &[u64]) {
    Record::new("samples")
        .kv("name", name)
        .text(format_args!("{}", Joined(values)))
        .send(env);
}

/// Space-separated numbers.
struct Joined<'a>(&'a [u64]);

impl core::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}
