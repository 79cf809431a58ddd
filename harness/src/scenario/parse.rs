//! Scenario file → [`Spec`]: every key checked against the schema of docs/scenarios.md, every
//! value against its parameter's type and range, each with its span. Combinations are checked
//! later, when the matrix is expanded (expand.rs).

use toml::de::{DeTable, DeValue};

use super::params::{Kind, PVal, Section, P, PARAMS};
use super::toml_doc::{entries, get, list, NumRange, Reader, Span, Val};
use super::RunSettings;

/// A parameter set to a value somewhere in the file.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub param: P,
    pub value: PVal,
    /// The value's span (what to point at when the value is wrong for a case).
    pub span: Span,
}

/// One value of a matrix axis: a plain value of the axis's parameter, or a table of settings.
#[derive(Debug, Clone)]
pub(crate) struct Element {
    pub settings: Vec<Setting>,
    /// Its part of a case id: `virtio` for a plain value, `pattern=seq,block_size=4096` for a
    /// table.
    pub label: String,
    pub is_table: bool,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub(crate) struct AxisSpec {
    pub name: String,
    pub span: Span,
    pub elements: Vec<Element>,
}

impl AxisSpec {
    /// An axis of plain values (comparisons need one).
    pub fn is_plain(&self) -> bool {
        self.elements.iter().all(|e| !e.is_table)
    }

