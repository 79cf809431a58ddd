//! Workload arguments: `key=value` words, with an error record for anything unknown or
//! malformed (the harness turns it into a clear failure).

use core::str::SplitAsciiWhitespace;

use crate::report::Record;
use crate::Env;

pub struct Args<'a> {
    env: &'a Env,
    workload: &'a str,
    words: [(&'a str, &'a str); 16],
    used: [bool; 16],
    n: usize,
    ok: bool,
}

impl<'a> Args<'a> {
    pub fn new(env: &'a Env, workload: &'a str, args: SplitAsciiWhitespace<'a>) -> Self {
        let mut a = Args {
            env,
            workload,
            words: [("", ""); 16],
            used: [false; 16],
            n: 0,
            ok: true,
        };
        for w in args {
            match w.split_once('=') {
                Some((k, v)) if a.n < 16 => {
                    a.words[a.n] = (k, v);
                    a.n += 1;
                }
                _ => {
                    Record::new("error")
                        .text(format_args!("{workload}: argument '{w}' is not key=value"))
                        .send(env);
                    a.ok = false;
                }
            }
        }
        a
    }

    fn get(&mut self, key: &str) -> Option<&'a str> {
        let i = self.words[..self.n].iter().position(|(k, _)| *k == key)?;
        self.used[i] = true;
        Some(self.words[i].1)
    }

    pub fn str(&mut self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub fn u64(&mut self, key: &str, default: u64) -> u64 {
        match self.get(key) {
            None => default,
            Some(v) => match v.parse() {
                Ok(x) => x,
                Err(_) => {
                    self.bad(key, v, "a number");
                    default
                }
            },
        }
    }

    /// A number that must lie in `min..=max`: anything else is an error record (and the
    /// default), never silently clamped.
    pub fn u64_in(&mut self, key: &str, default: u64, min: u64, max: u64) -> u64 {
        let Some(v) = self.get(key) else {
            return default;
        };
        match v.parse::<u64>() {
            Ok(x) if (min..=max).contains(&x) => x,
            _ => {
                self.bad(key, v, format_args!("a number from {min} to {max}"));
                default
            }
        }
    }

    pub fn bad(&mut self, key: &str, value: &str, want: impl core::fmt::Display) {
        Record::new("error")
            .text(format_args!(
                "{}: {key}={value} is not valid; want {want}",
                self.workload
            ))
            .send(self.env);
        self.ok = false;
    }

    /// False (after an error record) if an argument was malformed or unknown.
    pub fn finish(self) -> bool {
        let mut ok = self.ok;
        for i in 0..self.n {
            if !self.used[i] {
                Record::new("error")
                    .text(format_args!(
                        "{}: unknown argument '{}'",
                        self.workload, self.words[i].0
                    ))
                    .send(self.env);
                ok = false;
            }
        }
        ok
    }
}

/// How a driver talks to its device per operation (issue 5, item 3): exits per operation are
/// what make an emulated device expensive, and part of them is the driver's choice. What each
/// profile does per device is documented with its driver (e1000.rs, ide.rs) and in
/// docs/probe.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The register traffic of Linux's driver for the device.
    Linux,
    /// What a polling driver needs and no more.
    Batched,
    /// virtio only: a polling driver that keeps EVENT_IDX's notification suppression (the
    /// `linux` profile's kicks) and takes no interrupts. Refused for the e1000 and IDE.
    Poll,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Linux => "linux",
            Profile::Batched => "batched",
            Profile::Poll => "poll",
        }
    }
}

impl<'a> Args<'a> {
    /// `key=` one of `options` (by name), `default` when absent; an error record otherwise.
    pub fn choice<T: Copy>(&mut self, key: &str, default: T, options: &[(&str, T)]) -> T {
        let Some(v) = self.get(key) else {
            return default;
        };
        match options.iter().find(|(n, _)| *n == v) {
            Some(&(_, t)) => t,
            None => {
                let mut want = [0u8; 64];
                let mut n = 0;
                for (i, (name, _)) in options.iter().enumerate() {
                    for &b in if i == 0 { &b""[..] } else { &b" or "[..] }
                        .iter()
                        .chain(name.as_bytes())
                    {
                        if n < want.len() {
                            want[n] = b;
                            n += 1;
                        }
                    }
                }
                let want = core::str::from_utf8(&want[..n]).unwrap_or("");
                self.bad(key, v, want);
                default
            }
        }
    }

    /// `profile=linux|batched|poll` (default linux).
    pub fn profile(&mut self) -> Profile {
        self.choice(
            "profile",
            Profile::Linux,
            &[
                ("linux", Profile::Linux),
                ("batched", Profile::Batched),
                ("poll", Profile::Poll),
            ],
        )
    }
}
