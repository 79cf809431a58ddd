//! `vmbench boot`: boot one guest, run one probe workload, print what it reports, its boot
//! timeline and the VM exits it cost.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use vmm::exits::{ExitSnapshot, VcpuExits};
use vmm::kinds::{DiskFormat, DiskKind, NetBackendKind, NicKind};

use super::{kind_or_none, num};
use crate::engine::{self, DiskSpec, GuestSpec, LinuxImage, NicSpec, GUEST_MAC};
use crate::exitcode::Failed;
use crate::scenario::{or_none, EngineKind, Guest};
use crate::session::{self, window, Limits, Outcome, Timed};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The guest: the probe, or Linux (the linux image's kernel and agent unless --kernel or
    /// --initrd say otherwise).
    #[arg(long, value_enum, default_value_t = Guest::Probe)]
    pub guest: Guest,
    /// A Linux kernel to boot (ELF vmlinux or bzImage) instead of the linux image's.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// An initramfs for the Linux guest instead of the linux image's (whose /init is the agent).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel parameters added to vmbench's (before the agent's ` -- ` words); vmbench's VMM only.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Where to run: here, or inside an emulated AMD-V host (QEMU-TCG `-cpu max` with KVM in
    /// it, `images build test-host`), for Linux guests on vmbench's VMM where this host cannot
    /// run guest kernel code (docs/linux-boot.md). Timings there are not real.
    #[arg(long, value_enum, default_value_t = crate::emulated::Host::Native)]
    pub host: crate::emulated::Host,
    /// Number of vCPUs; the probe runs on each and each reports ready.
    #[arg(long, default_value_t = 1, value_parser = num::int::<usize>(1, vmm::boot::MAX_VCPUS as u64))]
    pub vcpus: usize,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256, value_parser = num::int::<u64>(vmm::boot::MIN_MEM_MIB, vmm::boot::MAX_MEM_MIB))]
    pub mem: u64,
    /// The workload and its arguments: the probe's (hello, calibrate [n=N], crash, hang...),
    /// or with --guest linux the agent's (hello, net-rr size=64, blk-pattern ...; docs/agent.md).
    #[arg(long, default_value = "hello")]
    pub probe_exec: String,
    /// A probe ELF to boot instead of the one vmbench builds.
    #[arg(long)]
    pub probe: Option<PathBuf>,
    /// Seconds to wait for the guest to report ready (default 10, 180 for Linux; at most a day).
    #[arg(long, value_parser = num::float(SECS))]
    pub timeout: Option<f64>,
    /// Seconds the workload may run after ready (at most a day).
    #[arg(long, default_value_t = 120.0, value_parser = num::float(SECS))]
    pub run_timeout: f64,
    /// The disk controller: virtio (virtio-blk), ide (PIIX3, emulated) or none.
    #[arg(long, value_parser = kind_or_none::<DiskKind>(), default_value = or_none::NONE)]
    pub disk: std::option::Option<DiskKind>,
    /// The disk image, required with --disk: raw or qcow2, recognised by its contents unless
    /// --disk-format says which.
    #[arg(long)]
    pub disk_image: Option<PathBuf>,
    /// The image's format, stated: not guessed from the contents, and a raw image then takes
    /// any write (a guessed raw image refuses guest writes that would make its first sector
    /// look like another format, as QEMU does).
    #[arg(long, value_enum, requires = "disk_image")]
    pub disk_format: Option<DiskFormat>,
    /// Serve the disk read-only.
    #[arg(long)]
    pub disk_readonly: bool,
    /// Open the disk image with O_DIRECT (bypass the host page cache).
    #[arg(long)]
    pub direct_io: bool,
    /// The NIC: virtio (virtio-net), e1000 (Intel 82540EM, emulated) or none.
    #[arg(long, value_parser = kind_or_none::<NicKind>(), default_value = or_none::NONE)]
    pub nic: std::option::Option<NicKind>,
    /// Where the NIC's frames go: the in-process peer, or a TAP in a network namespace
    /// (needs root).
    #[arg(long, value_enum, default_value_t = NetBackendKind::Peer)]
    pub net_backend: NetBackendKind,
    /// Which VMM boots the guest: vmbench's own, or QEMU (KVM if it can run the guest, else
    /// TCG; one vCPU, peer back-end; no exit counts).
    #[arg(long, value_enum, default_value_t = EngineKind::Vmbench)]
    pub engine: EngineKind,
}

