//! A workload's `key=value` arguments: every key must be one the workload knows.

use std::str::FromStr;

pub struct Args<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Args<'a> {
    /// Splits `words` into pairs; a word without `=` or a key not in `known` is an error that
    /// names it and lists the known keys.
    pub fn parse(words: &[&'a str], known: &[&str]) -> Result<Args<'a>, String> {
        let mut pairs = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(format!("argument `{w}` is not key=value"));
            };
            if !known.contains(&k) {
                return Err(if known.is_empty() {
                    format!("unknown argument `{k}`; this workload takes none")
                } else {
                    format!("unknown argument `{k}`; it takes {}", known.join(", "))
                });
            }
            pairs.push((k, v));
        }
        Ok(Args { pairs })
    }

    pub fn str(&self, key: &str, default: &'a str) -> &'a str {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .unwrap_or(default)
    }

    pub fn num<T: FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.pairs.iter().rev().find(|(k, _)| *k == key) {
            Some((_, v)) => v
                .parse()
                .map_err(|_| format!("`{key}={v}` is not a valid number")),
            None => Ok(default),
        }
    }
}
