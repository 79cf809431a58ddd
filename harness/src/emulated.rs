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
use std::time::Instant;

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
    let inner = inner_args(args, &mut work)?;
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

/// Boots the emulated host once (building the test-host image first if needed) with `work`
/// shared, and runs each of `commands` (vmbench's arguments, paths as seen from inside:
/// `/work/...`) in turn. `output` sees each output line with the index of its command; the
/// host's own boot goes to stderr as progress. Returns each command's exit code (`None`: the
/// host ended before it did).
pub fn run(
    work: &Work,
    commands: &[Vec<String>],
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let vmbench = std::env::current_exe().context("cannot find the running vmbench binary")?;
    run_with(&vmbench, work, commands, output)
}

/// [`run`] with the vmbench binary to put in the host (tests pass the built `vmbench`).
pub fn run_with(
    vmbench: &Path,
    work: &Work,
    commands: &[Vec<String>],
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let host = images::test_host::build(
        &images::test_host::Options {
            linux: images::linux::Options::default(),
            vmbench: vmbench.to_path_buf(),
        },
        &mut |p| eprintln!("{p}"),
    )
    .context("cannot build the test-host image")?;
    let mut args = String::new();
    for c in commands {
        if c.iter().any(|a| a.is_empty() || a.contains('\n')) {
            bail!("an argument of {c:?} is empty or has a line break; the emulated host cannot pass it");
        }
        args += &(c.join("\n") + "\n\n");
    }
    std::fs::write(work.path().join("args"), args)
        .context("cannot write the emulated host's arguments")?;
    run_host(&host, work.path(), commands.len(), output)
}

/// Runs QEMU-TCG on the test host with `work` shared; streams the console (the host's boot
/// to stderr as progress, each command's output to `output`) and returns the exit codes.
fn run_host(
    host: &images::test_host::TestHost,
    work: &Path,
    commands: usize,
    output: &mut dyn FnMut(usize, &str),
) -> anyhow::Result<Vec<Option<i32>>> {
    let qemu = PathBuf::from("qemu-system-x86_64");
    let mut c = Command::new(&qemu);
    c.args(["-accel", "tcg", "-cpu", "max", "-smp", "1"])
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
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let begin = Instant::now();
    eprintln!("booting the emulated host (QEMU-TCG -cpu max; about half a minute)");
    let mut child = c
        .die_with_parent()
        .spawn()
        .context("cannot start qemu-system-x86_64 (install qemu-system-x86)")?;
    let out = child.stdout.take().context("QEMU's console")?;
    let mut codes = vec![None; commands];
    let mut current: Option<usize> = None;
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r').to_string();
        let mut words = line.split_whitespace().skip(2);
        if line.starts_with(MARK_RUN) {
            let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            current = n.checked_sub(1);
            eprintln!(
                "[{:.1} s] emulated host: command {n} of {commands}",
                begin.elapsed().as_secs_f64()
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
        } else if let Some(i) = current {
            output(i, &line);
        } else if line.starts_with("vmbench-host:") {
            eprintln!("[{:.1} s] {line}", begin.elapsed().as_secs_f64());
        } else {
            tail.push(line);
            if tail.len() > 30 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    if codes.iter().all(Option::is_none) {
        bail!(
            "the emulated host ended ({status}) without running vmbench; its console ended with: {}",
            tail.join(" | ")
        );
    }
    Ok(codes)
}
