//! `--shard I/N`: a deterministic, balanced share of a scenario's cases for one of N CI
//! runners. Cases are dealt longest first to the least loaded shard (Graham's LPT rule,
//! 1969) by an estimate of their time, ties broken by case index, so every runner computes the
//! same split and the shards' wall times stay within one case of each other.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Case, RunSettings};

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard '{s}': expected I/N with 1 <= I <= N, e.g. 1/2");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl TryFrom<String> for Shard {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        s.to_string()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Seconds one repetition of `case` is expected to take: boot and teardown, plus the
/// measurement window for windowed workloads.
fn estimate(case: &Case, run: &RunSettings) -> f64 {
    let window = if case.params.workload.kind().is_windowed() {
        run.warmup_secs + run.duration_secs
    } else {
        0.0
    };
    RunSettings::SLACK_SECS + window
}

impl Shard {
    /// The cases of this shard, in their original order.
    pub fn select(self, cases: Vec<Case>, run: &RunSettings) -> Vec<Case> {
        let mut order: Vec<usize> = (0..cases.len()).collect();
        order.sort_by(|&a, &b| {
            estimate(&cases[b], run)
                .total_cmp(&estimate(&cases[a], run))
                .then(cases[a].index.cmp(&cases[b].index))
        });
        let mut load = vec![0.0f64; self.count as usize];
        let mut owner = vec![0usize; cases.len()];
        for i in order {
            let (least, _) = load
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(&b.0)))
                .unwrap_or((0, &0.0));
            load[least] += estimate(&cases[i], run);
            owner[i] = least;
        }
        cases
            .into_iter()
            .zip(owner)
            .filter(|(_, o)| *o + 1 == self.index as usize)
            .map(|(c, _)| c)
            .collect()
    }
}
