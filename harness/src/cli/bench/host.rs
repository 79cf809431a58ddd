//! `bench SCENARIO --host emulated`: the whole run inside the emulated AMD-V host
//! (`crate::emulated`), for Linux guests on vmbench's VMM where this host cannot run guest
//! kernel code. This side checks the scenario and the flags, builds the guest images (the
//! emulated host has no toolchain and no mirror), shares them with the scenario, and runs
//! `bench` there with `--prebuilt-images`; the vmbench inside writes results.json into the
//! share as it goes, and this side takes it (whatever was written, also when the emulated
//! host failed), renders the report here and prints the summary. The results say where they
//! were measured (`environment.kvm.emulated_host`): figures that check function, not speed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{linux_image, Args};
use crate::emulated::{self, HostCommand, Work};
use crate::exitcode::Failed;
use crate::results;
use crate::scenario::{EngineKind, Scenario};

/// What one guest boot costs in the emulated host beyond its scenario limits: vmbench setting
/// up and tearing down the VM, and the scratch disk, all under TCG.
const PER_BOOT: Duration = Duration::from_secs(30);

/// The calibration run the inner bench starts with (the probe's own 10 s ready and 60 s run
/// limits).
const CALIBRATION: Duration = Duration::from_secs(70);

/// The share's run directory, as seen from inside and here.
const INNER_RUN: &str = "run";

/// Refuses, before anything starts, what would mean nothing in the emulated host.
pub fn check(args: &Args) -> anyhow::Result<()> {
    let timing = "they compare timings, and timings in the emulated host are not real (it checks function: devices under real drivers); run them on a host with hardware virtualization";
    if args.aa || args.ab.is_some() || args.ab_rev.is_some() {
        bail!("--host emulated cannot run --aa or --ab: {timing}");
    }
    if args.target_ci.is_some() {
        bail!("--host emulated cannot run --target-ci: it narrows intervals of timings, and timings in the emulated host are not real; give --repetitions instead");
    }
    if args.prebuilt_images.is_some() {
        bail!("--prebuilt-images is what --host emulated hands the vmbench inside; the two do not go together");
    }
    Ok(())
}

/// Whether the emulated host must carry QEMU: cases on engine qemu run QEMU-KVM on its
/// kvm-amd, as vmbench's VMM runs there.
fn needs_qemu(scenario: &Scenario) -> bool {
    scenario
        .cases
        .iter()
        .any(|c| c.params.engine == EngineKind::Qemu)
}

/// How long the inner bench may take: each repetition's guest limits and [`PER_BOOT`], and
/// the calibration.
pub fn budget(scenario: &Scenario) -> Duration {
    let run = &scenario.run;
    let per_repetition =
        Duration::from_secs_f64(run.ready_timeout_secs + run.run_timeout_secs) + PER_BOOT;
    let repetitions = scenario.cases.len() as u32 * run.repetitions;
    per_repetition * repetitions + CALIBRATION
}

/// The scenario as this run sees it (flags applied) and the inner `bench` command, its
/// inputs (the scenario file, the guest images built here) put in `work`. Refuses what
/// [`check`] refuses. The command and the CLI's run share it with the tests, which run it
/// next to other commands in one emulated host.
pub fn prepare(args: &Args, work: &mut Work) -> anyhow::Result<(Scenario, HostCommand)> {
    let mut scenario = Scenario::load(&args.scenario)?;
    super::apply_flags(&mut scenario, args, args.repetitions)?;
    check(args)?;
    let probe =
        images::probe::build(&mut |m| eprintln!("{m}")).context("cannot build the probe guest")?;
    let linux = linux_image(&scenario)?;
    let mut command = HostCommand::with_budget(
        inner_args(args, &scenario, work, [Some(probe), linux])?,
        budget(&scenario),
    )?;
    command.qemu = needs_qemu(&scenario);
    Ok((scenario, command))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    crate::engine::qemu::find_qemu().context("--host emulated boots the emulated host on QEMU")?;
    let mut work = Work::new()?;
    let (scenario, command) = prepare(args, &mut work)?;
    let (dir, id, _run_dir) = super::run_dir(args)?;
    eprintln!(
        "run {id}: {} cases x {} repetitions in the emulated host (allowed {} s) -> {}",
        scenario.cases.len(),
        scenario.run.repetitions,
        command.budget.as_secs(),
        dir.join(results::RESULTS_FILE).display()
    );
    let started = Instant::now();
    let ran = emulated::run(&work, &[command], &mut |_, line| {
        eprintln!("  emulated host | {line}")
    });
    // Whatever the vmbench inside wrote is kept, also when the emulated host failed.
    let taken = take_results(&work, &dir);
    let codes = match ran {
        Ok(codes) => codes,
        Err(e) => {
            let kept = match &taken {
                Ok(doc) => format!(
                    "the {} repetition(s) it finished are kept in {}",
                    doc.cases.iter().map(|c| c.repetitions.len()).sum::<usize>(),
                    dir.join(results::RESULTS_FILE).display()
                ),
                Err(_) => "it had written no results".into(),
            };
            return Err(e.context(format!("the emulated host failed; {kept}")));
        }
    };
    let doc = taken?;
    // The windows' time passed inside; the wall time here includes the host's boot.
    super::present(&dir, &doc, args.json, None, started.elapsed())?;
    let failed: Vec<&str> = doc
        .cases
        .iter()
        .filter(|c| c.is_failed() || c.status == results::CaseStatus::Pending)
        .map(|c| c.id.as_str())
        .collect();
    match codes.first().copied().flatten() {
        Some(0) if failed.is_empty() => Ok(()),
        Some(0) | Some(1) => Err(Failed(format!(
            "{} case(s) failed or did not finish in the emulated host: {}; the results are in {}",
            failed.len(),
            failed.join("; "),
            dir.join(results::RESULTS_FILE).display()
        ))
        .into()),
        Some(n) => bail!(
            "bench ended with exit code {n} in the emulated host (its output is above); what it wrote is in {}",
            dir.join(results::RESULTS_FILE).display()
        ),
        None => bail!("the emulated host ended before its bench did (its output is above)"),
    }
}

