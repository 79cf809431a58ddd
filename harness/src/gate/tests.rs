//! The gate on synthetic results: a clear regression fails, a change below the threshold
//! passes, a change inside the noise is inconclusive, improvements never fail, mismatched
//! environments are refused, and over 1,000 A/A families the false-alarm rate stays at or
//! below alpha.

use super::synthetic::{self, Draw, FOUR, TWELVE};
use super::*;

fn draw(factor: f64, noise: f64, seed: u64) -> Draw {
    Draw {
        factor,
        noise,
        repetitions: 5,
        seed,
    }
}

fn gate(base: &RunResults, cur: &RunResults) -> Report {
    evaluate(base, cur, &GateOptions::default(), &NoiseFloors::default()).unwrap()
}

fn row<'a>(r: &'a Report, case: &str) -> &'a Row {
    r.rows.iter().find(|x| x.case == case).unwrap()
}

const TX: &str = "nic=virtio,workload=net-tx";
const RR: &str = "nic=virtio,workload=net-rr";

#[test]
fn a_20_percent_throughput_drop_with_low_noise_fails() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 1));
    let cur = synthetic::run(FOUR, draw(1.0, 0.01, 2), &|id| {
        if id == TX {
            0.8
        } else {
            1.0
        }
    });
    let r = gate(&base, &cur);
    let x = row(&r, TX);
    assert_eq!(x.verdict, Verdict::Regression, "{}", x.why);
    assert!((x.change_pct().unwrap() + 20.0).abs() < 3.0, "{x:?}");
    assert!(x.p_adjusted.unwrap() < 0.05);
    assert_eq!(r.outcome, Outcome::Regression);
    assert_eq!(r.count(Verdict::Regression), 1, "{:#?}", r.rows);
}

#[test]
fn a_20_percent_latency_rise_with_low_noise_fails() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 3));
    let cur = synthetic::run(FOUR, draw(1.0, 0.01, 4), &|id| {
        if id == RR {
            1.2
        } else {
            1.0
        }
    });
    let r = gate(&base, &cur);
    assert_eq!(
        row(&r, RR).verdict,
        Verdict::Regression,
        "{}",
        row(&r, RR).why
    );
    assert_eq!(r.count(Verdict::Regression), 1);
}

#[test]
fn a_2_percent_change_passes_at_a_5_percent_threshold() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.005, 5));
    // 2% worse everywhere: throughput down, latency up.
    let cur = synthetic::run(FOUR, draw(1.0, 0.005, 6), &|id| {
        if id.contains("net-tx") {
            0.98
        } else {
            1.02
        }
    });
    let r = gate(&base, &cur);
    assert_eq!(r.outcome, Outcome::Pass, "{:#?}", r.rows);
    assert!(r.rows.iter().all(|x| x.verdict == Verdict::Pass));
}

#[test]
fn a_20_percent_change_inside_30_percent_noise_is_inconclusive() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.3, 7));
    let cur = synthetic::run(FOUR, draw(1.0, 0.3, 8), &|id| {
        if id == TX {
            0.8
        } else {
            1.0
        }
    });
    let r = gate(&base, &cur);
    let x = row(&r, TX);
    assert_eq!(x.verdict, Verdict::Inconclusive, "{x:?}");
    assert_eq!(r.count(Verdict::Regression), 0);
    assert_eq!(r.outcome, Outcome::Inconclusive);
}

#[test]
fn improvements_never_fail() {
    for (noise, seed) in [(0.01, 9), (0.3, 11)] {
        let base = synthetic::uniform(FOUR, draw(1.0, noise, seed));
        // Throughput up 30%, latency down 30%.
        let cur = synthetic::run(FOUR, draw(1.0, noise, seed + 1), &|id| {
            if id.contains("net-tx") {
                1.3
            } else {
                0.7
            }
        });
        let r = gate(&base, &cur);
        assert_eq!(r.count(Verdict::Regression), 0, "{:#?}", r.rows);
        if noise < 0.05 {
            assert!(
                r.rows.iter().all(|x| x.verdict == Verdict::Improved),
                "{:#?}",
                r.rows
            );
            assert_eq!(r.outcome, Outcome::Pass);
        }
    }
}

