//! Reports rendered from checked-in results files (tests/data/README.md): the HTML parses
//! and holds every case, comparison and failure; every PNG decodes at its size; summary.md
//! matches its snapshot; bad inputs are refused with one clear line.

mod common;

use std::collections::BTreeSet;

use common::{data, rendered, run};
use reports::schema::Status;
use scraper::{Html, Selector};

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

fn texts(doc: &Html, s: &str) -> Vec<String> {
    doc.select(&sel(s))
        .map(|e| e.text().collect::<String>())
        .collect()
}

/// Checks what every report must hold; returns the parsed document.
fn check_page(html: &str, w: &reports::Written, runs: &[&str]) -> Html {
    let doc = Html::parse_document(html);
    assert!(doc.errors.is_empty(), "HTML parse errors: {:?}", doc.errors);
    // Self-contained: no script, no external resource.
    assert_eq!(doc.select(&sel("script")).count(), 0);
    for (s, attr) in [("link", "href"), ("img", "src"), ("image", "href")] {
        let found: Vec<Option<&str>> = doc.select(&sel(s)).map(|e| e.value().attr(attr)).collect();
        assert!(
            found.is_empty(),
            "external resources <{s} {attr}=...>: {found:?}"
        );
    }
    assert!(!html.contains("@import") && !html.contains("url("));
    // Sections in the order.
    let h2: Vec<String> = doc
        .select(&sel("h2"))
        .filter_map(|e| e.value().attr("id").map(str::to_string))
        .collect();
    assert_eq!(
        h2,
        [
            "headline",
            "cases",
            "bars",
            "latency",
            "repetitions",
            "why",
            "boot",
            "engines",
            "history",
            "failures",
            "environment"
        ]
    );
    // Every chart inline, each with its PNG of the stated size.
    let svg_ids: Vec<String> = doc
        .select(&sel("svg.chart"))
        .filter_map(|e| e.value().attr("id").map(str::to_string))
        .collect();
    let expected: Vec<String> = w.chart_ids.iter().map(|id| format!("chart-{id}")).collect();
    assert_eq!(svg_ids, expected);
    assert!(!w.chart_ids.is_empty());
    for (path, (width, height)) in w.pngs.iter().zip(&w.png_sizes) {
        let file = std::fs::File::open(path).expect("png");
        let mut reader = png::Decoder::new(std::io::BufReader::new(file))
            .read_info()
            .expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png frame");
        assert_eq!(
            (info.width, info.height),
            (*width, *height),
            "{}",
            path.display()
        );
        // Not blank: more than the background colour.
        let distinct: BTreeSet<&[u8]> = buf[..info.buffer_size()]
            .chunks(3)
            .take(2_000_000)
            .collect();
        assert!(
            distinct.len() > 20,
            "{} has {} colours",
            path.display(),
            distinct.len()
        );
    }
    assert_eq!(w.pngs.len(), w.chart_ids.len());
    // Every case of every run, with its status.
    let ids: BTreeSet<String> = texts(&doc, "#cases ~ div table td.id")
        .into_iter()
        .collect();
    for name in runs {
        let r = run(name);
        for c in &r.cases {
            assert!(
                ids.contains(&c.id),
                "case {} missing from the cases table",
                c.id
            );
        }
        // The command line, exactly.
        if let Some(argv) = &r.command_line {
            assert!(html.contains(&reports::html::escape(&reports::html::shell_line(argv))));
        }
        assert!(html.contains(&reports::html::escape(&r.environment.host.hostname)));
        assert!(html.contains(&r.environment.vmbench.git_revision));
    }
    doc
}

#[test]
fn real_smoke_run() {
    let (_dir, w, html) = rendered(&["smoke.json"], None);
    let doc = check_page(&html, &w, &["smoke.json"]);
    let r = run("smoke.json");
    // A bar chart per workload, a CDF for the workloads with latency samples, the why panel
    // for the devices with exits, the boot timeline.
    let mut workloads: Vec<&str> = r
        .cases
        .iter()
        .map(|c| c.params.workload.name.as_str())
        .collect();
    workloads.dedup();
    for wl in &workloads {
        assert!(w.chart_ids.contains(&format!("bars-{wl}")), "bars-{wl}");
    }
    for id in ["cdf-net-rr", "why-net-tx", "why-blk-read", "boot"] {
        assert!(
            w.chart_ids.contains(&id.to_string()),
            "{id} in {:?}",
            w.chart_ids
        );
    }
    // Both exit counts, labelled; virtio's in-kernel exits visible.
    let head = texts(&doc, "#cases ~ div table th").join("|");
    assert!(
        head.contains("exits to vmbench") && head.contains("all KVM exits"),
        "{head}"
    );
    // The calibration figures the why panel prices exits with.
    let cal = r.calibration.as_ref().expect("calibration");
    let pio = reports::model::fmt("pio_exit_ns", cal.figures["pio_exit_ns"]);
    assert!(html.contains(&pio), "{pio}");
    assert!(texts(&doc, "#failures + p")
        .join("")
        .contains("Every case finished"));
    assert!(!html.contains("Incomplete run"));
}