/// The Linux guest's boot files: the user's, else the linux image's (built on first use).
fn linux_image(args: &Args) -> anyhow::Result<Option<LinuxImage>> {
    let params = args.cmdline.clone().unwrap_or_default();
    match (args.guest, &args.kernel, &args.initrd, &args.cmdline) {
        (Guest::Probe, None, None, None) => return Ok(None),
        (Guest::Probe, ..) => bail!("--kernel, --initrd and --cmdline need --guest linux"),
        (Guest::Linux, ..) => {}
    }
    if args.cmdline.is_some() && args.engine == EngineKind::Qemu {
        bail!("--cmdline is for --engine vmbench; QEMU boots the linux image with its own command line");
    }
    if let (Some(k), Some(i)) = (&args.kernel, &args.initrd) {
        return Ok(Some(LinuxImage {
            vmlinux: k.clone(),
            initramfs: i.clone(),
            params,
        }));
    }
    let m = images::linux::build(&images::linux::Options::default(), &mut |p| {
        eprintln!("{p}")
    })
    .context("cannot build the linux image (or pass --kernel and --initrd)")?;
    let img = LinuxImage::from_manifest(&m)
        .context("the linux image's manifest lacks vmlinux or initramfs.cpio.gz")?;
    Ok(Some(LinuxImage {
        vmlinux: args.kernel.clone().unwrap_or(img.vmlinux),
        initramfs: args.initrd.clone().unwrap_or(img.initramfs),
        params,
    }))
}

/// The guest the flags describe, with errors that say what to pass.
pub fn guest_spec(args: &Args, probe: PathBuf) -> anyhow::Result<GuestSpec> {
    let disk = match (args.disk, &args.disk_image) {
        (None, None) => None,
        (None, Some(p)) => bail!("--disk-image {} needs --disk virtio", p.display()),
        (Some(kind), None) => bail!(
            "--disk {kind} needs --disk-image FILE (a raw image; make one with `truncate -s 64M disk.img`)"
        ),
        (Some(kind), Some(image)) => {
            let d = match args.disk_format {
                None => DiskSpec::open(kind, image.clone())?,
                Some(format) => DiskSpec::stated(kind, image.clone(), format)?,
            };
            Some(DiskSpec {
                read_only: args.disk_readonly,
                direct_io: args.direct_io,
                ..d
            })
        }
    };
    let spec = GuestSpec {
        guest: args.guest,
        linux: linux_image(args)?,
        probe,
        vcpus: args.vcpus,
        mem_mib: args.mem,
        exec: args.probe_exec.clone(),
        nic: args.nic.map(|kind| NicSpec {
            kind,
            backend: args.net_backend,
            mac: GUEST_MAC,
        }),
        disk,
    };
    Ok(spec)
}

/// `--timeout` and `--run-timeout`: positive, at most a day (so no deadline overflows).
const SECS: num::FloatRange = num::FloatRange::seconds(0.0, num::MAX_SECS);

/// The probe to boot: the given file or the one from the image cache.
pub fn probe_path(given: Option<PathBuf>) -> anyhow::Result<(PathBuf, String)> {
    match given {
        Some(p) => {
            // A missing file is the VMM's to report (with how to build the probe).
            match crate::input::open_regular(&p, crate::input::MAX_PROBE_BYTES) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("--probe {}", p.display()))
                }
                _ => {}
            }
            let sha = images::manifest::sha256_file(&p).unwrap_or_else(|_| "unreadable".into());
            Ok((p, sha))
        }
        None => {
            let m = images::probe::build(&mut |msg| eprintln!("{msg}"))
                .context("cannot build the probe guest")?;
            let a = &m.artifacts[0];
            Ok((a.path.clone(), a.sha256.clone()))
        }
    }
}

/// How long the guest of `args` may take to report ready, and then to finish.
pub fn limits(args: &Args) -> Limits {
    let default_timeout = match args.guest {
        Guest::Probe => 10.0,
        Guest::Linux => 180.0,
    };
    Limits {
        ready: Duration::from_secs_f64(args.timeout.unwrap_or(default_timeout)),
        run: Duration::from_secs_f64(args.run_timeout),
    }
}

