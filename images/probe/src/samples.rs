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
        s.sort_unstable();
        let n = s.len();
        let pct = |p: usize| if n == 0 { 0 } else { s[(n - 1) * p / 1000] };
        let mean = if n == 0 {
            0
        } else {
            s.iter().sum::<u64>() / n as u64
        };
        Record::new("latency")
            .kv("workload", workload)
            .kv("name", name)
            .kv("unit", "ns")
            .kv("n", n)
            .kv("dropped", self.dropped)
            .kv("mean", mean)
            .kv("min", if n == 0 { 0 } else { s[0] })
            .kv("p50", pct(500))
            .kv("p90", pct(900))
            .kv("p99", pct(990))
            .kv("p999", pct(999))
            .kv("max", if n == 0 { 0 } else { s[n - 1] })
            .send(env);
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
