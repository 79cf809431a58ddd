//! Synthetic results documents for the gate's and merge's tests: a real scenario expanded by
//! the scenario parser, each case's primary metric drawn from a seeded log-normal.

use std::collections::BTreeMap;

use crate::cli::bench::primary;
use crate::results::{CaseStatus, Environment, Host, KvmInfo, Repetition, Revision, RunResults};
use crate::scenario::Scenario;
use crate::stats::{BootstrapOptions, Rng};

/// 12 cases: net-tx (throughput, bigger is better) and net-rr (latency, smaller is better).
pub const TWELVE: &str = r#"
[workload]
batch = 1
[run]
repetitions = 5
[matrix]
nic = ["e1000", "virtio"]
workload = ["net-tx", "net-rr"]
frame_size = [64, 512, 1500]
"#;

/// 4 cases: e1000/virtio x net-tx/net-rr.
pub const FOUR: &str = r#"
[run]
repetitions = 5
[matrix]
nic = ["e1000", "virtio"]
workload = ["net-tx", "net-rr"]
"#;

pub fn environment() -> Environment {
    Environment {
        host: Host {
            hostname: "test".into(),
            kernel_release: "6.1.0".into(),
            kernel_version: "#1 SMP".into(),
            arch: "x86_64".into(),
            cpu_model: "Test CPU".into(),
            cores: 2,
            memory_mib: 24_000,
        },
        kvm: KvmInfo {
            flavour: "kvm-pvm".into(),
            cpl0_native: false,
            nested: true,
            emulated_host: false,
            api_version: Some(12),
            max_vcpus: Some(288),
            capabilities: BTreeMap::new(),
            error: None,
        },
        vmbench: Revision {
            version: "0.1.0".into(),
            git_revision: "0123abcd".into(),
            dirty: Some(false),
        },
        probe_sha256: Some("ab".repeat(32)),
    }
}

/// Standard normal draws (Box-Muller) from the stats module's seeded generator.
pub struct Normal(Rng);

impl Normal {
    pub fn new(seed: u64) -> Self {
        Normal(Rng::from_seed(seed))
    }

    fn uniform(&mut self) -> f64 {
        // 53 random bits, shifted off zero so that ln() is finite.
        (self.0.below(1 << 53) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn draw(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// How one side of a comparison is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    /// Multiplies every case's true value (1.0 = unchanged).
    pub factor: f64,
    /// Log-normal sigma: about the coefficient of variation for small values.
    pub noise: f64,
    pub repetitions: u32,
    pub seed: u64,
}

/// A finished run of `scenario` text where each case's primary metric is
/// `base(case) * factor(case) * exp(noise * z)`; `factor_of` lets a test change one case.
pub fn run(scenario: &str, draw: Draw, factor_of: &dyn Fn(&str) -> f64) -> RunResults {
    let s = Scenario::parse("scenarios/synthetic.toml", scenario).expect("test scenario");
    let mut doc = RunResults::new(format!("run-{}", draw.seed), environment(), s);
    let mut normal = Normal::new(draw.seed);
    for (i, c) in doc.cases.iter_mut().enumerate() {
        let (metric, _) = primary(c.params.workload.kind());
        let truth = 1000.0 * (i + 1) as f64 * draw.factor * factor_of(&c.id);
        c.repetitions = (0..draw.repetitions)
            .map(|index| Repetition {
                index,
                metrics: BTreeMap::from([(
                    metric.to_string(),
                    truth * (draw.noise * normal.draw()).exp(),
                )]),
                ..Default::default()
            })
            .collect();
        c.status = CaseStatus::Ok;
        c.update_stats(&BootstrapOptions::default());
    }
    doc.finished = true;
    doc
}

/// [`run`] with no case singled out.
pub fn uniform(scenario: &str, draw: Draw) -> RunResults {
    run(scenario, draw, &|_| 1.0)
}