/// `args` as `vmbench boot` would parse them (`args[0]` is `boot`).
pub fn parse(args: &[String]) -> Result<Args, clap::Error> {
    #[derive(clap::Parser)]
    #[command(name = "vmbench")]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }
    #[derive(clap::Subcommand)]
    enum Sub {
        Boot(Args),
    }
    use clap::Parser;
    let Sub::Boot(a) =
        Cli::try_parse_from(std::iter::once("vmbench".to_string()).chain(args.iter().cloned()))?
            .command;
    Ok(a)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let limits = limits(&args);
    if args.host == crate::emulated::Host::Emulated {
        return crate::emulated::boot(&args);
    }
    let (probe, sha) = match args.guest {
        Guest::Probe => probe_path(args.probe.clone())?,
        Guest::Linux => (args.probe.clone().unwrap_or_default(), String::new()),
    };
    let spec = guest_spec(&args, probe.clone())?;
    session::cancel_on_signals().context("cannot install the SIGINT and SIGTERM handlers")?;
    let sha16 = |p: &std::path::Path| {
        let s = images::manifest::sha256_file(p).unwrap_or_else(|_| "unreadable".into());
        s[..s.len().min(16)].to_string()
    };
    match &spec.linux {
        None => println!(
            "probe {} (sha256 {}), {} vCPU(s), {} MiB, exec '{}'",
            probe.display(),
            &sha[..sha.len().min(16)],
            spec.vcpus,
            spec.mem_mib,
            spec.exec
        ),
        Some(l) => println!(
            "linux {} (sha256 {}), initrd {} (sha256 {}), {} vCPU(s), {} MiB, agent '{}'",
            l.vmlinux.display(),
            sha16(&l.vmlinux),
            l.initramfs.display(),
            sha16(&l.initramfs),
            spec.vcpus,
            spec.mem_mib,
            spec.exec
        ),
    }
    let out = engine::for_kind(args.engine).run(&spec, &limits, &mut print_record)?;
    print_timeline(&out, started);
    print_exits(&out);
    for (dev, counters) in &out.device_counters {
        let c: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{dev}: {}", c.join(", "));
    }
    if (out.failure().is_some() || spec.guest == Guest::Linux) && !out.console_tail.is_empty() {
        println!("console tail:");
        for l in &out.console_tail {
            println!("  {l}");
        }
    }
    // A guest that never got going (no `ready`, whatever its ending) is unusable input
    // (exit 2); one that ran and failed, or whose workload saw errors, is a failed run (1).
    match (out.reported_ready(), out.failure()) {
        (_, None) => Ok(()),
        (false, Some(why)) => bail!(why),
        (true, Some(why)) => Err(Failed(why).into()),
    }
}

