//! `vmbench bench SCENARIO.toml`: the main job. Expands the scenario, runs every case's
//! repetitions interleaved (A B C, B C A, ...) each on a freshly booted guest, keeps every
//! raw sample, writes `results.json` after every repetition, computes statistics and
//! comparisons, optionally keeps sampling until the intervals are narrow enough, and prints a
//! summary.

mod ab;
mod metrics;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{self, chain, Engine, GuestSpec};
use crate::exitcode::Failed;
use crate::results::{
    self, collect_environment, create_run_dir, run_id, Calibration, CaseStatus, ResultsWriter,
    RunResults,
};
use crate::scenario::{Case, EngineKind, Overrides, Scenario, Shard, Slot};
use crate::session::{self, Limits, Outcome};

pub use ab::OTHER_BUILD_FAILED;
pub use metrics::primary;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The scenario file (scenarios/*.toml).
    pub scenario: PathBuf,
    /// Where to write results.json (default: results/<run-id>/).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Repetitions per case, overriding the scenario.
    #[arg(long)]
    pub repetitions: Option<u32>,
    /// Measurement window in seconds, overriding the scenario.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Only the cases whose id contains PATTERN (or matches it as a glob; `a|b` for either).
    #[arg(long)]
    pub filter: Option<String>,
    /// Keep adding interleaved repetitions until every case's 95% interval of the median of
    /// its primary metric is narrower than PCT percent of the median.
    #[arg(long, value_name = "PCT")]
    pub target_ci: Option<f64>,
    /// Time budget in seconds for --target-ci (default 600).
    #[arg(long, value_name = "SECS")]
    pub budget: Option<f64>,
    /// Print the results document as JSON on stdout instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Run only shard I of N: a deterministic, balanced share of the cases, for CI matrices
    /// (`vmbench merge` joins the shards' results).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// A/A: run every case against itself, twice the repetitions in the order A B B A, and
    /// store each case's noise floor for this host (results/noise/<host fingerprint>.json).
    #[arg(long, conflicts_with_all = ["ab", "ab_rev"])]
    pub aa: bool,
    /// A/B: also run every case on OTHER_VMBENCH (another build, the baseline), interleaved
    /// A B B A in one results file; `gate --ab` reads it. OTHER must speak the run-one
    /// protocol (docs/ci.md).
    #[arg(long, value_name = "OTHER_VMBENCH", conflicts_with = "ab_rev")]
    pub ab: Option<PathBuf>,
    /// A/B against git revision REV of this source tree, built in a temporary worktree.
    #[arg(long, value_name = "REV")]
    pub ab_rev: Option<String>,
    /// With --aa or --ab: up to N times, add a pair of rounds (one A-first, one B-first) for
    /// the cases the gate (at its default 5% threshold and alpha 0.05) finds inconclusive.
    #[arg(long, value_name = "N")]
    pub retry_suspects: Option<u32>,
}

/// `vmbench run-one`: one repetition of one case, printed as one line of JSON (the interface
/// an A/B run drives the other build through; docs/ci.md).
#[derive(clap::Args, Debug, Clone)]
pub struct RunOneArgs {
    pub scenario: PathBuf,
    #[arg(long)]
    pub case: String,
    /// The repetition's index (its place in the schedule).
    #[arg(long)]
    pub index: u32,
    #[arg(long)]
    pub duration: Option<f64>,
}

/// `vmbench protocol`: the interfaces this build speaks, as JSON.
pub fn protocol() -> anyhow::Result<()> {
    println!("{}", serde_json::json!({ "run_one": ab::RUN_ONE_PROTOCOL }));
    Ok(())
}

pub fn run_one(args: RunOneArgs) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    scenario.apply(&Overrides {
        duration_secs: args.duration,
        ..Default::default()
    })?;
    let Some(case) = scenario.case(&args.case).cloned() else {
        bail!(
            "{}: no case {}; ids look like {}",
            args.scenario.display(),
            args.case,
            scenario.cases.first().map_or("", |c| c.id.as_str())
        );
    };
    check_requirements(&scenario)?;
    let manifest =
        images::probe::build(&mut |m| eprintln!("{m}")).context("cannot build the probe guest")?;
    let dir = std::env::temp_dir().join(format!("vmbench-run-one-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut runner = Runner {
        scenario: &scenario,
        probe: manifest.artifacts[0].path.clone(),
        dir: dir.clone(),
        disks: BTreeMap::new(),
        measured: Duration::ZERO,
        other: None,
    };
    let result = runner.repetition(&case, args.index);
    runner.remove_disks();
    let _ = std::fs::remove_dir_all(&dir);
    let out = match result {
        Ok(r) => ab::RunOneOutput {
            run_one: ab::RUN_ONE_PROTOCOL,
            repetition: Some(r),
            failed: None,
        },
        Err((reason, console_tail)) => ab::RunOneOutput {
            run_one: ab::RUN_ONE_PROTOCOL,
            repetition: None,
            failed: Some(ab::RunOneFailure {
                reason,
                console_tail,
            }),
        },
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// True once the user pressed Ctrl-C (or the process got SIGTERM).
pub fn interrupted() -> bool {
    session::CANCEL.load(Ordering::SeqCst)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    let two_sided = args.aa || args.ab.is_some() || args.ab_rev.is_some();
    if args.retry_suspects.is_some() && !two_sided {
        bail!("--retry-suspects needs --aa, --ab or --ab-rev: suspects are cases whose two sides the gate cannot tell apart yet");
    }
    if two_sided && args.target_ci.is_some() {
        bail!("--target-ci cannot be combined with --aa or --ab: both sides must keep the A B B A order");
    }
    let repetitions = match two_sided {
        // Each side gets what one run would have.
        true => {
            let per_side = args.repetitions.unwrap_or(scenario.run.repetitions);
            if (per_side as usize) < crate::gate::MIN_REPETITIONS {
                bail!(
                    "--aa and --ab need at least {} repetitions a side, got {per_side}; pass --repetitions {}",
                    crate::gate::MIN_REPETITIONS,
                    crate::gate::MIN_REPETITIONS
                );
            }
            Some(2 * per_side)
        }
        false => args.repetitions,
    };
    scenario.apply(&Overrides {
        repetitions,
        duration_secs: args.duration,
        filter: args.filter.clone(),
        shard: args.shard,
    })?;
    if scenario.cases.is_empty() {
        bail!(
            "{}: no case to run (check --filter)",
            args.scenario.display()
        );
    }
    if let Some(p) = args.target_ci {
        if !(p > 0.0 && p < 100.0) {
            bail!("--target-ci must be a percentage between 0 and 100, got {p}");
        }
    }
    check_requirements(&scenario)?;
    for w in &scenario.warnings {
        eprintln!("warning: {w}");
    }
    session::cancel_on_signals().context("cannot install the Ctrl-C handler")?;

    let other = match (&args.ab, &args.ab_rev) {
        (Some(bin), _) => Some(ab::Other::new(bin, &args.scenario, args.duration)?),
        (None, Some(rev)) => Some(ab::Other::build_rev(rev, &args.scenario, args.duration)?),
        (None, None) => None,
    };
    let manifest =
        images::probe::build(&mut |m| eprintln!("{m}")).context("cannot build the probe guest")?;
    let probe = manifest.artifacts[0].path.clone();
    let env = collect_environment(Some(manifest.artifacts[0].sha256.clone()));
    let (dir, id) = match &args.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.clone(), run_id(std::time::SystemTime::now()))
        }
        None => create_run_dir(Path::new("results"), &run_id(std::time::SystemTime::now()))?,
    };
    let mut doc = RunResults::new(id.clone(), env, scenario.clone());
    doc.command_line = Some(std::env::args().collect());
    let mut writer = ResultsWriter::create(&dir, doc)?;
    writer.set_images(vec![serde_json::to_value(&manifest)?])?;
    if let Some(o) = &other {
        let info = o.info.clone();
        writer.update(|d| d.ab = Some(info))?;
    }
    eprintln!(
        "run {id}: {} cases x {} repetitions -> {}",
        scenario.cases.len(),
        scenario.run.repetitions,
        writer.path().display()
    );

    let mut runner = Runner {
        scenario: &scenario,
        probe,
        dir: dir.clone(),
        disks: BTreeMap::new(),
        measured: Duration::ZERO,
        other,
    };
    let started = Instant::now();
    if let Some(c) = runner.calibrate() {
        writer.set_calibration(c)?;
    }
    let outcome = runner.run_all(&mut writer, &args, started);
    runner.remove_disks();
    let doc = match outcome {
        Ok(()) => {
            let pairs = scenario.comparison_pairs();
            let comparisons = writer.results().compare(&pairs, &scenario.run.bootstrap());
            writer.set_comparisons(comparisons)?;
            writer.finish()?
        }
        Err(e) => {
            writer.interrupt(&e)?;
            report(&dir);
            let doc = writer.results().clone();
            summary::print(
                &doc,
                &mut std::io::stdout(),
                runner.measured,
                started.elapsed(),
            )?;
            vmm::backend::net::netns::remove_all_owned();
            return Err(Failed(format!(
                "{e}; the finished cases are in {}",
                dir.join(results::RESULTS_FILE).display()
            ))
            .into());
        }
    };
    if args.aa {
        let floors = crate::gate::noise::floors_from_aa(&doc, &scenario.run.bootstrap())?;
        print_floors(&floors, &scenario);
        let path = crate::gate::noise::store(&doc, floors, None)?;
        eprintln!("noise floors stored in {}", path.display());
    }
    report(&dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        summary::print(
            &doc,
            &mut std::io::stdout(),
            runner.measured,
            started.elapsed(),
        )?;
    }
    let failed: Vec<&str> = doc
        .cases
        .iter()
        .filter(|c| c.is_failed())
        .map(|c| c.id.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(Failed(format!(
            "{} case(s) failed: {}",
            failed.len(),
            failed.join("; ")
        ))
        .into());
    }
    Ok(())
}

/// Renders report.html, the PNGs and summary.md into the run folder; a failure to render is
/// reported and does not change the run's outcome (results.json is the record).
fn report(dir: &Path) {
    match reports::render_run_dir(dir) {
        Ok(w) => eprintln!("report: {}", w.html.display()),
        Err(e) => eprintln!("warning: no report rendered: {:#}", anyhow::Error::from(e)),
    }
}

/// Each case's floor for its primary metric (the file holds every metric's).
fn print_floors(f: &crate::gate::noise::ScenarioFloors, scenario: &Scenario) {
    eprintln!(
        "noise floors (A/A, {} vs {} repetitions): the smallest change each case can show",
        f.repetitions_per_side, f.repetitions_per_side
    );
    for c in &scenario.cases {
        let (m, _) = primary(c.params.workload.kind());
        if let Some(v) = f.floors.get(&c.id).and_then(|x| x.get(m)) {
            eprintln!("  {:<45} {m} ±{v:.1}%", c.id);
        }
    }
}

/// Refuses, before anything runs, what cannot run on this host.
fn check_requirements(s: &Scenario) -> anyhow::Result<()> {
    vmm::kvm::open()?;
    if s.cases.iter().any(|c| c.params.engine == EngineKind::Qemu) {
        crate::engine::qemu::find_qemu().context("this scenario runs cases on QEMU")?;
    }
    let tap = s
        .cases
        .iter()
        .any(|c| c.params.net_backend.needs_root() && c.params.nic.is_some());
    if tap && !vmm::sys::is_root() {
        bail!("this scenario uses the tap back-end, which needs root (CAP_NET_ADMIN) to create a network namespace and a TAP device; run it as root, or use net_backend = \"peer\", which needs nothing");
    }
    Ok(())
}

struct Runner<'a> {
    scenario: &'a Scenario,
    probe: PathBuf,
    dir: PathBuf,
    /// Disk images by case index, made once per case.
    disks: BTreeMap<usize, PathBuf>,
    /// Time spent inside measurement windows.
    measured: Duration,
    /// The other build of an A/B run: it runs the B repetitions (A B B A).
    other: Option<ab::Other>,
}

impl Runner<'_> {
    /// A short calibration on vmbench's VMM, so every results file says what exits cost here.
    fn calibrate(&mut self) -> Option<Calibration> {
        let exec = "calibrate n=300".to_string();
        let spec = GuestSpec {
            guest: crate::scenario::Guest::Probe,
            probe: self.probe.clone(),
            linux: None,
            vcpus: 1,
            mem_mib: 64,
            exec: exec.clone(),
            nic: None,
            disk: None,
        };
        let limits = Limits {
            ready: Duration::from_secs(10),
            run: Duration::from_secs(60),
        };
        let out = engine::vmbench::Vmbench
            .run(&spec, &limits, &mut |_| {})
            .ok()?;
        let mut figures = BTreeMap::new();
        for r in out.records_of("result").map(|t| &t.record) {
            if let (Some(n), Some(v)) = (r.get("name"), r.get_u64("median")) {
                figures.insert(format!("{n}_ns"), v as f64);
            }
        }
        (!figures.is_empty()).then_some(Calibration {
            figures,
            probe_exec: exec,
        })
    }

    fn run_all(
        &mut self,
        writer: &mut ResultsWriter,
        args: &Args,
        started: Instant,
    ) -> Result<(), String> {
        let schedule = self.scenario.schedule();
        let mut remaining: BTreeMap<usize, u32> = BTreeMap::new();
        for s in &schedule {
            *remaining.entry(s.case).or_default() += 1;
        }
        let bar = progress(schedule.len() as u64);
        for slot in &schedule {
            self.one(writer, slot, &bar, &mut remaining)?;
        }
        bar.finish_and_clear();
        if let Some(pct) = args.target_ci {
            let budget = Duration::from_secs_f64(args.budget.unwrap_or(600.0));
            self.adaptive(writer, pct, budget, started)?;
        }
        if let Some(n) = args.retry_suspects {
            self.retry_suspects(writer, n)?;
        }
        Ok(())
    }

    /// Adds pairs of rounds (indices 2k and 2k+1: one A and one B, alternating which comes
    /// first) for the cases the gate finds inconclusive, up to `times` pairs.
    fn retry_suspects(&mut self, writer: &mut ResultsWriter, times: u32) -> Result<(), String> {
        let mut round = self.scenario.run.repetitions;
        for _ in 0..times {
            let (a, b) = crate::gate::noise::split_aa(writer.results());
            let opts = crate::gate::GateOptions {
                allow_env_mismatch: true,
                bootstrap: self.scenario.run.bootstrap(),
                ..Default::default()
            };
            let report = crate::gate::evaluate(&b, &a, &opts, &Default::default())
                .map_err(|e| e.to_string())?;
            let suspects: Vec<usize> =
                self.scenario
                    .cases
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        report.rows.iter().any(|r| {
                            r.case == c.id && r.verdict == crate::gate::Verdict::Inconclusive
                        })
                    })
                    .map(|(i, _)| i)
                    .collect();
            if suspects.is_empty() {
                return Ok(());
            }
            eprintln!(
                "--retry-suspects: {} inconclusive case(s), adding repetitions {round} and {}",
                suspects.len(),
                round + 1
            );
            let slots: Vec<Slot> = [round, round + 1]
                .into_iter()
                .flat_map(|r| self.scenario.round(r))
                .filter(|s| suspects.contains(&s.case))
                .collect();
            self.extra(writer, &slots)?;
            round += 2;
        }
        Ok(())
    }

    /// Runs `slots`, repetitions added to cases that already ran: their cases are pending
    /// again until their last new repetition is in.
    fn extra(&mut self, writer: &mut ResultsWriter, slots: &[Slot]) -> Result<(), String> {
        let bar = progress(slots.len() as u64);
        let mut remaining: BTreeMap<usize, u32> = BTreeMap::new();
        for s in slots {
            *remaining.entry(s.case).or_default() += 1;
        }
        for s in slots {
            writer
                .update(|d| {
                    if let Ok(c) = d.case_mut(&self.scenario.cases[s.case].id) {
                        if c.status == CaseStatus::Ok {
                            c.status = CaseStatus::Pending;
                        }
                    }
                })
                .map_err(|e| e.to_string())?;
            self.one(writer, s, &bar, &mut remaining)?;
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// One slot: boot, run, record (or fail the case); finishes the case after its last slot.
    fn one(
        &mut self,
        writer: &mut ResultsWriter,
        slot: &Slot,
        bar: &ProgressBar,
        remaining: &mut BTreeMap<usize, u32>,
    ) -> Result<(), String> {
        if interrupted() {
            return Err("interrupted by Ctrl-C".into());
        }
        let case = &self.scenario.cases[slot.case];
        let failed = writer
            .results()
            .case(&case.id)
            .is_none_or(|c| c.is_failed());
        bar.set_message(format!("{} (repetition {})", case.id, slot.repetition + 1));
        if !failed {
            let result = match &self.other {
                Some(o) if !crate::gate::noise::is_side_a(slot.repetition) => {
                    o.repetition(case, slot.repetition)
                }
                _ => self.repetition(case, slot.repetition),
            };
            match result {
                Ok(rep) => writer
                    .add_repetition(&case.id, rep)
                    .map_err(|e| e.to_string())?,
                Err((reason, tail)) => {
                    if interrupted() {
                        return Err("interrupted by Ctrl-C".into());
                    }
                    bar.println(format!("case {} failed: {reason}", case.id));
                    writer
                        .fail_case(&case.id, &reason, tail)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        bar.inc(1);
        let left = remaining.entry(slot.case).or_default();
        *left = left.saturating_sub(1);
        if *left == 0 {
            let c = writer.results().case(&case.id);
            if c.is_some_and(|c| c.status == CaseStatus::Pending) {
                writer
                    .finish_case(&case.id, &self.scenario.run.bootstrap())
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Adds rounds for the cases whose interval is still too wide, until all converge or
    /// the budget is spent; says which did not.
    fn adaptive(
        &mut self,
        writer: &mut ResultsWriter,
        pct: f64,
        budget: Duration,
        started: Instant,
    ) -> Result<(), String> {
        let mut round = self.scenario.run.repetitions;
        loop {
            let wide: Vec<usize> = self
                .scenario
                .cases
                .iter()
                .enumerate()
                .filter(|(_, c)| !converged(writer.results(), c, pct))
                .map(|(i, _)| i)
                .collect();
            if wide.is_empty() {
                eprintln!("every case converged to a 95% interval within {pct}% of its median");
                return Ok(());
            }
            if started.elapsed() >= budget {
                let names: Vec<&str> = wide
                    .iter()
                    .map(|&i| self.scenario.cases[i].id.as_str())
                    .collect();
                eprintln!(
                    "budget spent; not converged to {pct}%: {}",
                    names.join("; ")
                );
                let note = format!(
                    "--target-ci {pct}: budget spent before these cases converged: {}",
                    names.join("; ")
                );
                writer
                    .update(|d| d.scenario.warnings.push(note))
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            let slots: Vec<Slot> = self
                .scenario
                .round(round)
                .into_iter()
                .filter(|s| wide.contains(&s.case))
                .collect();
            self.extra(writer, &slots)?;
            round += 1;
        }
    }

    /// Boots a fresh guest for `case` and turns its session into a repetition.
    fn repetition(
        &mut self,
        case: &Case,
        index: u32,
    ) -> Result<results::Repetition, (String, Vec<String>)> {
        let disk = match case.params.disk {
            None => None,
            Some(_) => Some(self.disk_for(case).map_err(|e| (e, vec![]))?),
        };
        let spec =
            GuestSpec::for_case(case, self.probe.clone(), disk).map_err(|e| (chain(&e), vec![]))?;
        let engine = engine::for_kind(case.params.engine);
        let limits = self.scenario.run.limits();
        let begin = Instant::now();
        let out = engine
            .run(&spec, &limits, &mut |_| {})
            .map_err(|e| (chain(&e), vec![]))?;
        let wall = begin.elapsed().as_secs_f64();
        self.check(&out)?;
        if let Some(w) = out
            .records_of("window-start")
            .next()
            .zip(out.records_of("window-end").next())
        {
            self.measured += w.1.at.saturating_duration_since(w.0.at);
        }
        metrics::repetition(case, index, &out, wall, self.scenario.run.duration_secs)
            .map_err(|e| (e, out.console_tail.clone()))
    }

    /// A session that did not end cleanly fails the case with its reason and console tail.
    fn check(&self, out: &Outcome) -> Result<(), (String, Vec<String>)> {
        let tail = || {
            let mut t: Vec<String> = out
                .records
                .iter()
                .rev()
                .take(10)
                .map(|r| r.record.to_string())
                .collect();
            t.reverse();
            t.extend(out.console_tail.iter().cloned());
            t
        };
        match out.failure() {
            // A guest may exit cleanly after reporting an error (a bad workload argument).
            None => match out.guest_error() {
                Some(e) => Err((e, tail())),
                None => Ok(()),
            },
            Some(why) => Err((why, tail())),
        }
    }

    /// The case's disk image (raw or qcow2), made on first use in the run directory.
    fn disk_for(&mut self, case: &Case) -> Result<PathBuf, String> {
        if let Some(p) = self.disks.get(&case.index) {
            return Ok(p.clone());
        }
        let path = crate::engine::create_image(
            &self.dir,
            &format!("disk-{}", case.index),
            case.params.disk_format,
            case.params.disk_size_mib,
        )?;
        self.disks.insert(case.index, path.clone());
        Ok(path)
    }

    fn remove_disks(&mut self) {
        for p in std::mem::take(&mut self.disks).into_values() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn converged(doc: &RunResults, case: &Case, pct: f64) -> bool {
    let Some(c) = doc.case(&case.id) else {
        return true;
    };
    if c.is_failed() {
        return true;
    }
    let (metric, _) = primary(case.params.workload.kind());
    c.stats
        .get(metric)
        .is_some_and(|s| s.n >= 3 && crate::stats::ci_width_ratio(s) * 100.0 <= pct)
}

fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