#[test]
fn mismatched_environments_are_refused_naming_the_difference() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 13));
    let mut cur = synthetic::uniform(FOUR, draw(1.0, 0.01, 14));
    cur.environment.host.cpu_model = "Other CPU".into();
    let e = evaluate(
        &base,
        &cur,
        &GateOptions::default(),
        &NoiseFloors::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, GateError::EnvMismatch(_)), "{msg}");
    assert!(
        msg.contains("cpu_model: 'Test CPU' vs 'Other CPU'"),
        "{msg}"
    );
    assert!(msg.contains("--allow-env-mismatch"), "{msg}");

    let mut cur = synthetic::uniform(FOUR, draw(1.0, 0.01, 14));
    cur.scenario.source.sha256 = "f".repeat(64);
    cur.environment.probe_sha256 = Some("cd".repeat(32));
    let msg = evaluate(
        &base,
        &cur,
        &GateOptions::default(),
        &NoiseFloors::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("scenario file"), "{msg}");
    assert!(
        msg.contains("image probe: sha256 abababababab vs cdcdcdcdcdcd"),
        "{msg}"
    );

    let allowed = GateOptions {
        allow_env_mismatch: true,
        ..Default::default()
    };
    let r = evaluate(&base, &cur, &allowed, &NoiseFloors::default()).unwrap();
    assert!(
        r.notes.iter().any(|n| n.contains("scenario file")),
        "{:?}",
        r.notes
    );
}

#[test]
fn the_hostname_alone_does_not_make_runs_incomparable() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 15));
    let mut cur = synthetic::uniform(FOUR, draw(1.0, 0.01, 16));
    cur.environment.host.hostname = "runner-2".into();
    assert!(evaluate(
        &base,
        &cur,
        &GateOptions::default(),
        &NoiseFloors::default()
    )
    .is_ok());
    assert_eq!(
        host_fingerprint(&base.environment),
        host_fingerprint(&cur.environment)
    );
}

#[test]
fn too_few_repetitions_are_inconclusive_and_say_why() {
    let two = |seed| Draw {
        repetitions: 2,
        ..draw(1.0, 0.01, seed)
    };
    let base = synthetic::uniform(FOUR, two(17));
    let cur = synthetic::run(FOUR, two(18), &|id| if id == TX { 0.5 } else { 1.0 });
    let r = gate(&base, &cur);
    let x = row(&r, TX);
    assert_eq!(x.verdict, Verdict::Inconclusive);
    assert!(x.why.contains("too few repetitions"), "{}", x.why);
    assert!(x.p.is_none());
}

#[test]
fn a_case_that_failed_in_the_current_run_is_a_regression() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 19));
    let mut cur = synthetic::uniform(FOUR, draw(1.0, 0.01, 20));
    cur.case_mut(TX).unwrap().status = CaseStatus::Failed {
        reason: "guest hung".into(),
        console_tail: vec![],
    };
    let r = gate(&base, &cur);
    assert_eq!(row(&r, TX).verdict, Verdict::Regression);
    assert!(row(&r, TX).why.contains("guest hung"));
}

#[test]
fn bad_options_and_unrelated_runs_are_refused() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 21));
    let floors = NoiseFloors::default();
    for opts in [
        GateOptions {
            threshold_pct: 0.0,
            ..Default::default()
        },
        GateOptions {
            alpha: 1.5,
            ..Default::default()
        },
        GateOptions {
            metrics: vec!["ops".into()],
            ..Default::default()
        },
    ] {
        assert!(evaluate(&base, &base, &opts, &floors).is_err());
    }
    let other = synthetic::uniform(TWELVE, draw(1.0, 0.01, 22));
    let mut other = other;
    other.scenario.source = base.scenario.source.clone();
    for c in &mut other.cases {
        c.id = format!("other-{}", c.id);
    }
    let e = evaluate(&base, &other, &GateOptions::default(), &floors).unwrap_err();
    assert!(matches!(e, GateError::NothingInCommon { .. }), "{e}");
}

#[test]
fn a_noise_floor_above_the_threshold_is_used_and_refused_under_strict() {
    let base = synthetic::uniform(FOUR, draw(1.0, 0.01, 23));
    // 8% slower: beyond 5%, but inside a 10% floor.
    let cur = synthetic::run(FOUR, draw(1.0, 0.01, 24), &|id| {
        if id == TX {
            0.92
        } else {
            1.0
        }
    });
    assert_eq!(row(&gate(&base, &cur), TX).verdict, Verdict::Regression);

    let mut floors = noise::ScenarioFloors {
        repetitions_per_side: 5,
        ..Default::default()
    };
    floors
        .floors
        .insert(TX.into(), [("ops_per_sec".to_string(), 10.0)].into());
    let floors = NoiseFloors::from_scenario("floors.json".into(), floors);
    let r = evaluate(&base, &cur, &GateOptions::default(), &floors).unwrap();
    let x = row(&r, TX);
    assert_eq!(x.threshold_pct, 10.0);
    assert_ne!(x.verdict, Verdict::Regression, "{}", x.why);
    assert!(
        r.notes.iter().any(|n| n.contains("noise floor")),
        "{:?}",
        r.notes
    );

    let strict = GateOptions {
        strict: true,
        ..Default::default()
    };
    let e = evaluate(&base, &cur, &strict, &floors).unwrap_err();
    assert!(matches!(e, GateError::BelowNoiseFloor { .. }), "{e}");
}

