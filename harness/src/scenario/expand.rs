//! [`Spec`] → cases: the cartesian product of the matrix axes in file order (the first axis
//! varies slowest), minus exclusions, each combination resolved to [`CaseParams`] and checked:
//! parameters that do not apply to a case, impossible combinations, unused fixed settings.

use std::collections::BTreeMap;

use super::params::{
    impossible, or_none, BlockIo, CaseParams, Direction, DiskFormat, EngineKind, Guest,
    NetBackendKind, PVal, Pattern, Profile, Workload, WorkloadKind, P, PARAMS,
};
use super::parse::{Setting, Spec};
use super::toml_doc::{Reader, Span};
use super::{Axis, Case, ComparisonSpec, Coord};

/// More combinations than this is a mistake, not a benchmark.
const MAX_COMBINATIONS: usize = 100_000;

pub(crate) struct Expanded {
    pub axes: Vec<Axis>,
    pub cases: Vec<Case>,
    pub excluded: usize,
    pub comparisons: Vec<ComparisonSpec>,
    pub warnings: Vec<String>,
}

/// Where a case's parameter value came from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    Default,
    Fixed(usize),
    Axis {
        axis: usize,
        element: usize,
        setting: usize,
    },
}

type Assignment = Vec<(PVal, Origin)>;

/// A problem found in many cases is reported once, with the first case and a count.
#[derive(Default)]
struct Tally {
    /// Keyed by (span start, message) so that the report comes out in file order.
    problems: BTreeMap<(usize, String), Problem>,
}

struct Problem {
    span: Option<Span>,
    hint: String,
    first_case: String,
    cases: usize,
}

impl Tally {
    fn add(&mut self, span: Option<Span>, message: String, hint: String, case: &str) {
        let key = (span.as_ref().map_or(usize::MAX, |s| s.start), message);
        self.problems
            .entry(key)
            .and_modify(|p| p.cases += 1)
            .or_insert(Problem {
                span,
                hint,
                first_case: case.to_string(),
                cases: 1,
            });
    }

    fn report(self, r: &mut Reader<'_>) {
        for ((_, message), p) in self.problems {
            let more = if p.cases > 1 {
                format!(", and {} more", p.cases - 1)
            } else {
                String::new()
            };
            let message = format!("{message} (case `{}`{more})", p.first_case);
            match p.span {
                Some(s) => r.error(&s, message, Some(p.hint)),
                None => r.diags.push(super::Diagnostic {
                    message,
                    location: None,
                    hint: Some(p.hint),
                }),
            }
        }
    }
}

