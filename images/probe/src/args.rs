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

    pub fn bad(&mut self, key: &str, value: &str, want: &str) {
        Record::new("error")
            .text(format_args!("{}: {key}={value} is not valid; want {want}", self.workload))
            .send(self.env);
        self.ok = false;
    }

    /// False (after an error record) if an argument was malformed or unknown.
    pub fn finish(self) -> bool {
        let mut ok = self.ok;
        for i in 0..self.n {
            if !self.used[i] {
                Record::new("error")
                    .text(format_args!("{}: unknown argument '{}'", self.workload, self.words[i].0))
                    .send(self.env);
                ok = false;
            }
        }
        ok
    }
}
