//! `--host emulated`: run a vmbench command inside an emulated AMD-V host. QEMU-TCG with
//! `-cpu max` gives its guest SVM with nested paging; the test-host image
//! (`images build test-host`, `images::test_host`) loads KVM there and runs this vmbench
//! binary with the same command. Files go both ways through a 9p share of a work directory
//! (guest images in, disk images written in place); the console comes back line by line, the
//! host's own boot as progress on stderr. What runs there runs completely but slowly: its
//! timings are not real (docs/linux-boot.md).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use images::test_host::{MARK_EXIT, MARK_RUN};
use vmm::process::DieWithParent;

use crate::cli::boot::Args;
use crate::exitcode::Failed;
use crate::scenario::Guest;

/// Where a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Host {
    /// On this machine's KVM.
    Native,
    /// Inside QEMU-TCG `-cpu max` with KVM (kvm-amd) loaded in it.
    Emulated,
}

/// Memory of the emulated host: its initramfs (vmbench is ~40 MB), the guest's memory and
/// room for the page cache of the shared files.
const HOST_MEM_MIB: u64 = 2048;

/// A work directory shared with the emulated host (`/work` there), and the files put in it.
pub struct Work {
    dir: PathBuf,
    /// (inside the work directory, on this host) of files copied in that must be copied back.
    copied_back: Vec<(PathBuf, PathBuf)>,
}

impl Work {
    pub fn new() -> anyhow::Result<Work> {
        let cache = images::cache_dir();
        std::fs::create_dir_all(&cache)
            .with_context(|| format!("cannot create {}", cache.display()))?;
        let dir = cache.join(format!(".host-work-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create the work directory {}", dir.display()))?;
        Ok(Work {
            dir,
            copied_back: Vec::new(),
        })
    }

    /// Puts `file` in the share as `name` (a hard link, else a copy; a writable copy is
    /// copied back at the end) and returns its path inside the emulated host.
    pub fn add(&mut self, file: &Path, name: &str, writable: bool) -> anyhow::Result<String> {
        let at = self.dir.join(name);
        if std::fs::hard_link(file, &at).is_err() {
            std::fs::copy(file, &at)
                .with_context(|| format!("cannot copy {} to the emulated host", file.display()))?;
            if writable {
                self.copied_back.push((at, file.to_path_buf()));
            }
        }
        Ok(format!("/work/{name}"))
    }