pub(crate) fn expand(r: &mut Reader<'_>, spec: &Spec) -> Option<Expanded> {
    check_axis_overlap(r, spec);
    let combinations = spec
        .axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.elements.len()))
        .filter(|&n| n <= MAX_COMBINATIONS);
    let Some(combinations) = combinations else {
        let span = spec.axes.first().map_or(0..0, |a| a.span.clone());
        r.error(
            &span,
            format!("the matrix has more than {MAX_COMBINATIONS} combinations"),
            Some("split the scenario or shorten the axes".into()),
        );
        return None;
    };
    if !r.diags.is_empty() {
        return None;
    }

    let mut base: Assignment = PARAMS
        .iter()
        .map(|(_, s)| (s.default.value(), Origin::Default))
        .collect();
    for (i, s) in spec.fixed.iter().enumerate() {
        base[s.param as usize] = (s.value.clone(), Origin::Fixed(i));
    }
    let window = spec.run.window();
    let mut cases = Vec::new();
    let mut excluded = 0;
    let mut exclude_hits = vec![0usize; spec.excludes.len()];
    let mut fixed_in_effect = vec![false; spec.fixed.len()];
    let mut fixed_used = vec![false; spec.fixed.len()];
    let mut fixed_why: Vec<Option<String>> = vec![None; spec.fixed.len()];
    let mut tally = Tally::default();
    let mut ids: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for combination in 0..combinations {
        let picks = picks(spec, combination);
        let mut a = base.clone();
        for (axis, &element) in picks.iter().enumerate() {
            for (setting, s) in spec.axes[axis].elements[element]
                .settings
                .iter()
                .enumerate()
            {
                a[s.param as usize] = (
                    s.value.clone(),
                    Origin::Axis {
                        axis,
                        element,
                        setting,
                    },
                );
            }
        }
        if let Some(j) = spec.excludes.iter().position(|x| {
            x.conditions
                .iter()
                .all(|(p, values)| values.contains(&a[*p as usize].0))
        }) {
            exclude_hits[j] += 1;
            excluded += 1;
            continue;
        }
        let coords: Vec<Coord> = picks
            .iter()
            .enumerate()
            .map(|(axis, &e)| Coord {
                axis: spec.axes[axis].name.clone(),
                value: spec.axes[axis].elements[e].label.clone(),
            })
            .collect();
        let params = resolve(&a);
        let id = if coords.is_empty() {
            format!("workload={}", params.workload.kind())
        } else {
            picks
                .iter()
                .enumerate()
                .map(|(axis, &e)| spec.axes[axis].id_part(&spec.axes[axis].elements[e]))
                .collect::<Vec<_>>()
                .join(",")
        };
        if let Some(first) = ids.get(&id) {
            duplicate_id(r, spec, &id, first, &picks);
            continue;
        }
        ids.insert(id.clone(), picks.clone());
        for (p, _) in PARAMS {
            let why = p.not_applicable(&params);
            if let Origin::Fixed(i) = a[*p as usize].1 {
                fixed_in_effect[i] = true;
            }
            match (&a[*p as usize].1, why) {
                (Origin::Fixed(i), None) => fixed_used[*i] = true,
                (Origin::Fixed(i), Some(why)) => fixed_why[*i] = Some(why),
                (
                    &Origin::Axis {
                        axis,
                        element,
                        setting,
                    },
                    Some(why),
                ) => {
                    let s = &spec.axes[axis].elements[element].settings[setting];
                    tally.add(
                        Some(s.span.clone()),
                        format!("`{}` = {} does not apply: {why}", p.name(), s.value.quoted()),
                        "set it only in the matrix entries it applies to, or drop such cases with an [[exclude]] entry".into(),
                        &id,
                    );
                }
                _ => {}
            }
        }
        for bad in impossible(&params) {
            tally.add(
                origin_span(spec, &a[bad.blame as usize].1),
                bad.message,
                bad.hint,
                &id,
            );
        }
        if params.workload.kind() == WorkloadKind::Iperf3 {
            let at = |span: &Option<Span>| {
                span.clone()
                    .or_else(|| origin_span(spec, &a[P::Workload as usize].1))
            };
            for (problem, span) in iperf3_window(&spec.run) {
                let span = match span {
                    RunKey::Warmup => at(&spec.run_spans.warmup),
                    RunKey::Duration => at(&spec.run_spans.duration),
                };
                tally.add(span, problem, "iperf3 counts whole seconds: set [run] warmup_secs and duration_secs to whole numbers (duration 1 to 3600, warm-up up to 600), or drop such cases with an [[exclude]] entry".into(), &id);
            }
        }
        let probe_exec = params.probe_exec(window);
        cases.push(Case {
            id,
            index: cases.len(),
            coords,
            params,
            probe_exec,
        });
    }
    tally.report(r);

    let mut warnings = Vec::new();
    for (i, s) in spec.fixed.iter().enumerate() {
        if !fixed_in_effect[i] {
            if !cases.is_empty() {
                warnings.push(format!(
                    "`{}` at {} has no effect: the matrix sets it in every case",
                    s.param.name(),
                    r.location(s.span.start)
                ));
            }
        } else if !fixed_used[i] {
            let why = fixed_why[i].clone().unwrap_or_default();
            r.error(
                &s.span,
                format!("`{}` is set but applies to no case: {why}", s.param.name()),
                Some("remove it".into()),
            );
        }
    }
    for (j, x) in spec.excludes.iter().enumerate() {
        if exclude_hits[j] == 0 {
            warnings.push(format!(
                "the [[exclude]] entry at {} matches no case",
                r.location(x.span.start)
            ));
        }
    }
    if cases.is_empty() && r.diags.is_empty() {
        let span = spec.excludes.first().map_or(0..0, |x| x.span.clone());
        r.error(
            &span,
            "every combination of the matrix is excluded",
            Some("loosen the [[exclude]] entries".into()),
        );
    }
    check_timeouts(r, spec, &cases);
    let comparisons = comparisons(r, spec);
    if !r.diags.is_empty() {
        return None;
    }
    let axes = spec
        .axes
        .iter()
        .map(|a| Axis {
            name: a.name.clone(),
            values: a.elements.iter().map(|e| e.label.clone()).collect(),
        })
        .collect();
    Some(Expanded {
        axes,
        cases,
        excluded,
        comparisons,
        warnings,
    })
}