#[test]
fn an_aa_split_yields_floors_for_every_case() {
    let mut doc = synthetic::uniform(
        FOUR,
        Draw {
            repetitions: 8,
            ..draw(1.0, 0.02, 25)
        },
    );
    doc.scenario.run.repetitions = 8;
    let (a, b) = noise::split_aa(&doc);
    assert_eq!(
        a.cases[0]
            .repetitions
            .iter()
            .map(|r| r.index)
            .collect::<Vec<_>>(),
        vec![0, 3, 4, 7]
    );
    assert_eq!(b.cases[0].repetitions.len(), 4);
    let floors = noise::floors_from_aa(&doc, &BootstrapOptions::default()).unwrap();
    assert_eq!(floors.repetitions_per_side, 4);
    assert_eq!(floors.floors.len(), 4);
    for f in floors.floors.values() {
        let v = f.values().next().copied().unwrap();
        assert!(v > 0.0 && v < 20.0, "{v}");
    }
}

/// The gate's family-wise false-alarm rate over A/A families: 1,000 pairs of runs of 12 cases
/// drawn from the same distribution (3% noise, 5 repetitions a side). The gate itself must
/// alarm at most alpha of the time; the p-values alone (Holm, without the threshold) must also
/// hold alpha up to Monte-Carlo error, which checks that the permutation test is calibrated.
#[test]
fn false_alarm_rate_over_1000_aa_families_is_at_most_alpha() {
    let families = 1000;
    let opts = GateOptions {
        bootstrap: BootstrapOptions {
            resamples: 500,
            ..Default::default()
        },
        ..Default::default()
    };
    let (mut gate_alarms, mut p_alarms) = (0, 0);
    for f in 0..families {
        let base = synthetic::uniform(TWELVE, draw(1.0, 0.03, 1000 + 2 * f));
        let cur = synthetic::uniform(TWELVE, draw(1.0, 0.03, 1001 + 2 * f));
        let r = evaluate(&base, &cur, &opts, &NoiseFloors::default()).unwrap();
        gate_alarms += usize::from(r.outcome == Outcome::Regression);
        p_alarms += usize::from(
            r.rows
                .iter()
                .any(|x| x.p_adjusted.is_some_and(|p| p < opts.alpha)),
        );
    }
    let rate = gate_alarms as f64 / families as f64;
    let p_rate = p_alarms as f64 / families as f64;
    let se = (opts.alpha * (1.0 - opts.alpha) / families as f64).sqrt();
    eprintln!("A/A families: gate false-alarm rate {rate}, Holm-only rate {p_rate}");
    assert!(rate <= opts.alpha, "gate false-alarm rate {rate}");
    assert!(
        p_rate <= opts.alpha + 3.0 * se,
        "Holm-only false-alarm rate {p_rate}"
    );
    // The p-values are not degenerate: some families come close (the test can fail).
    assert!(
        p_alarms > 0,
        "no family reached adjusted p < alpha: the test has no power"
    );
}

#[test]
fn in_an_ab_run_a_failure_on_the_other_build_is_not_the_candidates() {
    let mut doc = synthetic::uniform(
        FOUR,
        Draw {
            repetitions: 6,
            ..draw(1.0, 0.01, 26)
        },
    );
    doc.case_mut(TX).unwrap().status = CaseStatus::Failed {
        reason: format!("{}: guest hung", crate::cli::bench::OTHER_BUILD_FAILED),
        console_tail: vec![],
    };
    let (this, other) = noise::split_ab(&doc);
    assert!(!this.case(TX).unwrap().is_failed());
    assert!(other.case(TX).unwrap().is_failed());
    let r = gate(&other, &this);
    assert_eq!(row(&r, TX).verdict, Verdict::Inconclusive);
    assert!(
        row(&r, TX).why.contains("failed in the baseline run"),
        "{}",
        row(&r, TX).why
    );
}
