//! `vmbench merge A.json B.json ... --out DIR`: joins the results of shards (`bench --shard
//! I/N` on several CI runners) into one results.json that `gate` reads like any run. Refuses
//! files of different scenario files, run settings or kinds of host, and a case that appears
//! twice.

use std::path::PathBuf;

use anyhow::Context;

use crate::gate::{differences, host_fingerprint};
use crate::results::{self, ResultsWriter, RunResults};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The shards' results.json files.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Directory to write the merged results.json to.
    #[arg(long)]
    pub out: PathBuf,
    /// Merge shards measured on different kinds of host or guest images anyway.
    #[arg(long)]
    pub allow_env_mismatch: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no results file to merge")]
    Empty,
    #[error("{first} and {other} come from different scenario files (sha256 {a} vs {b}); merge shards of one scenario file")]
    Scenario {
        first: String,
        other: String,
        a: String,
        b: String,
    },
    #[error("{first} and {other} ran with different settings ({what}); run every shard with the same flags")]
    Settings {
        first: String,
        other: String,
        what: String,
    },
    #[error("case {case} is in both {first} and {other}; each case must come from one shard")]
    Duplicate {
        case: String,
        first: String,
        other: String,
    },
    #[error("{first} and {other} were measured in different environments ({what}); pass --allow-env-mismatch to merge them anyway")]
    Environment {
        first: String,
        other: String,
        what: String,
    },
}