/// The inner `bench` command: the scenario and the images put in the share, this run's
/// overrides passed on.
fn inner_args(
    args: &Args,
    scenario: &Scenario,
    work: &mut Work,
    manifests: [Option<images::manifest::Manifest>; 2],
) -> anyhow::Result<Vec<String>> {
    let name = args
        .scenario
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.starts_with('.') && !n.contains(char::is_whitespace))
        .unwrap_or("scenario.toml");
    let scenario_in = work.add(&args.scenario, name, false)?;
    let mut shared = Vec::new();
    for mut m in manifests.into_iter().flatten() {
        for a in &mut m.artifacts {
            let inside = work.add(&a.path, &format!("{}-{}", m.image, a.name), false)?;
            a.path = PathBuf::from(inside);
        }
        shared.push(m);
    }
    std::fs::write(
        work.path().join("images.json"),
        serde_json::to_vec_pretty(&shared)?,
    )
    .context("cannot write the images' manifests into the share")?;
    let mut v: Vec<String> = vec![
        "bench".into(),
        scenario_in,
        "--out".into(),
        format!("/work/{INNER_RUN}"),
        "--prebuilt-images".into(),
        "/work/images.json".into(),
    ];
    let run = &scenario.run;
    v.extend(["--repetitions".into(), run.repetitions.to_string()]);
    v.extend(["--duration".into(), run.duration_secs.to_string()]);
    if let Some(f) = &args.filter {
        v.extend(["--filter".into(), f.clone()]);
    }
    if let Some(s) = &args.shard {
        v.extend(["--shard".into(), s.to_string()]);
    }
    Ok(v)
}

/// Copies the results.json the inner bench wrote (all of it, or what it wrote before it
/// stopped) into `dir` and reads it.
pub fn take_results(work: &Work, dir: &Path) -> anyhow::Result<results::RunResults> {
    let from = work.path().join(INNER_RUN).join(results::RESULTS_FILE);
    if !from.exists() {
        bail!(
            "the bench in the emulated host wrote no {} (its output is above)",
            results::RESULTS_FILE
        );
    }
    let to = dir.join(results::RESULTS_FILE);
    std::fs::copy(&from, &to).with_context(|| {
        format!(
            "cannot copy the emulated host's results to {}",
            to.display()
        )
    })?;
    results::load(&to).with_context(|| format!("the emulated host's {}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Overrides;

    fn parse(words: &str) -> Args {
        let words: Vec<&str> = std::iter::once("bench")
            .chain(words.split_whitespace())
            .collect();
        super::super::parse(&words).unwrap()
    }

    const LINUX_ON_BOTH: &str = r#"
name = "both"
description = "a Linux guest on both engines"
guest = "linux"
[workload]
name = "net-rr"
[run]
repetitions = 2
ready_timeout_secs = 100
run_timeout_secs = 20
[matrix]
device = [{ nic = "e1000" }]
engine = ["vmbench", "qemu"]
"#;

    #[test]
    fn what_the_emulated_host_would_not_mean_is_refused() {
        check(&parse("s.toml --host emulated")).unwrap();
        for flags in ["--aa", "--ab /bin/true", "--ab-rev HEAD", "--target-ci 5"] {
            let e = check(&parse(&format!("s.toml --host emulated {flags}"))).unwrap_err();
            assert!(e.to_string().contains("not real"), "{flags}: {e}");
        }
        let e = check(&parse("s.toml --host emulated --prebuilt-images x.json")).unwrap_err();
        assert!(e.to_string().contains("--prebuilt-images"), "{e}");
    }

    #[test]
    fn cases_on_qemu_put_qemu_in_the_emulated_host() {
        let s = Scenario::parse("both.toml", LINUX_ON_BOTH).unwrap();
        assert!(needs_qemu(&s));
        let mut only_ours = s.clone();
        only_ours
            .apply(&Overrides {
                filter: Some("engine=vmbench".into()),
                ..Default::default()
            })
            .unwrap();
        assert!(!needs_qemu(&only_ours));
    }

    #[test]
    fn the_inner_bench_gets_each_repetitions_limits() {
        let mut s = Scenario::parse("both.toml", LINUX_ON_BOTH).unwrap();
        s.apply(&Overrides {
            filter: Some("engine=vmbench".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.cases.len(), 1);
        // 2 repetitions of (100 + 20 + 30) s, and the calibration.
        assert_eq!(budget(&s), Duration::from_secs(2 * 150 + 70));
    }
}