    /// The directory on this host.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Copies the writable files that could not be linked back to where they came from.
    pub fn finish(self) -> anyhow::Result<()> {
        for (at, to) in &self.copied_back {
            std::fs::copy(at, to).with_context(|| format!("cannot copy {} back", to.display()))?;
        }
        Ok(())
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A vmbench command for the emulated host (its arguments, paths as seen from inside:
/// `/work/...`) and how long it may take there before the host counts as hung.
#[derive(Clone, Debug)]
pub struct HostCommand {
    pub args: Vec<String>,
    pub budget: Duration,
    /// It runs guests on QEMU: the emulated host must carry QEMU.
    pub qemu: bool,
}

impl HostCommand {
    /// A `boot` command: it gets as long as its guest's limits allow (its `--timeout` and
    /// `--run-timeout`, which the vmbench inside enforces) plus [`COMMAND_MARGIN`].
    pub fn boot(args: Vec<String>) -> anyhow::Result<HostCommand> {
        check_passable(&args)?;
        let parsed = crate::cli::boot::parse(&args)
            .map_err(|e| anyhow::anyhow!("the emulated host's boot command {args:?}: {e}"))?;
        let limits = crate::cli::boot::limits(&parsed);
        Ok(HostCommand {
            args,
            budget: limits.ready + limits.run + COMMAND_MARGIN,
            qemu: false,
        })
    }

    /// Any command, with the budget its caller worked out (plus [`COMMAND_MARGIN`]).
    pub fn with_budget(args: Vec<String>, budget: Duration) -> anyhow::Result<HostCommand> {
        check_passable(&args)?;
        Ok(HostCommand {
            args,
            budget: budget + COMMAND_MARGIN,
            qemu: false,
        })
    }
}

/// The init reads one argument a line, commands separated by an empty line.
fn check_passable(args: &[String]) -> anyhow::Result<()> {
    if args.iter().any(|a| a.is_empty() || a.contains('\n')) {
        bail!(
            "an argument of {args:?} is empty or has a line break; the emulated host cannot pass it"
        );
    }
    Ok(())
}

/// The `boot` command the emulated host runs: the same flags, files replaced by their
/// places in the share.
fn inner_args(args: &Args, work: &mut Work) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = vec!["boot".into()];
    let mut flag = |name: &str, value: String| {
        v.push(format!("--{name}"));
        v.push(value);
    };
    flag("guest", args.guest.to_string());
    flag("engine", args.engine.to_string());
    flag("vcpus", args.vcpus.to_string());
    flag("mem", args.mem.to_string());
    flag("probe-exec", args.probe_exec.clone());
    if let Some(t) = args.timeout {
        flag("timeout", t.to_string());
    }
    flag("run-timeout", args.run_timeout.to_string());
    flag("net-backend", args.net_backend.to_string());
    flag("nic", args.nic.map_or("none".into(), |n| n.to_string()));
    flag("disk", args.disk.map_or("none".into(), |d| d.to_string()));
    if let Some(c) = &args.cmdline {
        flag("cmdline", c.clone());
    }
    match args.guest {
        Guest::Probe => {
            let (probe, _) = crate::cli::boot::probe_path(args.probe.clone())?;
            flag("probe", work.add(&probe, "probe.elf", false)?);
        }
        Guest::Linux => {
            let spec = crate::cli::boot::guest_spec(args, PathBuf::new())?;
            let l = spec.linux.context("a Linux guest without its boot files")?;
            flag("kernel", work.add(&l.vmlinux, "kernel", false)?);
            flag("initrd", work.add(&l.initramfs, "initrd", false)?);
        }
    }
    if let Some(d) = &args.disk_image {
        let name = format!(
            "disk.{}",
            d.extension().and_then(|e| e.to_str()).unwrap_or("img")
        );
        flag("disk-image", work.add(d, &name, !args.disk_readonly)?);
    }
    if args.disk_readonly {
        v.push("--disk-readonly".into());
    }
    if args.direct_io {
        v.push("--direct-io".into());
    }
    Ok(v)
}

/// `boot --host emulated`: boots the emulated host, runs the same `boot` in it, prints its
/// output and ends as it ended.
pub fn boot(args: &Args) -> anyhow::Result<()> {
    let mut work = Work::new()?;
    let inner = HostCommand::boot(inner_args(args, &mut work)?)?;
    let codes = run(&work, &[inner], &mut |_, line| println!("{line}"))?;
    work.finish()?;
    match codes.first().copied().flatten() {
        Some(0) => Ok(()),
        Some(1) => Err(Failed(
            "the command failed in the emulated host (its output is above)".into(),
        )
        .into()),
        Some(n) => {
            bail!("the command ended with exit code {n} in the emulated host (its output is above)")
        }
        None => bail!("the emulated host ended before the command did"),
    }
}

/// CPUs of the emulated host (MTTCG: a host thread each). With one CPU and a tickless
/// kernel the host sometimes stopped for good in the middle of a command (docs/linux-boot.md,
/// "Hangs"): once with QEMU busy and the inner vmbench's own deadline never firing, once with
/// QEMU idle.
const HOST_CPUS: u32 = 2;

/// The emulated host's kernel command line. `nohz=off highres=off`: a periodic tick, which
/// QEMU's local APIC raises again every period whether or not the last one was taken, instead
/// of one-shot timers that are gone if one interrupt is (docs/linux-boot.md, "Hangs").
const HOST_CMDLINE: &str = "console=ttyS0 panic=-1 quiet nohz=off highres=off";

/// The kernel parameter that marks the emulated host (appended to [`HOST_CMDLINE`]).
const HOST_MARK: &str = "vmbench.host=emulated";

/// Whether this vmbench runs inside the emulated host: its kernel was started with
/// [`HOST_MARK`], or its CPU (`cpu_model`, from /proc/cpuinfo) is QEMU's TCG
/// model (`-cpu max` under TCG calls itself "QEMU TCG CPU"), where nothing runs at the speed
/// it would on hardware.
pub fn inside(cpu_model: &str) -> bool {
    marked() || cpu_model.contains("QEMU TCG CPU")
}

/// Whether this kernel was started as the emulated host (its command line has [`HOST_MARK`]).
pub fn marked() -> bool {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline.split_whitespace().any(|w| w == HOST_MARK)
}

/// How long the emulated host may take from QEMU's start to its first command: about half a
/// minute here (QEMU-TCG boots the kernel, loads KVM, mounts the share); ten times that on a
/// slow or loaded machine before it counts as hung.
const HOST_BOOT: Duration = Duration::from_secs(300);

/// What one command may take beyond its guest's own limits (ready, then run), which the
/// vmbench inside enforces: vmbench starting, checking its inputs and tearing the VM down,
/// all under TCG.
const COMMAND_MARGIN: Duration = Duration::from_secs(120);

/// From the last command's end to QEMU's exit (`poweroff -f`).
const HOST_POWEROFF: Duration = Duration::from_secs(60);

/// Console lines kept to explain a host that failed.
const TAIL: usize = 30;

/// Boots the emulated host once (building the test-host image first if needed) with `work`
/// shared, and runs each of `commands` in turn. `output` sees each output line with the index of its command; the
/// host's own boot goes to stderr as progress. Returns each command's exit code (`None`: the
/// host ended before it did).
pub fn run(
    work: &Work,
    commands: &[HostCommand],
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let vmbench = std::env::current_exe().context("cannot find the running vmbench binary")?;
    run_with(&vmbench, work, commands, output)
}

/// [`run`] with the vmbench binary to put in the host (tests pass the built `vmbench`).
///
/// A host that does not boot within [`HOST_BOOT`] or a command that overruns its budget is
/// stopped, and the error says which and how the console ended.
pub fn run_with(
    vmbench: &Path,
    work: &Work,
    commands: &[HostCommand],
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let budgets = Budgets {
        boot: HOST_BOOT,
        commands: commands.iter().map(|c| c.budget).collect(),
        poweroff: HOST_POWEROFF,
    };
    let host = images::test_host::build(
        &images::test_host::Options {
            linux: images::linux::Options::default(),
            vmbench: vmbench.to_path_buf(),
            qemu: commands.iter().any(|c| c.qemu),
        },
        &mut |p| eprintln!("{p}"),
    )
    .context("cannot build the test-host image")?;
    let args: String = commands
        .iter()
        .map(|c| c.args.join("\n") + "\n\n")
        .collect();
    std::fs::write(work.path().join("args"), args)
        .context("cannot write the emulated host's arguments")?;
    run_host(&host, work.path(), commands, &budgets, output)
}

/// The emulated host stopped making progress and was stopped: the phase it was in overran
/// its budget. Its commands' exit codes so far are lost with it; what they printed was
/// passed on as it came.
#[derive(Debug, thiserror::Error)]
#[error("the emulated host was stopped after {:.0} s: it hung {phase}. Its console ended with: {console}; QEMU's errors: {qemu_errors}", after.as_secs_f64())]
pub struct Hung {
    pub after: Duration,
    /// `booting (...)`, `running command N of M (...)`, `between commands or powering off`.
    pub phase: String,
    pub console: String,
    pub qemu_errors: String,
}

/// How long each phase of the emulated host may last before it counts as hung.
struct Budgets {
    /// From QEMU's start to the first command.
    boot: Duration,
    /// Each command, from its start to its exit status.
    commands: Vec<Duration>,
    /// From one command's end to the next one's start or QEMU's exit.
    poweroff: Duration,
}

/// The last `TAIL` lines of what came.
#[derive(Default)]
struct Tail(std::collections::VecDeque<String>);

impl Tail {
    fn push(&mut self, line: String) {
        if self.0.len() == TAIL {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    fn joined(&self) -> String {
        if self.0.is_empty() {
            return "(nothing)".into();
        }
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

/// Runs QEMU-TCG on the test host with `work` shared; streams the console (the host's boot
/// to stderr as progress, each command's output to `output`) and returns the exit codes.
fn run_host(
    host: &images::test_host::TestHost,
    work: &Path,
    commands: &[HostCommand],
    budgets: &Budgets,
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let qemu = PathBuf::from("qemu-system-x86_64");
    let mut c = Command::new(&qemu);
    c.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        &HOST_CPUS.to_string(),
    ])
    .args(["-m", &HOST_MEM_MIB.to_string()])
    .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
    .args(["-no-reboot", "-nodefaults"]);
    if let Some(b) = crate::engine::qemu::find_qboot(&qemu) {
        c.arg("-bios").arg(b);
    }
    c.arg("-virtfs").arg(format!(
        "local,path={},mount_tag=work,security_model=none,id=work",
        work.display()
    ));
    c.arg("-kernel")
        .arg(&host.kernel)
        .arg("-initrd")
        .arg(&host.initramfs)
        .arg("-append")
        .arg(format!("{HOST_CMDLINE} {HOST_MARK}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("booting the emulated host (QEMU-TCG -cpu max; about half a minute)");
    let child = c
        .die_with_parent()
        .spawn()
        .context("cannot start qemu-system-x86_64 (install qemu-system-x86)")?;
    supervise(child, commands, budgets, output)
}

/// Follows the emulated host's console (the host's boot to stderr as progress, each
/// command's output to `output`) and returns the exit codes. The host is killed when the
/// phase it is in (boot, command N, power-off) overruns its budget.
fn supervise(
    mut child: std::process::Child,
    commands: &[HostCommand],
    budgets: &Budgets,
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let begin = Instant::now();
    // Both of QEMU's outputs are drained by their own threads: an undrained pipe would
    // stall QEMU once it filled, and the deadlines below need a reader that can wait.
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().context("QEMU's console")?;
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err = child.stderr.take().context("QEMU's standard error")?;
    // Read without joining: a child of the host's that kept the pipe would hold the join.
    let errors = std::sync::Arc::new(std::sync::Mutex::new(Tail::default()));
    let tail_of_errors = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            tail_of_errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line);
        }
    });

    let mut codes = vec![None; commands.len()];
    let mut current: Option<usize> = None;
    let mut tail = Tail::default();
    // The phase QEMU is in, and when it must have ended.
    let mut phase = String::from("booting (until its first command)");
    let mut deadline = begin + budgets.boot;
    let mut overran = None;
    loop {
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                overran = Some(phase.clone());
                break;
            }
        };
        let line = line.trim_end_matches('\r').to_string();
        let mut words = line.split_whitespace().skip(2);
        if line.starts_with(MARK_RUN) {
            let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            current = n.checked_sub(1).filter(|&i| i < commands.len());
            let budget = current.map_or(COMMAND_MARGIN, |i| budgets.commands[i]);
            phase = format!(
                "running command {n} of {} ({} s allowed: `{}`)",
                commands.len(),
                budget.as_secs(),
                current.map_or(String::new(), |i| commands[i].args.join(" "))
            );
            deadline = Instant::now() + budget;
            eprintln!(
                "[{:.1} s] emulated host: command {n} of {}",
                begin.elapsed().as_secs_f64(),
                commands.len()
            );
        } else if line.starts_with(MARK_EXIT) {
            let n: Option<usize> = words.next().and_then(|w| w.parse().ok());
            let rc: Option<i32> = words.next().and_then(|w| w.parse().ok());
            if let Some(slot) = n
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| codes.get_mut(i))
            {
                *slot = rc;
            }
            current = None;
            // The next command starts at once, or the host powers off.
            phase = "between commands or powering off".into();
            deadline = Instant::now() + budgets.poweroff;
        } else if let Some(i) = current {
            output(i, &line);
            tail.push(line);
        } else {
            if line.starts_with("vmbench-host:") {
                eprintln!("[{:.1} s] {line}", begin.elapsed().as_secs_f64());
            }
            tail.push(line);
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    let qemu_errors = errors.lock().unwrap_or_else(|e| e.into_inner()).joined();
    if let Some(phase) = overran {
        // Every command done and only the power-off late: nothing is lost.
        if codes.iter().all(Option::is_some) {
            return Ok(codes);
        }
        return Err(Hung {
            after: begin.elapsed(),
            phase,
            console: tail.joined(),
            qemu_errors,
        }
        .into());
    }
    if codes.iter().all(Option::is_none) {
        bail!(
            "the emulated host ended ({status}) without running vmbench; its console ended with: {}; QEMU's errors: {qemu_errors}",
            tail.joined()
        );
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn a_command_gets_its_guests_limits_and_a_margin() {
        let budget = |s: &str| HostCommand::boot(words(s)).map(|c| c.budget);
        let linux = budget("boot --guest linux --timeout 240 --run-timeout 60").unwrap();
        assert_eq!(linux, Duration::from_secs(240 + 60) + COMMAND_MARGIN);
        let defaults = budget("boot --guest linux").unwrap();
        assert_eq!(defaults, Duration::from_secs(180 + 120) + COMMAND_MARGIN);
        let e = budget("bench scenarios/net.toml").unwrap_err();
        assert!(e.to_string().contains("boot command"), "{e}");
        let e = HostCommand::with_budget(vec!["a\nb".into()], Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("line break"), "{e}");
    }

    /// A stand-in host (a shell printing the init's marks) under small budgets.
    fn host(script: &str, commands: usize, each: Duration) -> anyhow::Result<Vec<Option<i32>>> {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let budgets = Budgets {
            boot: Duration::from_secs(2),
            commands: vec![each; commands],
            poweroff: Duration::from_secs(2),
        };
        let cmds = vec![HostCommand::with_budget(words("boot"), each).unwrap(); commands];
        supervise(child, &cmds, &budgets, &mut |_, _| {})
    }

    #[test]
    fn every_phase_of_a_hung_host_is_stopped_and_named() {
        let boot = host("echo booting; exec sleep 60", 1, Duration::from_secs(2)).unwrap_err();
        assert!(boot.downcast_ref::<Hung>().is_some(), "{boot}");
        assert!(boot.to_string().contains("hung booting"), "{boot}");
        assert!(boot.to_string().contains("booting"), "{boot}");

        let second = host(
            &format!("echo '{MARK_RUN} 1 vmbench boot'; echo '{MARK_EXIT} 1 0'; echo '{MARK_RUN} 2 vmbench boot'; echo stuck; exec sleep 60"),
            2,
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(second.contains("running command 2 of 2"), "{second}");
        assert!(second.contains("stuck"), "{second}");

        let begin = Instant::now();
        let late_poweroff = host(
            &format!("echo '{MARK_RUN} 1 vmbench boot'; echo '{MARK_EXIT} 1 3'; exec sleep 60"),
            1,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(late_poweroff, vec![Some(3)]);
        assert!(begin.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn a_host_that_ends_reports_each_commands_status() {
        let codes = host(
            &format!("echo '{MARK_RUN} 1 vmbench boot'; echo out; echo '{MARK_EXIT} 1 0'; echo '{MARK_RUN} 2 vmbench boot'; echo 'QEMU warning' >&2"),
            2,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(codes, vec![Some(0), None]);
    }
}