fn print_record(t: &Timed) {
    let r = &t.record;
    match r.kind.as_str() {
        "ready" => println!("vCPU {} ready", r.get("vcpu").unwrap_or("?")),
        "info" => println!(
            "guest sees: {} MiB of memory, {} vCPU(s) ({} reported ready), TSC {:.1} MHz (from {}), engine {}",
            r.get_u64("mem").unwrap_or(0) >> 20,
            r.get("vcpus").unwrap_or("?"),
            r.get("vcpus_ready").unwrap_or("?"),
            r.get_u64("tsc_khz").unwrap_or(0) as f64 / 1e3,
            r.get("tsc_source").unwrap_or("?"),
            r.get("engine").unwrap_or("?"),
        ),
        "pci" => println!(
            "pci {} {} class {}",
            r.get("bdf").unwrap_or("?"),
            r.get("id").unwrap_or("?"),
            r.get("class").unwrap_or("?")
        ),
        "pci-done" => println!("pci: {} function(s) on bus 0", r.get("functions").unwrap_or("?")),
        "result" if r.get("unit") == Some("ns") => println!(
            "{:<16} median {:>9.2} µs   p10 {:>9.2}  p90 {:>9.2}  p99 {:>9.2}  min {:>9.2}  max {:>9.2}   n={}",
            r.get("name").unwrap_or("?"),
            us(r.get_u64("median")),
            us(r.get_u64("p10")),
            us(r.get_u64("p90")),
            us(r.get_u64("p99")),
            us(r.get_u64("min")),
            us(r.get_u64("max")),
            r.get("n").unwrap_or("?")
        ),
        "latency" => println!(
            "{} latency: median {:.2} µs, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, min {:.2}, max {:.2} (n={})",
            r.get("workload").unwrap_or("?"),
            us(r.get_u64("p50")),
            us(r.get_u64("p90")),
            us(r.get_u64("p99")),
            us(r.get_u64("p999")),
            us(r.get_u64("min")),
            us(r.get_u64("max")),
            r.get("n").unwrap_or("?")
        ),
        "result" if r.get_u64("window_ns").is_some() => {
            let secs = r.get_u64("window_ns").unwrap_or(0) as f64 / 1e9;
            let ops = r.get_u64("ops").unwrap_or(0) as f64;
            let bytes = r.get_u64("bytes").unwrap_or(0) as f64;
            println!(
                "{}: {:.0} ops/s, {:.1} MB/s ({:.3} Gbit/s) over {:.2} s   [{r}]",
                r.get("name").unwrap_or("?"),
                ops / secs.max(1e-9),
                bytes / secs.max(1e-9) / 1e6,
                bytes * 8.0 / secs.max(1e-9) / 1e9,
                secs
            )
        }
        "window-start" | "window-end" | "samples" => {}
        "log" => println!("guest: {}", r.text),
        "error" => println!("guest error: {} {}", r.text, r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")),
        _ => println!("{r}"),
    }
}

fn us(ns: Option<u64>) -> f64 {
    ns.unwrap_or(0) as f64 / 1e3
}

/// The boot's phases; `started` is when this command began (its arguments parsed).
fn print_timeline(out: &Outcome, started: std::time::Instant) {
    let f = |v: Option<f64>| {
        v.map(|v| format!("{v:.2} ms"))
            .unwrap_or_else(|| "-".into())
    };
    let t = &out.timeline;
    let startup = t
        .begin
        .map(|b| b.saturating_duration_since(started).as_secs_f64() * 1e3);
    let teardown = t
        .teardown_ms
        .map(|v| format!("; teardown {v:.2} ms"))
        .unwrap_or_default();
    println!(
        "boot timeline: start-up (images, checks) {}, VMM set-up {}, start to first guest instruction {}, first instruction to ready {}, total {}{teardown}",
        f(startup),
        f(t.setup_ms()),
        f(t.first_instruction_ms()),
        f(t.ready_ms()),
        f(t.total_ms())
    );
    let ready = t.ready.iter().filter(|r| r.is_some()).count();
    if t.ready.len() > 1 {
        println!("vCPUs ready: {ready} of {}", t.ready.len());
    }
}

fn fmt_counts(m: &std::collections::BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_exits(out: &Outcome) {
    let Some(exits) = &out.exits else {
        println!("VM exits: not counted by this engine ({})", out.last_exit);
        return;
    };
    let total = exits.total();
    println!(
        "VM exits: {} ({}); by device: {}",
        total.total(),
        fmt_counts(&total.by_reason),
        fmt_counts(&total.by_device)
    );
    if let Some(w) = workload_exits(out) {
        println!(
            "  of which during the workload (ready to done, vCPU 0): {} ({})",
            w.total(),
            fmt_counts(&w.by_device)
        );
    }
    if let Some(m) = window(out) {
        println!(
            "measured window: {} ops, {:.3} VM exits/op to user space ({}); VMM CPU outside the guest {:.2} µs/op (user {:.2}, sys {:.2}; guest code ran {:.0} ms)",
            m.ops,
            m.exits.total() as f64 / m.ops.max(1) as f64,
            fmt_counts(&m.exits.by_device),
            (m.cpu.vmm_user_ns() + m.cpu.sys_ns) as f64 / 1e3 / m.ops.max(1) as f64,
            m.cpu.vmm_user_ns() as f64 / 1e3 / m.ops.max(1) as f64,
            m.cpu.sys_ns as f64 / 1e3 / m.ops.max(1) as f64,
            m.cpu.guest_ns as f64 / 1e6,
        );
        if let Some(n) = m.kvm.get("exits") {
            println!(
                "  KVM's own count: {:.3} exits/op of every kind (io_exits {}, mmio_exits {}, ioeventfd and in-kernel exits included)",
                *n as f64 / m.ops.max(1) as f64,
                m.kvm.get("io_exits").copied().unwrap_or(0),
                m.kvm.get("mmio_exits").copied().unwrap_or(0),
            );
        }
        for (dev, c) in &m.devices {
            let kicks: u64 = c
                .iter()
                .filter(|(k, _)| *k == "kicks" || k.ends_with("_kicks"))
                .map(|(_, v)| v)
                .sum();
            if let Some(irqs) = c.get("interrupts") {
                println!(
                    "  {dev} in the window: {:.3} kicks/op ({kicks}), {:.3} interrupts/op ({irqs})",
                    kicks as f64 / m.ops.max(1) as f64,
                    *irqs as f64 / m.ops.max(1) as f64,
                );
            }
        }
    }
    if let Some(n) = out.ioeventfd_writes.filter(|&n| n > 0) {
        println!("ioeventfd writes handled in the kernel: {n}");
    }
}

/// vCPU 0's exits between its `ready` and `done` records (both taken at the doorbell).
fn workload_exits(out: &Outcome) -> Option<VcpuExits> {
    fn snap<'a>(out: &'a Outcome, kind: &'a str) -> Option<&'a ExitSnapshot> {
        out.records_of(kind)
            .find(|t| t.vcpu == Some(0))
            .and_then(|t| t.exits.as_ref())
    }
    let (a, b) = (snap(out, "ready")?, snap(out, "done")?);
    b.since(a).vcpus.into_iter().next()
}