/// Two combinations that spell the same case id (`{ workload = "hello" }` and `"hello"` in
/// one axis) would share one case's results: refused, naming both places.
fn duplicate_id(r: &mut Reader<'_>, spec: &Spec, id: &str, first: &[usize], second: &[usize]) {
    let Some(axis) = (0..second.len()).find(|&a| first[a] != second[a]) else {
        return;
    };
    let elements = &spec.axes[axis].elements;
    let (a, b) = (&elements[first[axis]], &elements[second[axis]]);
    let first_at = r.location(a.span.start);
    r.error(
        &b.span,
        format!(
            "case id `{id}` comes from two values of matrix axis `{}`: this one and the one at {first_at}",
            spec.axes[axis].name
        ),
        Some("each case needs its own id; remove one of the two values".into()),
    );
}

/// The element index of each axis for combination number `n` (the last axis varies fastest).
fn picks(spec: &Spec, mut n: usize) -> Vec<usize> {
    let mut picks = vec![0; spec.axes.len()];
    for (i, axis) in spec.axes.iter().enumerate().rev() {
        picks[i] = n % axis.elements.len();
        n /= axis.elements.len();
    }
    picks
}

fn origin_span(spec: &Spec, o: &Origin) -> Option<Span> {
    match *o {
        Origin::Default => None,
        Origin::Fixed(i) => Some(spec.fixed[i].span.clone()),
        Origin::Axis {
            axis,
            element,
            setting,
        } => Some(
            spec.axes[axis].elements[element].settings[setting]
                .span
                .clone(),
        ),
    }
}

/// A parameter may be set by one axis only; otherwise the product is ambiguous.
fn check_axis_overlap(r: &mut Reader<'_>, spec: &Spec) {
    let mut owner: BTreeMap<P, usize> = BTreeMap::new();
    for (i, axis) in spec.axes.iter().enumerate() {
        let mut seen: Vec<&Setting> = Vec::new();
        for s in axis.elements.iter().flat_map(|e| &e.settings) {
            if !seen.iter().any(|t| t.param == s.param) {
                seen.push(s);
            }
        }
        for s in seen {
            match owner.get(&s.param) {
                Some(&j) if j != i => r.error(
                    &s.span,
                    format!(
                        "`{}` is set by two matrix axes, `{}` and `{}`",
                        s.param.name(),
                        spec.axes[j].name,
                        axis.name
                    ),
                    Some("set each parameter in one axis only".into()),
                ),
                _ => {
                    owner.insert(s.param, i);
                }
            }
        }
    }
}

/// Which `[run]` setting a problem is about.
pub(crate) enum RunKey {
    Warmup,
    Duration,
}

/// Why the Linux agent's iperf3 (`-t`, `-O`: whole seconds) cannot run `run`'s window.
pub(crate) fn iperf3_window(run: &super::RunSettings) -> Vec<(String, RunKey)> {
    use super::params::{IPERF3_MAX_DURATION_SECS as D, IPERF3_MAX_WARMUP_SECS as W};
    let mut out = Vec::new();
    let whole = |x: f64| x.fract() == 0.0;
    let d = run.duration_secs;
    if !whole(d) || !(1.0..=D as f64).contains(&d) {
        out.push((
            format!("workload `iperf3` needs a whole number of seconds from 1 to {D}, but duration_secs = {d}"),
            RunKey::Duration,
        ));
    }
    let w = run.warmup_secs;
    if !whole(w) || w > W as f64 {
        out.push((
            format!("workload `iperf3` needs a whole number of seconds up to {W}, but warmup_secs = {w}"),
            RunKey::Warmup,
        ));
    }
    out
}

/// Values were checked when parsed, so every lookup succeeds; defaults keep this total.
fn resolve(a: &Assignment) -> CaseParams {
    let s = |p: P| match &a[p as usize].0 {
        PVal::Str(s) => s.as_str(),
        PVal::Int(_) => "",
    };
    let n = |p: P| match a[p as usize].0 {
        PVal::Int(i) => u32::try_from(i).unwrap_or(u32::MAX),
        PVal::Str(_) => 0,
    };
    let block = BlockIo {
        pattern: Pattern::from_name(s(P::Pattern)).unwrap_or(Pattern::Seq),
        block_size: n(P::BlockSize),
        queue_depth: n(P::QueueDepth),
    };
    let workload = match WorkloadKind::from_name(s(P::Workload)).unwrap_or(WorkloadKind::Hello) {
        WorkloadKind::Hello => Workload::Hello,
        WorkloadKind::Calibrate => Workload::Calibrate {
            iterations: n(P::Iterations),
        },
        WorkloadKind::NetTx => Workload::NetTx {
            frame_size: n(P::FrameSize),
            batch: n(P::Batch),
        },
        WorkloadKind::NetRx => Workload::NetRx {
            frame_size: n(P::FrameSize),
        },
        WorkloadKind::NetRr => Workload::NetRr {
            frame_size: n(P::FrameSize),
        },
        WorkloadKind::BlkRead => Workload::BlkRead(block),
        WorkloadKind::BlkWrite => Workload::BlkWrite(block),
        WorkloadKind::Ping => Workload::Ping,
        WorkloadKind::TcpStream => Workload::TcpStream {
            direction: Direction::from_name(s(P::Direction)).unwrap_or(Direction::Tx),
            io_size: n(P::IoSize),
        },
        WorkloadKind::Iperf3 => Workload::Iperf3 {
            direction: Direction::from_name(s(P::Direction)).unwrap_or(Direction::Tx),
            streams: n(P::Streams),
        },
    };
    CaseParams {
        guest: Guest::from_name(s(P::Guest)).unwrap_or(Guest::Probe),
        engine: EngineKind::from_name(s(P::Engine)).unwrap_or(EngineKind::Vmbench),
        vcpus: n(P::Vcpus),
        mem_mib: n(P::MemMib),
        nic: or_none::parse(s(P::Nic)).flatten(),
        net_backend: NetBackendKind::from_name(s(P::NetBackend)).unwrap_or(NetBackendKind::Peer),
        disk: or_none::parse(s(P::Disk)).flatten(),
        disk_format: DiskFormat::from_name(s(P::DiskFormat)).unwrap_or(DiskFormat::Raw),
        disk_size_mib: n(P::DiskSizeMib),
        profile: Profile::from_name(s(P::Profile)).unwrap_or(Profile::Linux),
        workload,
    }
}