    /// `nic=virtio` for a plain value, the table's own `k=v,...` otherwise.
    pub fn id_part(&self, e: &Element) -> String {
        if e.is_table {
            e.label.clone()
        } else {
            format!("{}={}", self.name, e.label)
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ExcludeSpec {
    pub span: Span,
    /// A case is excluded when each parameter has one of the listed values.
    pub conditions: Vec<(P, Vec<PVal>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct CompareSpec {
    pub axis: String,
    pub axis_span: Span,
    pub baseline: String,
    pub baseline_span: Span,
    pub metrics: Vec<String>,
}

/// Spans of the run settings that other checks point at.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunSpans {
    pub run_timeout: Option<Span>,
    pub warmup: Option<Span>,
    pub duration: Option<Span>,
}

#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub name: Option<String>,
    pub description: String,
    pub fixed: Vec<Setting>,
    pub axes: Vec<AxisSpec>,
    pub excludes: Vec<ExcludeSpec>,
    pub compare: Vec<CompareSpec>,
    pub run: RunSettings,
    pub run_spans: RunSpans,
}

const TOP_KEYS: &[&str] = &[
    "name",
    "description",
    "guest",
    "engine",
    "vm",
    "devices",
    "workload",
    "run",
    "matrix",
    "exclude",
    "compare",
];
const RUN_KEYS: &[&str] = &[
    "repetitions",
    "warmup_secs",
    "duration_secs",
    "ready_timeout_secs",
    "run_timeout_secs",
    "fresh_guest_per_repetition",
    "seed",
];
const COMPARE_KEYS: &[&str] = &["axis", "baseline", "metrics"];

/// Reads the whole document. Problems are left in `r.diags`; the spec is still returned so
/// that expansion can find more of them.
pub(crate) fn parse(r: &mut Reader<'_>, root: &DeTable<'_>) -> Spec {
    r.check_keys(root, TOP_KEYS, |k| misplaced(k, Some(Section::Top)));
    let mut spec = Spec {
        name: None,
        description: String::new(),
        fixed: Vec::new(),
        axes: Vec::new(),
        excludes: Vec::new(),
        compare: Vec::new(),
        run: RunSettings::default(),
        run_spans: RunSpans::default(),
    };
    if let Some((_, v)) = get(root, "name") {
        spec.name = r.string(v, "name");
    }
    if let Some((_, v)) = get(root, "description") {
        spec.description = r.string(v, "description").unwrap_or_default();
    }
    fixed_settings(r, root, Section::Top, &mut spec.fixed);
    for section in [Section::Vm, Section::Devices, Section::Workload] {
        let name = section.table().unwrap_or_default();
        if let Some((_, v)) = get(root, name) {
            if section == Section::Workload && matches!(v.get_ref(), DeValue::String(_)) {
                r.error(
                    &v.span(),
                    "`workload` must be a table, not a string",
                    Some("set the workload with `name = \"...\"` in [workload], or list several in [matrix]".into()),
                );
                continue;
            }
            if let Some(t) = r.table(v, name) {
                let known: Vec<&str> = PARAMS
                    .iter()
                    .filter(|(_, s)| s.section == section)
                    .map(|(_, s)| s.key)
                    .collect();
                r.check_keys(t, &known, |k| misplaced(k, Some(section)));
                fixed_settings(r, t, section, &mut spec.fixed);
            }
        }
    }
    if let Some((_, v)) = get(root, "run") {
        if let Some(t) = r.table(v, "run") {
            run_settings(r, t, &mut spec);
        }
    }
    if let Some((_, v)) = get(root, "matrix") {
        if let Some(t) = r.table(v, "matrix") {
            spec.axes = matrix(r, t);
        }
    }
    if let Some((_, v)) = get(root, "exclude") {
        for (span, t) in array_of_tables(r, v, "exclude") {
            spec.excludes.extend(exclude(r, t, span));
        }
    }
    if let Some((_, v)) = get(root, "compare") {
        for (span, t) in array_of_tables(r, v, "compare") {
            spec.compare.extend(compare(r, t, span));
        }
    }
    spec
}

/// Where a key that is unknown in `section` belongs, if it is known elsewhere. `section` is
/// `None` for [run] and the other tables that hold no parameters.
fn misplaced(key: &str, section: Option<Section>) -> Option<String> {
    if RUN_KEYS.contains(&key) {
        return Some(format!("`{key}` belongs in [run]"));
    }
    if key == "workload" {
        return Some("set the workload with `name = \"...\"` in [workload]".to_string());
    }
    let home = PARAMS.iter().find(|(_, s)| s.key == key)?.1.section;
    (Some(home) != section).then(|| match home.table() {
        Some(t) => format!("`{key}` belongs in [{t}]"),
        None => format!("`{key}` belongs at the top level, before the first [table]"),
    })
}

fn fixed_settings(
    r: &mut Reader<'_>,
    table: &DeTable<'_>,
    section: Section,
    out: &mut Vec<Setting>,
) {
    for (key, _, v) in entries(table) {
        let Some(p) = P::in_section(section, key) else {
            continue;
        };
        let what = match section.table() {
            Some(t) => format!("{t}.{key}"),
            None => key.to_string(),
        };
        if let DeValue::Array(_) = v.get_ref() {
            r.error(
                &v.span(),
                format!("`{what}` must be a single value"),
                Some(format!(
                    "to compare several values, list them in [matrix] as {} = [...]",
                    p.name()
                )),
            );
            continue;
        }
        if let Some(value) = param_value(r, p, v, &what) {
            out.push(Setting {
                param: p,
                value,
                span: v.span(),
            });
        }
    }
}

/// A value of parameter `p`, checked against its choices or range.
fn param_value(r: &mut Reader<'_>, p: P, v: &Val<'_>, what: &str) -> Option<PVal> {
    match &p.spec().kind {
        Kind::Choice(_) | Kind::ChoiceOrNone(_) => {
            let choices = p.spec().kind.choices();
            let s = r.string(v, what)?;
            if choices.contains(&s.as_str()) {
                return Some(PVal::Str(s));
            }
            let options = choices
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let nearest = super::error::nearest(&s, choices.iter().copied());
            let list = match p {
                // Which guest runs which: the probe's and the Linux agent's lists differ.
                P::Workload => {
                    use super::params::{workloads_of, Guest};
                    format!(
                        "the probe runs {}; the Linux agent (guest = \"linux\") runs {}",
                        workloads_of(Guest::Probe),
                        workloads_of(Guest::Linux)
                    )
                }
                _ => format!("{} is one of {options}", p.name()),
            };
            let hint = match nearest {
                Some(n) => format!("did you mean \"{n}\"? ({list})"),
                None => list,
            };
            r.error(
                &v.span(),
                format!("`{what}` = \"{s}\" is not a known value"),
                Some(hint),
            );
            None
        }
        &Kind::Int {
            min,
            max,
            multiple_of,
        } => {
            let n = r.integer(v, what, min, max)?;
            if n % multiple_of != 0 {
                r.error(
                    &v.span(),
                    format!("`{what}` = {n} is not a multiple of {multiple_of}"),
                    Some(format!(
                        "use a multiple of {multiple_of}, e.g. {}",
                        n - n % multiple_of + multiple_of
                    )),
                );
                return None;
            }
            Some(PVal::Int(n))
        }
    }
}

fn run_settings(r: &mut Reader<'_>, t: &DeTable<'_>, spec: &mut Spec) {
    r.check_keys(t, RUN_KEYS, |k| misplaced(k, None));
    let run = &mut spec.run;
    let secs = |min, min_exclusive| NumRange {
        min,
        max: super::MAX_SECS,
        min_exclusive,
    };
    for (key, _, v) in entries(t) {
        let what = format!("run.{key}");
        match key {
            "repetitions" => {
                if let Some(n) = r.integer(v, &what, 1, i64::from(super::MAX_REPETITIONS)) {
                    run.repetitions = n as u32;
                }
            }
            "warmup_secs" => {
                spec.run_spans.warmup = Some(v.span());
                if let Some(x) = r.number(v, &what, secs(0.0, false)) {
                    run.warmup_secs = x;
                }
            }
            "duration_secs" => {
                spec.run_spans.duration = Some(v.span());
                // The probe counts in milliseconds: less than one would be zero.
                if let Some(x) = r.number(v, &what, secs(super::MIN_DURATION_SECS, false)) {
                    run.duration_secs = x;
                }
            }
            "ready_timeout_secs" => {
                if let Some(x) = r.number(v, &what, secs(0.0, true)) {
                    run.ready_timeout_secs = x;
                }
            }
            "run_timeout_secs" => {
                spec.run_spans.run_timeout = Some(v.span());
                if let Some(x) = r.number(v, &what, secs(0.0, true)) {
                    run.run_timeout_secs = x;
                }
            }
            "fresh_guest_per_repetition" => {
                if let Some(b) = r.boolean(v, &what) {
                    run.fresh_guest_per_repetition = b;
                }
            }
            "seed" => {
                if let Some(n) = r.integer(v, &what, 0, i64::MAX) {
                    run.seed = n as u64;
                }
            }
            _ => {}
        }
    }
}

fn matrix(r: &mut Reader<'_>, t: &DeTable<'_>) -> Vec<AxisSpec> {
    let mut axes = Vec::new();
    for (name, span, v) in entries(t) {
        let what = format!("matrix.{name}");
        let DeValue::Array(items) = v.get_ref() else {
            r.error(
                &v.span(),
                format!("`{what}` must be a list of values"),
                Some(format!(
                    "write {name} = [...] (a single value belongs outside [matrix])"
                )),
            );
            continue;
        };
        if items.is_empty() {
            r.error(
                &v.span(),
                format!("matrix axis `{name}` is empty"),
                Some("list at least one value or remove the axis".into()),
            );
            continue;
        }
        let param = P::by_name(name);
        let mut axis = AxisSpec {
            name: name.to_string(),
            span: span.clone(),
            elements: Vec::new(),
        };
        let mut ok = true;
        for item in items.iter() {
            let element = match item.get_ref() {
                DeValue::Table(tab) => table_element(r, tab, item.span(), &what),
                _ => match param {
                    Some(p) => param_value(r, p, item, &what).map(|value| Element {
                        label: value.to_string(),
                        settings: vec![Setting {
                            param: p,
                            value,
                            span: item.span(),
                        }],
                        is_table: false,
                        span: item.span(),
                    }),
                    None => {
                        let hint =
                            match super::error::nearest(name, PARAMS.iter().map(|(_, s)| s.name)) {
                                Some(n) => format!(
                                    "did you mean `{n}`? (an axis of tables may have any name)"
                                ),
                                None => format!(
                                    "parameters: {}",
                                    list(&PARAMS.iter().map(|(_, s)| s.name).collect::<Vec<_>>())
                                ),
                            };
                        r.error(&span, format!("unknown matrix axis `{name}`"), Some(hint));
                        ok = false;
                        break;
                    }
                },
            };
            let Some(element) = element else {
                ok = false;
                continue;
            };
            if axis.elements.iter().any(|e| e.label == element.label) {
                r.error(
                    &element.span,
                    format!(
                        "duplicate value `{}` in matrix axis `{name}`",
                        element.label
                    ),
                    Some("each value of an axis must differ; remove the repeat".into()),
                );
                ok = false;
                continue;
            }
            axis.elements.push(element);
        }
        if ok {
            axes.push(axis);
        }
    }
    axes
}

/// An axis element that sets several parameters: `{ workload = "blk-read", block_size = 4096 }`.
fn table_element(r: &mut Reader<'_>, t: &DeTable<'_>, span: Span, what: &str) -> Option<Element> {
    let known: Vec<&str> = PARAMS.iter().map(|(_, s)| s.name).collect();
    let before = r.diags.len();
    r.check_keys(t, &known, |_| None);
    let mut settings = Vec::new();
    for (key, _, v) in entries(t) {
        if let Some(p) = P::by_name(key) {
            if let Some(value) = param_value(r, p, v, &format!("{what}.{key}")) {
                settings.push(Setting {
                    param: p,
                    value,
                    span: v.span(),
                });
            }
        }
    }
    if settings.is_empty() && r.diags.len() == before {
        r.error(
            &span,
            format!("empty table in `{what}`"),
            Some("a table sets parameters, e.g. { workload = \"net-rr\", frame_size = 64 }".into()),
        );
    }
    if r.diags.len() > before {
        return None;
    }
    let label = settings
        .iter()
        .map(|s| format!("{}={}", s.param.name(), s.value))
        .collect::<Vec<_>>()
        .join(",");
    Some(Element {
        settings,
        label,
        is_table: true,
        span,
    })
}

fn array_of_tables<'t, 'i>(
    r: &mut Reader<'_>,
    v: &'t Val<'i>,
    what: &str,
) -> Vec<(Span, &'t DeTable<'i>)> {
    let Some(items) = r.array(v, what) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| Some((item.span(), r.table(item, what)?)))
        .collect()
}

fn exclude(r: &mut Reader<'_>, t: &DeTable<'_>, table_span: Span) -> Option<ExcludeSpec> {
    let known: Vec<&str> = PARAMS.iter().map(|(_, s)| s.name).collect();
    let before = r.diags.len();
    r.check_keys(t, &known, |_| None);
    let mut conditions = Vec::new();
    let mut first: Option<Span> = None;
    for (key, key_span, v) in entries(t) {
        let Some(p) = P::by_name(key) else { continue };
        first.get_or_insert(key_span);
        let what = format!("exclude.{key}");
        let values: Vec<PVal> = match v.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .filter_map(|i| param_value(r, p, i, &what))
                .collect(),
            _ => param_value(r, p, v, &what).into_iter().collect(),
        };
        conditions.push((p, values));
    }
    let Some(span) = first else {
        if r.diags.len() == before {
            r.error(&table_span, "empty [[exclude]] entry", Some("an exclusion names parameters and values, e.g. disk = \"ide\", queue_depth = 32".into()));
        }
        return None;
    };
    (r.diags.len() == before).then_some(ExcludeSpec { span, conditions })
}

fn compare(r: &mut Reader<'_>, t: &DeTable<'_>, table_span: Span) -> Option<CompareSpec> {
    r.check_keys(t, COMPARE_KEYS, |_| None);
    let (_, axis_v) = get(t, "axis").or_else(|| {
        r.error(
            &table_span,
            "comparison without `axis`",
            Some("write { axis = \"nic\", baseline = \"e1000\" }".into()),
        );
        None
    })?;
    let axis = r.string(axis_v, "compare.axis")?;
    let axis_span = axis_v.span();
    let Some((_, base_v)) = get(t, "baseline") else {
        r.error(
            &axis_span,
            format!("comparison on `{axis}` without `baseline`"),
            Some("name the axis value the others are divided by, e.g. baseline = \"e1000\"".into()),
        );
        return None;
    };
    let baseline = match base_v.get_ref() {
        DeValue::String(s) => s.to_string(),
        DeValue::Integer(i) => i.to_string(),
        other => {
            r.error(
                &base_v.span(),
                format!(
                    "`compare.baseline` must be a value of axis `{axis}`, not {}",
                    super::toml_doc::type_name(other)
                ),
                None,
            );
            return None;
        }
    };
    let mut metrics = Vec::new();
    if let Some((_, m)) = get(t, "metrics") {
        if let Some(items) = r.array(m, "compare.metrics") {
            metrics = items
                .iter()
                .filter_map(|i| r.string(i, "compare.metrics"))
                .collect();
        }
    }
    Some(CompareSpec {
        axis,
        axis_span,
        baseline,
        baseline_span: base_v.span(),
        metrics,
    })
}
