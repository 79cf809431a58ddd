//! `vmbench bench SCENARIO.toml`: the main job. Expands the scenario, runs every case's
//! repetitions interleaved (A B C, B C A, ...) each on a freshly booted guest, keeps every
//! raw sample, writes `results.json` after every repetition, computes statistics and
//! comparisons, optionally keeps sampling until the intervals are narrow enough, and prints a
//! summary.

mod ab;
pub mod host;
mod metrics;
pub mod rundir;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use super::num;
use crate::engine::{self, chain, Engine, GuestImages, GuestSpec, LinuxImage};
use crate::exitcode::Failed;
use crate::results::{
    self, collect_environment, create_run_dir, run_id, Calibration, CaseStatus, ResultsWriter,
    RunResults,
};
use crate::scenario::{
    Case, EngineKind, Guest, Overrides, Scenario, Shard, Slot, MAX_REPETITIONS, MIN_DURATION_SECS,
};
use crate::session::{self, Limits, Outcome};

pub use ab::OTHER_BUILD_FAILED;
pub use metrics::primary;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The scenario file (scenarios/*.toml).
    pub scenario: PathBuf,
    /// Where to write results.json (default: results/<run-id>/). Locked while the run lasts;
    /// a directory that already holds a results.json is refused unless --replace is given.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite the results (results.json, the report) already in --out.
    #[arg(long, requires = "out")]
    pub replace: bool,
    /// Repetitions per case, overriding the scenario.
    #[arg(long, value_parser = num::int::<u32>(1, u64::from(MAX_REPETITIONS)))]
    pub repetitions: Option<u32>,
    /// Measurement window in seconds, overriding the scenario (1 ms to a day).
    #[arg(long, value_parser = num::float(DURATION))]
    pub duration: Option<f64>,
    /// Only the cases whose id contains PATTERN (or matches it as a glob; `a|b` for either).
    #[arg(long)]
    pub filter: Option<String>,
    /// Keep adding interleaved repetitions until every case's 95% interval of the median of
    /// its primary metric is narrower than PCT percent of the median.
    #[arg(long, value_name = "PCT", value_parser = num::float(PERCENT))]
    pub target_ci: Option<f64>,
    /// Time budget in seconds for --target-ci (default 600, at most a day).
    #[arg(long, value_name = "SECS", requires = "target_ci", value_parser = num::float(num::FloatRange::seconds(0.0, num::MAX_SECS)))]
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
    #[arg(long, value_name = "N", value_parser = num::int::<u32>(1, MAX_RETRIES))]
    pub retry_suspects: Option<u32>,
    /// Where to run: here, or inside an emulated AMD-V host (QEMU-TCG `-cpu max` with KVM in
    /// it, `images build test-host`), for Linux guests on vmbench's VMM where this host cannot
    /// run guest kernel code (docs/linux-boot.md). Timings there are not real: the results
    /// say so (`environment.kvm.emulated_host`), and the report and the gate treat them as a
    /// check of function.
    #[arg(long, value_enum, default_value_t = crate::emulated::Host::Native)]
    pub host: crate::emulated::Host,
    /// The guest images, already built: a JSON list of their manifests, each artifact at its
    /// recorded path and hash (what `--host emulated` hands the vmbench inside, which has no
    /// toolchain or package mirror to build them).
    #[arg(long, value_name = "FILE", hide = true)]
    pub prebuilt_images: Option<PathBuf>,
}

/// `--duration`: the probe counts whole milliseconds.
const DURATION: num::FloatRange = num::FloatRange::seconds(MIN_DURATION_SECS, num::MAX_SECS);
/// `--target-ci`: a percentage of the median, above 0 and below 100.
const PERCENT: num::FloatRange = num::FloatRange::open(0.0, 100.0, "percent");
/// `--retry-suspects`: each retry adds two rounds for the suspects.
const MAX_RETRIES: u64 = 100;
/// `run-one --index`: a repetition's place in the schedule (added rounds go past the
/// scenario's repetitions, never this far).
const MAX_INDEX: u64 = 4 * MAX_REPETITIONS as u64;

/// `vmbench run-one`: one repetition of one case, printed as one line of JSON (the interface
/// an A/B run drives the other build through; docs/ci.md).
#[derive(clap::Args, Debug, Clone)]
pub struct RunOneArgs {
    pub scenario: PathBuf,
    #[arg(long)]
    pub case: String,
    /// The repetition's index (its place in the schedule).
    #[arg(long, value_parser = num::int::<u32>(0, MAX_INDEX))]
    pub index: u32,
    #[arg(long, value_parser = num::float(DURATION))]
    pub duration: Option<f64>,
}

/// `args` as `vmbench bench` would parse them (`args[0]` is `bench`).
pub fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    #[derive(clap::Parser)]
    #[command(name = "vmbench bench")]
    struct Bench {
        #[command(flatten)]
        args: Args,
    }
    use clap::Parser;
    Ok(Bench::try_parse_from(args)?.args)
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
    remove_stale_run_one_dirs();
    let linux = linux_guest(linux_image(&scenario)?.as_ref())?;
    let dir = std::env::temp_dir().join(format!("{RUN_ONE_DIR}{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut runner = Runner {
        scenario: &scenario,
        images: GuestImages {
            probe: manifest.artifacts[0].path.clone(),
            linux,
        },
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

/// `run-one`'s scratch directory in the temp dir: this prefix and the pid.
const RUN_ONE_DIR: &str = "vmbench-run-one-";

/// Removes the scratch directories of `run-one` processes that are gone (killed with -9).
fn remove_stale_run_one_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(RUN_ONE_DIR))
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !rundir::alive(p)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// True once the user pressed Ctrl-C (or the process got SIGTERM).
pub fn interrupted() -> bool {
    session::CANCEL.load(Ordering::SeqCst)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.host == crate::emulated::Host::Emulated {
        return host::run(&args);
    }
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
    apply_flags(&mut scenario, &args, repetitions)?;
    check_requirements(&scenario)?;
    for w in &scenario.warnings {
        eprintln!("warning: {w}");
    }
    session::cancel_on_signals().context("cannot install the SIGINT and SIGTERM handlers")?;

    let other = match (&args.ab, &args.ab_rev) {
        (Some(bin), _) => Some(ab::Other::new(bin, &args.scenario, args.duration)?),
        (None, Some(rev)) => Some(ab::Other::build_rev(rev, &args.scenario, args.duration)?),
        (None, None) => None,
    };
    let (manifest, linux_manifest) = match &args.prebuilt_images {
        Some(file) => prebuilt_images(file, &scenario)?,
        None => (
            images::probe::build(&mut |m| eprintln!("{m}"))
                .context("cannot build the probe guest")?,
            linux_image(&scenario)?,
        ),
    };
    let probe = manifest.artifacts[0].path.clone();
    let linux = linux_guest(linux_manifest.as_ref())?;
    let env = collect_environment(Some(manifest.artifacts[0].sha256.clone()));
    // Held until the run returns: no second run writes here meanwhile.
    let (dir, id, _run_dir) = run_dir(&args)?;
    let mut doc = RunResults::new(id.clone(), env, scenario.clone());
    doc.command_line = Some(std::env::args().collect());
    let mut writer = ResultsWriter::create(&dir, doc)?;
    let mut manifests = vec![serde_json::to_value(&manifest)?];
    if let Some(m) = &linux_manifest {
        manifests.push(serde_json::to_value(m)?);
    }
    writer.set_images(manifests)?;
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
        images: GuestImages { probe, linux },
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
            writer.interrupt(&e, &scenario.run.bootstrap())?;
            report(&dir);
            let doc = writer.results().clone();
            summary::print(
                &doc,
                &mut std::io::stdout(),
                Some(runner.measured),
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
    present(
        &dir,
        &doc,
        args.json,
        Some(runner.measured),
        started.elapsed(),
    )?;
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

/// The flags that select and size the cases (`repetitions` as the run counts them); a run
/// left with no case is refused.
fn apply_flags(s: &mut Scenario, args: &Args, repetitions: Option<u32>) -> anyhow::Result<()> {
    s.apply(&Overrides {
        repetitions,
        duration_secs: args.duration,
        filter: args.filter.clone(),
        shard: args.shard,
    })?;
    if s.cases.is_empty() {
        bail!(
            "{}: no case to run (check --filter)",
            args.scenario.display()
        );
    }
    Ok(())
}

/// The run's directory (`--out`, or a new one under results/), its run id, and its lock.
fn run_dir(args: &Args) -> anyhow::Result<(PathBuf, String, rundir::RunDir)> {
    let (dir, id) = match &args.out {
        Some(d) => (d.clone(), run_id(std::time::SystemTime::now())),
        None => create_run_dir(Path::new("results"), &run_id(std::time::SystemTime::now()))?,
    };
    let replace = match args.replace {
        true => rundir::Replace::Yes,
        false => rundir::Replace::No,
    };
    let lock = rundir::RunDir::lock(&dir, replace)?;
    Ok((dir, id, lock))
}

/// The end of a run: the report rendered into `dir`, then the results as JSON (`--json`) or
/// the summary on stdout.
fn present(
    dir: &Path,
    doc: &RunResults,
    json: bool,
    measured: Option<Duration>,
    wall: Duration,
) -> anyhow::Result<()> {
    report(dir);
    if json {
        println!("{}", serde_json::to_string_pretty(doc)?);
    } else {
        summary::print(doc, &mut std::io::stdout(), measured, wall)?;
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

/// `--prebuilt-images FILE`: the probe's manifest and the linux image's (when a case boots
/// Linux), each artifact checked against its recorded hash, so that the results name exactly
/// what ran.
fn prebuilt_images(
    file: &Path,
    s: &Scenario,
) -> anyhow::Result<(
    images::manifest::Manifest,
    Option<images::manifest::Manifest>,
)> {
    let text = crate::input::read_regular(file, crate::input::MAX_SCENARIO_BYTES)
        .with_context(|| format!("--prebuilt-images {}", file.display()))?;
    let all: Vec<images::manifest::Manifest> =
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "--prebuilt-images {}: not a list of image manifests",
                file.display()
            )
        })?;
    let take = |image: &str| -> anyhow::Result<Option<images::manifest::Manifest>> {
        let Some(m) = all.iter().find(|m| m.image == image) else {
            return Ok(None);
        };
        if let Err(why) = m.check() {
            bail!(
                "--prebuilt-images {}: {why} (rebuild the images, or run without --prebuilt-images)",
                file.display()
            );
        }
        Ok(Some(m.clone()))
    };
    let probe = take("probe")?
        .with_context(|| format!("--prebuilt-images {}: no probe image", file.display()))?;
    let linux = take("linux")?;
    if linux.is_none() && s.cases.iter().any(|c| c.params.guest == Guest::Linux) {
        bail!(
            "--prebuilt-images {}: a case boots Linux and there is no linux image",
            file.display()
        );
    }
    Ok((probe, linux))
}

/// The linux image's manifest (built, or reused from the cache) when a case boots Linux.
pub(crate) fn linux_image(s: &Scenario) -> anyhow::Result<Option<images::manifest::Manifest>> {
    if !s.cases.iter().any(|c| c.params.guest == Guest::Linux) {
        return Ok(None);
    }
    let m = images::linux::build(&images::linux::Options::default(), &mut |m| {
        eprintln!("linux image: {m}")
    })
    .context("cannot build the linux image (guest = \"linux\")")?;
    Ok(Some(m))
}

/// The kernel and initramfs a Linux guest boots, from the linux image's manifest.
fn linux_guest(m: Option<&images::manifest::Manifest>) -> anyhow::Result<Option<LinuxImage>> {
    m.map(|m| {
        LinuxImage::from_manifest(m)
            .context("the linux image's manifest has no vmlinux or initramfs.cpio.gz")
    })
    .transpose()
}

/// Refuses, before anything runs, what cannot run on this host.
fn check_requirements(s: &Scenario) -> anyhow::Result<()> {
    vmm::kvm::open()?;
    let linux_here: Vec<&str> = s
        .cases
        .iter()
        .filter(|c| c.params.guest == Guest::Linux && c.params.engine == EngineKind::Vmbench)
        .map(|c| c.id.as_str())
        .collect();
    if let (Some(first), Some(refusal)) = (
        linux_here.first(),
        engine::vmbench::linux_refusal(&vmm::kvm::host_kvm()),
    ) {
        bail!(
            "{}: case {first}{}: {refusal}",
            s.source.path,
            match linux_here.len() {
                1 => String::new(),
                n => format!(
                    " (and {} more with guest \"linux\" on engine \"vmbench\")",
                    n - 1
                ),
            }
        );
    }
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
    images: GuestImages,
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
            probe: self.images.probe.clone(),
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
            return Err(session::cancel_reason());
        }
        let case = &self.scenario.cases[slot.case];
        let failed = writer
            .results()
            .case(&case.id)
            .is_none_or(|c| c.is_failed());
        let msg = format!("{} (repetition {})", case.id, slot.repetition + 1);
        if bar.is_hidden() {
            eprintln!(
                "[{}/{}] {msg}",
                bar.position() + 1,
                bar.length().unwrap_or(0)
            );
        }
        bar.set_message(msg);
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
                        return Err(session::cancel_reason());
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
            GuestSpec::for_case(case, &self.images, disk).map_err(|e| (chain(&e), vec![]))?;
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
            &rundir::scratch_name(&format!("disk-{}", case.index)),
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

/// Scratch disks go on every way out of a run: a return, an error, a panic.
impl Drop for Runner<'_> {
    fn drop(&mut self) {
        self.remove_disks();
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

/// The run's progress bar. Where it cannot be drawn (standard error is not a terminal: CI
/// logs, pipes) or should not be (inside the emulated host, whose console the vmbench outside
/// reads line by line: a redrawn bar would arrive there as escape codes), each repetition
/// prints a line instead (see `Runner::one`).
fn progress(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if crate::emulated::marked() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use images::manifest::{sha256_hex, Artifact, Manifest};

    fn scenario(guest: &str) -> Scenario {
        let text = format!(
            r#"
name = "s"
description = "one case"
guest = "{guest}"
[workload]
name = "net-rr"
[matrix]
device = [{{ nic = "e1000" }}]
"#
        );
        Scenario::parse("s.toml", &text).unwrap()
    }

    fn manifest(dir: &Path, image: &str, content: &[u8]) -> Manifest {
        let path = dir.join(format!("{image}.bin"));
        std::fs::write(&path, content).unwrap();
        Manifest {
            image: image.into(),
            input_hash: format!("{image}-inputs"),
            tools: Vec::new(),
            artifacts: vec![Artifact {
                name: format!("{image}.bin"),
                path,
                sha256: sha256_hex(content),
                bytes: content.len() as u64,
            }],
            inputs: Vec::new(),
        }
    }

    fn list(dir: &Path, manifests: &[&Manifest]) -> PathBuf {
        let file = dir.join("images.json");
        std::fs::write(&file, serde_json::to_vec(manifests).unwrap()).unwrap();
        file
    }

    #[test]
    fn prebuilt_images_are_checked_against_their_hashes_and_the_scenarios_needs() {
        let dir = tempfile::tempdir().unwrap();
        let probe = manifest(dir.path(), "probe", b"probe bytes");
        let linux = manifest(dir.path(), "linux", b"kernel bytes");
        let both = list(dir.path(), &[&probe, &linux]);

        let (p, l) = prebuilt_images(&both, &scenario("linux")).unwrap();
        assert_eq!((p, l), (probe.clone(), Some(linux.clone())));

        // A changed artifact: named, with both hashes.
        std::fs::write(&linux.artifacts[0].path, b"other kernel").unwrap();
        let e = prebuilt_images(&both, &scenario("linux")).unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("linux.bin of the linux image"), "{text}");
        assert!(text.contains(&linux.artifacts[0].sha256), "{text}");
        assert!(text.contains(&sha256_hex(b"other kernel")), "{text}");

        // A missing one: named.
        std::fs::remove_file(&probe.artifacts[0].path).unwrap();
        let e = prebuilt_images(&both, &scenario("probe")).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains("probe.bin of the probe image cannot be read"),
            "{text}"
        );

        // No probe; no linux image for a Linux case (a probe case does not need one).
        let probe = manifest(dir.path(), "probe", b"probe bytes");
        let linux = manifest(dir.path(), "linux", b"kernel bytes");
        let only_linux = list(dir.path(), &[&linux]);
        let e = prebuilt_images(&only_linux, &scenario("probe")).unwrap_err();
        assert!(e.to_string().contains("no probe image"), "{e}");
        let only_probe = list(dir.path(), &[&probe]);
        let (_, l) = prebuilt_images(&only_probe, &scenario("probe")).unwrap();
        assert_eq!(l, None);
        let e = prebuilt_images(&only_probe, &scenario("linux")).unwrap_err();
        assert!(e.to_string().contains("a case boots Linux"), "{e}");

        // Not a list of manifests.
        std::fs::write(&only_probe, b"{\"image\": 1}").unwrap();
        let e = prebuilt_images(&only_probe, &scenario("probe")).unwrap_err();
        assert!(
            e.to_string().contains("not a list of image manifests"),
            "{e}"
        );
    }
}