/// Merges `docs` (named by `names` in messages). Pure.
pub fn merge(
    docs: Vec<RunResults>,
    names: &[String],
    allow_env_mismatch: bool,
) -> Result<RunResults, MergeError> {
    let mut docs = docs.into_iter();
    let Some(mut out) = docs.next() else {
        return Err(MergeError::Empty);
    };
    let mut owner: Vec<(String, usize)> = out.cases.iter().map(|c| (c.id.clone(), 0)).collect();
    for (k, d) in docs.enumerate() {
        let k = k + 1;
        let (first, other) = (names[0].clone(), names[k].clone());
        if d.scenario.source.sha256 != out.scenario.source.sha256 {
            return Err(MergeError::Scenario {
                first,
                other,
                a: out.scenario.source.sha256.clone(),
                b: d.scenario.source.sha256.clone(),
            });
        }
        let (ra, rb) = (&out.scenario.run, &d.scenario.run);
        let (oa, ob) = (&out.scenario.overrides, &d.scenario.overrides);
        let mut what = Vec::new();
        if ra != rb {
            what.push(format!(
                "repetitions {} vs {}, duration {} vs {} s",
                ra.repetitions, rb.repetitions, ra.duration_secs, rb.duration_secs
            ));
        }
        if oa.filter != ob.filter {
            what.push(format!("--filter {:?} vs {:?}", oa.filter, ob.filter));
        }
        if oa.shard.map(|s| s.count) != ob.shard.map(|s| s.count) {
            what.push(format!(
                "--shard {} vs {}",
                oa.shard.map_or("none".into(), |s| s.to_string()),
                ob.shard.map_or("none".into(), |s| s.to_string())
            ));
        }
        if !what.is_empty() {
            return Err(MergeError::Settings {
                first,
                other,
                what: what.join(", "),
            });
        }
        let diffs = differences(&out, &d);
        if !diffs.is_empty() && !allow_env_mismatch {
            return Err(MergeError::Environment {
                first,
                other,
                what: diffs.join("; "),
            });
        }
        for c in &d.cases {
            if let Some((_, i)) = owner.iter().find(|(id, _)| *id == c.id) {
                return Err(MergeError::Duplicate {
                    case: c.id.clone(),
                    first: names[*i].clone(),
                    other,
                });
            }
            owner.push((c.id.clone(), k));
        }
        out.started_at = out.started_at.clone().min(d.started_at.clone());
        out.updated_at = out.updated_at.clone().max(d.updated_at.clone());
        out.finished &= d.finished;
        out.interrupted = out.interrupted.or(d.interrupted);
        for m in d.images {
            if !out.images.contains(&m) {
                out.images.push(m);
            }
        }
        out.calibration = out.calibration.or(d.calibration);
        out.scenario.cases.extend(d.scenario.cases);
        out.cases.extend(d.cases);
        for w in d.scenario.warnings {
            if !out.scenario.warnings.contains(&w) {
                out.scenario.warnings.push(w);
            }
        }
    }
    // The scenario's order, so that a merged run reads like an unsharded one.
    out.scenario.cases.sort_by_key(|c| c.index);
    let order: Vec<String> = out.scenario.cases.iter().map(|c| c.id.clone()).collect();
    out.cases.sort_by_key(|c| {
        order
            .iter()
            .position(|id| *id == c.id)
            .unwrap_or(usize::MAX)
    });
    out.scenario.overrides.shard = None;
    out.comparisons = out.compare(
        &out.scenario.comparison_pairs(),
        &out.scenario.run.bootstrap(),
    );
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let names: Vec<String> = args.files.iter().map(|p| p.display().to_string()).collect();
    let docs = args
        .files
        .iter()
        .map(|p| results::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = merge(docs, &names, args.allow_env_mismatch)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let cases = merged.cases.len();
    let fingerprint = host_fingerprint(&merged.environment);
    let w = ResultsWriter::create(&args.out, merged)?;
    eprintln!(
        "merged {} files, {cases} cases (host {fingerprint}) -> {}",
        names.len(),
        w.path().display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::synthetic::{self, Draw, TWELVE};
    use crate::scenario::{Overrides, Shard};

    fn shard(i: u32, n: u32, seed: u64) -> RunResults {
        let mut d = synthetic::uniform(
            TWELVE,
            Draw {
                factor: 1.0,
                noise: 0.01,
                repetitions: 3,
                seed,
            },
        );
        let s = Shard { index: i, count: n };
        d.scenario
            .apply(&Overrides {
                shard: Some(s),
                ..Default::default()
            })
            .unwrap();
        let keep: Vec<String> = d.scenario.cases.iter().map(|c| c.id.clone()).collect();
        d.cases.retain(|c| keep.contains(&c.id));
        d
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}.json")).collect()
    }

    #[test]
    fn shards_merged_equal_the_full_case_list() {
        let full = synthetic::uniform(
            TWELVE,
            Draw {
                factor: 1.0,
                noise: 0.01,
                repetitions: 3,
                seed: 1,
            },
        );
        let all: Vec<String> = full.cases.iter().map(|c| c.id.clone()).collect();
        for n in [2, 3, 5] {
            let shards: Vec<RunResults> = (1..=n).map(|i| shard(i, n, u64::from(i))).collect();
            let sizes: Vec<usize> = shards.iter().map(|s| s.cases.len()).collect();
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
            // Reversed order on purpose: the merge restores the scenario's order.
            let merged = merge(
                shards.into_iter().rev().collect(),
                &names(n as usize),
                false,
            )
            .unwrap();
            let ids: Vec<String> = merged.cases.iter().map(|c| c.id.clone()).collect();
            assert_eq!(ids, all, "{n} shards");
            assert_eq!(merged.scenario.cases.len(), 12);
            assert!(merged.scenario.overrides.shard.is_none());
        }
    }

    #[test]
    fn duplicated_cases_and_other_scenarios_are_refused() {
        let a = shard(1, 2, 1);
        let e = merge(vec![a.clone(), a.clone()], &names(2), false).unwrap_err();
        assert!(matches!(e, MergeError::Duplicate { .. }), "{e}");
        assert!(
            e.to_string().contains("is in both s0.json and s1.json"),
            "{e}"
        );

        let mut b = shard(2, 2, 2);
        b.scenario.source.sha256 = "0".repeat(64);
        let e = merge(vec![a.clone(), b], &names(2), false).unwrap_err();
        assert!(matches!(e, MergeError::Scenario { .. }), "{e}");

        let mut b = shard(2, 2, 2);
        b.environment.host.cores = 64;
        let e = merge(vec![a.clone(), b.clone()], &names(2), false).unwrap_err();
        assert!(e.to_string().contains("host cores: '2' vs '64'"), "{e}");
        assert!(merge(vec![a, b], &names(2), true).is_ok());
    }

    #[test]
    fn bad_shard_specs_are_refused() {
        for s in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(s.parse::<Shard>().is_err(), "{s}");
        }
        assert_eq!(
            "2/3".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 3 }
        );
    }
}