/// A windowed workload must fit its warm-up and window, plus a second for set-up and
/// teardown, in the run timeout.
fn check_timeouts(r: &mut Reader<'_>, spec: &Spec, cases: &[Case]) {
    let run = &spec.run;
    if !cases.iter().any(|c| c.params.workload.kind().is_windowed()) {
        return;
    }
    let needed = run.warmup_secs + run.duration_secs + super::RunSettings::SLACK_SECS;
    if run.run_timeout_secs < needed {
        let message = format!(
            "run_timeout_secs = {} is too short for warmup_secs + duration_secs = {} (plus {} s to set up and tear down)",
            run.run_timeout_secs,
            run.warmup_secs + run.duration_secs,
            super::RunSettings::SLACK_SECS
        );
        let hint = Some(format!("raise [run] run_timeout_secs to at least {needed}"));
        match spec
            .run_spans
            .run_timeout
            .as_ref()
            .or(spec.run_spans.duration.as_ref())
        {
            Some(span) => r.error(span, message, hint),
            None => r.diags.push(super::Diagnostic {
                message,
                location: None,
                hint,
            }),
        }
    }
}

fn comparisons(r: &mut Reader<'_>, spec: &Spec) -> Vec<ComparisonSpec> {
    let mut out = Vec::new();
    for c in &spec.compare {
        let Some(axis) = spec.axes.iter().find(|a| a.name == c.axis) else {
            let names: Vec<&str> = spec.axes.iter().map(|a| a.name.as_str()).collect();
            let hint = match super::error::nearest(&c.axis, names.iter().copied()) {
                Some(n) => format!("did you mean `{n}`?"),
                None if names.is_empty() => "comparisons need a [matrix] axis".to_string(),
                None => format!("the matrix axes are {}", super::toml_doc::list(&names)),
            };
            r.error(
                &c.axis_span,
                format!("comparison on `{}`, which is not a matrix axis", c.axis),
                Some(hint),
            );
            continue;
        };
        if !axis.is_plain() {
            r.error(
                &c.axis_span,
                format!("cannot compare along `{}`: its values are tables", c.axis),
                Some("compare along an axis of plain values, such as nic or disk".into()),
            );
            continue;
        }
        let values: Vec<&str> = axis.elements.iter().map(|e| e.label.as_str()).collect();
        if !values.contains(&c.baseline.as_str()) {
            let hint = match super::error::nearest(&c.baseline, values.iter().copied()) {
                Some(n) => format!("did you mean \"{n}\"?"),
                None => format!(
                    "the values of `{}` are {}",
                    c.axis,
                    super::toml_doc::list(&values)
                ),
            };
            r.error(
                &c.baseline_span,
                format!(
                    "baseline \"{}\" is not a value of axis `{}`",
                    c.baseline, c.axis
                ),
                Some(hint),
            );
            continue;
        }
        if values.len() < 2 {
            r.error(
                &c.axis_span,
                format!(
                    "axis `{}` has only its baseline, so there is nothing to compare",
                    c.axis
                ),
                Some("add values to the axis or remove the comparison".into()),
            );
            continue;
        }
        out.push(ComparisonSpec {
            axis: c.axis.clone(),
            baseline: c.baseline.clone(),
            metrics: c.metrics.clone(),
        });
    }
    out
}
