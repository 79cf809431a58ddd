//! `vmbench boot`'s in-process share: one probe machine built, run to `done` (exec `hello`:
//! the PCI scan and the boot records) and torn down, by the same engine call the command
//! makes. Process start-up and the probe's cache key are outside it (the whole process is
//! measured by timing the command; docs/architecture.md, "Where `vmbench boot`'s time goes"). Set-up and teardown are mostly KVM's: the
//! memory slot's SRCU grace period, and the destruction of the VM (which waits for the grace
//! periods still pending), so a change in where the VMM registers what shows here.
//!
//! Needs /dev/kvm and the probe (built on first use, as `vmbench boot` does).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};

use vmbench::cli::boot;
use vmbench::engine;

fn boot_hello(c: &mut Criterion) {
    let args = boot::parse(&["boot".to_string()]).expect("default arguments parse");
    let (probe, _) = boot::probe_path(None).expect("the probe builds");
    let spec = boot::guest_spec(&args, probe).expect("the default guest is valid");
    let limits = boot::limits(&args);
    let vmbench = engine::for_kind(args.engine);
    let mut g = c.benchmark_group("boot");
    // One iteration is a whole machine (~10 ms here); fewer, longer samples.
    g.sample_size(30)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10));
    g.bench_function("probe_hello_in_process", |b| {
        b.iter(|| {
            let out = vmbench
                .run(&spec, &limits, &mut |_| {})
                .expect("the machine runs");
            assert!(out.failure().is_none(), "{:?}", out.failure());
        })
    });
    g.finish();
}

criterion_group!(benches, boot_hello);
criterion_main!(benches);
