//! Latency samples: kept in probe memory during the window, summarised as percentiles after
//! it, and optionally sent raw (in `samples` records of 64 values) for the harness to keep.

use crate::report::Record;
use crate::Env;

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
        if raw {
            for chunk in s.chunks(64) {
                Record::new("samples")
                    .kv("name", name)
                    .text(format_args!("{}", Joined(chunk)))
                    .send(env);
            }
        }
        let mut r = Record::new("latency")
            .kv("workload", workload)
            .kv("name", name)
            .kv("unit", "ns")
            .kv("n", s.len())
            .kv("dropped", self.dropped);
        for (k, v) in probe_abi::latency_summary(s) {
            r = r.kv(k, v);
        }
        r.send(env);
    }
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