#[test]
fn engines_run_shows_every_comparison_side_by_side() {
    let (_dir, w, html) = rendered(&["engines.json"], None);
    let doc = check_page(&html, &w, &["engines.json"]);
    let r = run("engines.json");
    let rows: Vec<String> = doc
        .select(&sel("#headline + table tbody tr"))
        .map(|e| e.text().collect::<Vec<_>>().join(" "))
        .collect();
    let mut shown = 0;
    for cmp in &r.comparisons {
        let case = r.case(&cmp.case).expect("case");
        if cmp.metric != reports::model::primary(&case.params.workload.name) {
            continue;
        }
        shown += 1;
        let ratio = format!("×{:.2}", cmp.ratio.ratio);
        assert!(
            rows.iter()
                .any(|row| row.contains(&cmp.case) && row.contains(&ratio)),
            "{} {ratio} not in the headline",
            cmp.case
        );
    }
    assert_eq!(rows.len(), shown);
    assert!(shown >= 4);
    assert!(w.chart_ids.contains(&"engines".to_string()));
    assert!(html.contains("(QEMU)"));
}

#[test]
fn failed_and_pending_cases_are_shown_as_such() {
    let (_dir, w, html) = rendered(&["failed-pending.json"], None);
    let doc = check_page(&html, &w, &["failed-pending.json"]);
    let r = run("failed-pending.json");
    assert!(html.contains("Incomplete run"));
    let failures = doc
        .select(&sel("main"))
        .next()
        .map(|m| m.text().collect::<String>())
        .unwrap_or_default();
    let mut failed = 0;
    let mut pending = 0;
    for c in &r.cases {
        match &c.status {
            Status::Failed {
                reason,
                console_tail,
            } => {
                failed += 1;
                assert!(failures.contains(reason.as_str()), "reason of {}", c.id);
                for line in console_tail {
                    assert!(failures.contains(line.as_str()), "console line {line}");
                }
            }
            Status::Pending => {
                pending += 1;
                assert!(failures.contains(&format!(
                    "pending: {} of 2 repetitions ran",
                    c.repetitions.len()
                )));
            }
            Status::Ok => {}
        }
    }
    assert_eq!((failed, pending), (1, 1));
    assert_eq!(
        texts(&doc, "span.failed").len(),
        3,
        "in the cases table, the repetitions table and the failures section"
    );
}

#[test]
fn several_runs_grouped_with_history_and_baseline() {
    let (_dir, w, html) = rendered(&["other-host.json", "smoke.json"], Some("other-host.json"));
    let doc = check_page(&html, &w, &["other-host.json", "smoke.json"]);
    // Each case once per run, labelled by host and revision.
    let smoke = run("smoke.json");
    let rows = doc.select(&sel("#cases ~ div table tbody tr")).count();
    assert_eq!(rows, 2 * smoke.cases.len());
    assert!(html.contains("bench-metal-01 @ 0123456"));
    // A history chart per case with a primary figure in both runs.
    let with_stats = smoke.cases.iter().filter(|c| !c.stats.is_empty()).count();
    let hist = w
        .chart_ids
        .iter()
        .filter(|id| id.starts_with("history-"))
        .count();
    assert_eq!(hist, with_stats);
    // The baseline has the same figures: every case ×1.00, no significant change.
    let cells = texts(&doc, "#cases ~ div table tbody td.n");
    let changes: Vec<&String> = cells
        .iter()
        .filter(|t| {
            t.contains("no significant difference") || t.contains("better") || t.contains("worse")
        })
        .collect();
    assert_eq!(changes.len(), with_stats * 2);
    assert!(
        changes
            .iter()
            .all(|t| t.starts_with("×1.00") && t.contains("no significant difference")),
        "{changes:?}"
    );
}

#[test]
fn summary_md_matches_snapshots() {
    for (names, base, snap) in [
        (&["smoke.json"][..], None, "smoke-summary.md"),
        (&["engines.json"][..], None, "engines-summary.md"),
        (
            &["failed-pending.json"][..],
            None,
            "failed-pending-summary.md",
        ),
        (
            &["other-host.json", "smoke.json"][..],
            Some("other-host.json"),
            "two-hosts-summary.md",
        ),
    ] {
        let (_dir, w, _) = rendered(names, base);
        let md = std::fs::read_to_string(&w.summary).expect("summary.md");
        assert!(md.len() < 1 << 20);
        for png in &w.pngs {
            let name = png.file_name().unwrap().to_string_lossy();
            assert!(
                md.contains(&format!("](charts/{name})")),
                "{name} not linked"
            );
        }
        let path = data("expected").join(snap);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &md).expect("write snapshot");
        }
        let expected =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(md, expected, "{snap} differs; UPDATE_SNAPSHOTS=1 to accept");
    }
}

#[test]
fn bad_inputs_are_refused_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("empty.json"), "").unwrap();
    let whole = std::fs::read_to_string(data("smoke.json")).unwrap();
    std::fs::write(p("truncated.json"), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(
        p("v2.json"),
        whole.replacen("\"schema_version\":1", "\"schema_version\":2", 1),
    )
    .unwrap();
    std::fs::write(p("other.json"), "{\"name\": 1}").unwrap();
    for (path, want) in [
        (dir.path().to_path_buf(), "is a directory"),
        (p("empty.json"), "is empty"),
        (p("truncated.json"), "not valid JSON"),
        (p("v2.json"), "schema_version 2"),
        (p("other.json"), "not a vmbench results file"),
        (p("missing.json"), "cannot read"),
    ] {
        let e = reports::load(&path).expect_err("must be refused");
        let msg = e.to_string();
        assert!(
            msg.contains(want) && msg.contains(&path.display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
}

#[test]
fn results_from_the_emulated_host_are_not_presented_as_timings() {
    let mut r = run("smoke.json");
    let plain = {
        let dir = tempfile::tempdir().unwrap();
        let w = reports::render(std::slice::from_ref(&r), None, dir.path(), &mut |_| {}).unwrap();
        std::fs::read_to_string(&w.html).unwrap()
    };
    assert!(!plain.contains("Not real timings"));
    r.environment.kvm.emulated_host = true;
    let dir = tempfile::tempdir().unwrap();
    let w = reports::render(std::slice::from_ref(&r), None, dir.path(), &mut |_| {}).unwrap();
    let html = std::fs::read_to_string(&w.html).unwrap();
    let doc = Html::parse_document(&html);
    let banners = texts(&doc, "div.banner").join("|");
    assert!(banners.contains("Not real timings"), "{banners}");
    assert!(banners.contains("emulated AMD-V host"), "{banners}");
    let md = std::fs::read_to_string(&w.summary).unwrap();
    assert!(md.contains("**Not real timings**"), "{md}");
}

#[test]
fn exits_by_register_are_listed_with_their_device_not_as_reasons() {
    let mut r = run("smoke.json");
    let case = r
        .cases
        .iter_mut()
        .find(|c| c.repetitions.iter().any(|p| !p.exits.per_op.is_empty()))
        .expect("a case with exit counts");
    let id = case.id.clone();
    for p in &mut case.repetitions {
        p.exits.per_op.insert("register:e1000 read:ICR".into(), 1.5);
        p.exits
            .per_op
            .insert("register:e1000 write:TDT".into(), 2.0);
    }
    let dir = tempfile::tempdir().unwrap();
    let w = reports::render(std::slice::from_ref(&r), None, dir.path(), &mut |_| {}).unwrap();
    let doc = Html::parse_document(&std::fs::read_to_string(&w.html).unwrap());
    let row: Vec<String> = doc
        .select(&sel("tr"))
        .find(|tr| {
            let cells: Vec<String> = tr.select(&sel("td")).map(|t| t.text().collect()).collect();
            cells.first() == Some(&id) && cells.len() == 8
        })
        .expect("the case's row in the why table")
        .select(&sel("td"))
        .map(|t| t.text().collect())
        .collect();
    assert!(!row[2].contains("register"), "{row:?}");
    // Busiest first.
    assert!(
        row[3].ends_with("(e1000 write:TDT 2.00, e1000 read:ICR 1.50)"),
        "{row:?}"
    );
}
