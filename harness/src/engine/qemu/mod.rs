//! QEMU as a second engine: boots the probe with `qemu-system-x86_64 -kernel probe.elf` (PVH
//! entry, images/probe/src/pvh.rs) on the `pc` machine, reads its records from the serial port
//! on QEMU's stdout and decodes its isa-debug-exit status, so the probe's figures on vmbench's
//! device models can be set against QEMU's. The devices under test are QEMU's own (modern-only
//! virtio-blk-pci and virtio-net-pci, e1000, the PIIX3 IDE of the `pc` machine), placed at the
//! PCI slots vmbench's VMM uses, so the probe finds them where it finds ours.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use probe_abi::{layout, ports, EXEC_MAX};
use vmm::kinds::{DiskFormat, DiskKind, NicKind};
use vmm::machine::{DISK_SLOT, NIC_SLOT};
use vmm::process::{DieWithParent, PassFd};

use crate::record::Record;

mod engine;
pub mod link;
pub mod peer;

pub use engine::Qemu;

/// Console and stderr lines kept for reports.
const TAIL: usize = 50;
/// How long a Linux guest may take to power off after its agent's `done`.
const LINUX_POWER_OFF: Duration = Duration::from_secs(10);
/// Environment variables that override where QEMU and qboot are looked for.
pub const QEMU_ENV: &str = "VMBENCH_QEMU";
pub const QBOOT_ENV: &str = "VMBENCH_QBOOT";
const QEMU_BIN: &str = "qemu-system-x86_64";
const INSTALL_HINT: &str = "apt-get install -t bookworm-backports qemu-system-x86";
/// The MAC address QEMU gives a NIC by default; locally administered.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Every `dgram` end point is on the loopback interface, and a TAP is in a namespace vmbench
/// created: a run never sends a frame anywhere else.
pub const LOOPBACK: &str = "127.0.0.1";
/// QEMU ids that tie `-drive`/`-netdev` back ends to their `-device` front ends.
const DISK_ID: &str = "disk0";
const NETDEV_ID: &str = "net0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM if it can run the guest, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuDisk {
    pub kind: DiskKind,
    pub path: PathBuf,
    pub format: DiskFormat,
    /// `format` was stated, not guessed from the contents ([`crate::engine::DiskSpec`]).
    pub format_stated: bool,
    /// QEMU opens the image read-only and the device reports it (virtio-blk: VIRTIO_BLK_F_RO).
    pub read_only: bool,
    /// Bypass the host page cache (`cache.direct=on`).
    pub direct_io: bool,
}

impl QemuDisk {
    /// A writable disk on the image at `path`, its format read from the image's header.
    pub fn open(kind: DiskKind, path: impl Into<PathBuf>) -> Result<QemuDisk, Error> {
        let path = path.into();
        let format = DiskFormat::detect(&path).map_err(|source| Error::DiskUnreadable {
            path: path.clone(),
            source,
        })?;
        Ok(QemuDisk {
            kind,
            path,
            format,
            format_stated: false,
            read_only: false,
            direct_io: false,
        })
    }
}

/// Where the NIC's frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuNetdev {
    /// A UDP link on the loopback interface, one Ethernet frame per datagram (QEMU's `dgram`
    /// netdev): QEMU binds `local_port` and sends every frame the guest transmits to
    /// `remote_port`; datagrams arriving at `local_port` are delivered to the guest. The
    /// caller owns the socket at `remote_port`.
    Dgram { local_port: u16, remote_port: u16 },
    /// A TAP the caller opened (with IFF_VNET_HDR, in a namespace it created), which QEMU's
    /// process inherits under the number `fd`; [`run`] passes it, a hand-built command line
    /// must pass it too ([`vmm::process::PassFd`]). QEMU reads the vnet header setting from
    /// the TAP (TUNGETIFF) and sets the header length and offloads its NIC needs.
    Tap { fd: RawFd },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuNic {
    pub kind: NicKind,
    pub netdev: QemuNetdev,
    pub mac: [u8; 6],
}

impl QemuNic {
    /// A NIC with [`DEFAULT_MAC`].
    pub fn new(kind: NicKind, netdev: QemuNetdev) -> Self {
        QemuNic {
            kind,
            netdev,
            mac: DEFAULT_MAC,
        }
    }
}

#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The kernel QEMU enters through PVH: the probe ELF, or a Linux guest's `vmlinux`.
    pub probe: PathBuf,
    /// The command line: the probe's workload (`hello`, `calibrate n=100`, ...), or a Linux
    /// guest's whole kernel command line.
    pub exec: String,
    /// `Some` for a Linux guest: its initramfs (`-initrd`).
    pub initrd: Option<PathBuf>,
    /// `-smp`: the probe runs on the boot vCPU only, a Linux guest brings up all.
    pub vcpus: usize,
    pub mem_mib: u64,
    pub accel: Accel,
    /// For the whole run, from starting QEMU to its exit.
    pub timeout: Duration,
    pub disk: Option<QemuDisk>,
    pub nic: Option<QemuNic>,
}

impl QemuConfig {
    /// `hello` in 256 MiB, KVM if it works, 60 s, no disk and no NIC.
    pub fn new(probe: PathBuf) -> Self {
        QemuConfig {
            probe,
            exec: "hello".into(),
            initrd: None,
            vcpus: 1,
            mem_mib: 256,
            accel: Accel::Auto,
            timeout: Duration::from_secs(60),
            disk: None,
            nic: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct QemuOutcome {
    pub records: Vec<Record>,
    /// Serial lines that are not records, the last [`TAIL`].
    pub console: Vec<String>,
    /// QEMU's own messages (stderr), the last [`TAIL`].
    pub stderr: Vec<String>,
    /// QEMU's exit code; `None` if a signal ended it.
    pub exit_status: Option<i32>,
    /// What the probe wrote to isa-debug-exit, if it did.
    pub guest_status: Option<u32>,
    /// The accelerator that ran the guest (never `Auto`).
    pub accel: Accel,
    /// Why KVM was not used, when `Auto` fell back to TCG.
    pub kvm_failure: Option<String>,
    /// From starting QEMU to the `ready` record, and to QEMU's exit.
    pub ready: Option<Duration>,
    pub wall: Duration,
    /// A Linux guest's boot marks on the console, from starting QEMU: its first line (the
    /// kernel's banner) and `Run /init as init process`.
    pub kernel: Option<Duration>,
    pub init: Option<Duration>,
}

impl QemuOutcome {
    pub fn records_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| r.kind == kind)
    }
}

#[derive(Debug)]
pub enum Error {
    NotInstalled {
        looked: String,
    },
    ProbeMissing {
        path: PathBuf,
    },
    LinuxImageMissing {
        path: PathBuf,
    },
    ExecTooLong(usize),
    MemoryTooSmall(u64),
    DiskUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// QEMU's ide-hd refuses a read-only block node.
    ReadOnlyIde {
        path: PathBuf,
    },
    /// The TAP back-end (namespace, TAP, host services) could not be set up.
    Tap(vmm::backend::net::tap::Error),
    /// The loopback peer bridge could not start.
    Peer(std::io::Error),
    Spawn {
        qemu: PathBuf,
        source: std::io::Error,
    },
    /// QEMU ended before the probe sent a record: it could not start or run the guest.
    NoGuest {
        accel: Accel,
        status: String,
        stderr: String,
    },
    TimedOut {
        after: Duration,
        last: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotInstalled { looked } => write!(
                f,
                "{QEMU_BIN} not found ({looked}): install it with `{INSTALL_HINT}` or set {QEMU_ENV}"
            ),
            Error::ProbeMissing { path } => write!(
                f,
                "probe ELF {} not found: build it with `vmbench images build probe`",
                path.display()
            ),
            Error::LinuxImageMissing { path } => write!(
                f,
                "linux image file {} not found: build it with `vmbench images build linux`",
                path.display()
            ),
            Error::ExecTooLong(n) => {
                write!(f, "exec text is {n} bytes; the probe takes at most {EXEC_MAX}")
            }
            Error::MemoryTooSmall(mib) => write!(
                f,
                "{mib} MiB of guest memory is too small: the probe needs at least {} MiB",
                layout::MIN_MEM >> 20
            ),
            Error::DiskUnreadable { path, .. } => {
                write!(f, "cannot read disk image {}", path.display())
            }
            Error::ReadOnlyIde { path } => write!(
                f,
                "QEMU's IDE disk cannot be read-only ({}): use a virtio disk or a writable copy",
                path.display()
            ),
            Error::Tap(_) => write!(f, "cannot set up the TAP for QEMU's NIC"),
            Error::Peer(_) => write!(f, "cannot start the loopback peer for QEMU's NIC"),
            Error::Spawn { qemu, .. } => write!(f, "cannot start {}", qemu.display()),
            Error::NoGuest {
                accel,
                status,
                stderr,
            } => {
                write!(f, "qemu ({}) {status} before the probe said anything", accel.name())?;
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                if *accel == Accel::Kvm {
                    write!(f, "; try accel tcg")?;
                }
                Ok(())
            }
            Error::TimedOut { after, last } => write!(
                f,
                "qemu did not finish within {} s ({last}): raise the timeout or look at the workload",
                after.as_secs_f64()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. }
            | Error::DiskUnreadable { source, .. }
            | Error::Peer(source) => Some(source),
            Error::Tap(source) => Some(source),
            _ => None,
        }
    }
}

/// `$VMBENCH_QEMU`, else `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(QEMU_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::NotInstalled {
                looked: format!("{QEMU_ENV}={}", p.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(QEMU_BIN))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::NotInstalled {
            looked: "not on PATH".into(),
        })
}

/// qboot (`$VMBENCH_QBOOT`, else QEMU's data directory): it hands over to the PVH entry in
/// well under a second where SeaBIOS takes seconds of emulated real-mode code (KVM-PVM).
pub fn find_qboot(qemu: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(QBOOT_ENV) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let beside = qemu
        .parent()
        .and_then(Path::parent)
        .map(|prefix| prefix.join("share/qemu/qboot.rom"));
    beside
        .into_iter()
        .chain([PathBuf::from("/usr/share/qemu/qboot.rom")])
        .find(|p| p.is_file())
}

/// Whether this user can open /dev/kvm; QEMU may still fail to run the guest on it.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// QEMU's arguments for one run. `Auto` becomes QEMU's own `kvm:tcg` fallback, which only
/// covers KVM failing to initialize; [`run`] does better and never passes it.
pub fn command_line(cfg: &QemuConfig, accel: Accel, bios: Option<&Path>) -> Vec<OsString> {
    let (accel, cpu) = match accel {
        // `host` alone makes QEMU set IA32_ARCH_CAPABILITIES, which KVM-PVM refuses (QEMU
        // then aborts); the probe does not need it anywhere.
        Accel::Kvm => ("kvm", "host,-arch-capabilities"),
        Accel::Tcg => ("tcg", "max"),
        Accel::Auto => ("kvm:tcg", "max"),
    };
    let mut a: Vec<OsString> = [
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-machine",
        &format!("pc,accel={accel}"),
        "-cpu",
        cpu,
        "-smp",
        &cfg.vcpus.to_string(),
        "-m",
        &cfg.mem_mib.to_string(),
        "-device",
        &format!("isa-debug-exit,iobase={:#x},iosize=0x04", ports::DEBUG_EXIT),
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if let Some(b) = bios {
        a.extend(["-bios".into(), b.into()]);
    }
    if let Some(d) = &cfg.disk {
        a.extend(disk_args(d));
    }
    if let Some(n) = &cfg.nic {
        a.extend(nic_args(n));
    }
    a.extend(["-kernel".into(), cfg.probe.clone().into()]);
    if let Some(initrd) = &cfg.initrd {
        a.extend(["-initrd".into(), initrd.clone().into()]);
    }
    if !cfg.exec.is_empty() {
        a.extend(["-append".into(), cfg.exec.clone().into()]);
    }
    a
}

/// `-drive` and `-device` for a disk. A stated format is given, and so is a guessed qcow2; a
/// raw image whose format was guessed is left to QEMU's own probe, which then refuses guest
/// writes that would make its first sector look like another format, as vmbench's VMM does
/// for such an image: both engines take the same writes. Option ROMs are left out
/// (`romfile=`): vmbench's devices have none and the probe does not run them.
pub fn disk_args(d: &QemuDisk) -> Vec<OsString> {
    let mut drive = OsString::from(format!("if=none,id={DISK_ID},"));
    match (d.format, d.format_stated) {
        (DiskFormat::Raw, false) => {}
        (format @ (DiskFormat::Raw | DiskFormat::Qcow2), _) => {
            drive.push(format!("format={},", format.as_str()));
        }
    }
    drive.push("file=");
    drive.push(option_value(d.path.as_os_str()));
    if d.read_only {
        drive.push(",readonly=on");
    }
    if d.direct_io {
        drive.push(",cache.direct=on");
    }
    let device = match d.kind {
        DiskKind::Virtio => format!(
            "virtio-blk-pci,drive={DISK_ID},addr={DISK_SLOT:02x}.0,disable-legacy=on,disable-modern=off,romfile="
        ),
        DiskKind::Ide => format!("ide-hd,drive={DISK_ID},bus=ide.0,unit=0"),
    };
    vec!["-drive".into(), drive, "-device".into(), device.into()]
}

/// `-netdev` and `-device` for a NIC; its netdev only ever names loopback addresses or a TAP
/// the caller opened.
pub fn nic_args(n: &QemuNic) -> Vec<OsString> {
    let netdev = match n.netdev {
        // No `vnet_hdr=`: QEMU refuses it with `fd=` and reads it from the TAP instead.
        QemuNetdev::Tap { fd } => format!("tap,id={NETDEV_ID},fd={fd}"),
        QemuNetdev::Dgram {
            local_port,
            remote_port,
        } => format!(
            "dgram,id={NETDEV_ID},local.type=inet,local.host={LOOPBACK},local.port={local_port},\
             remote.type=inet,remote.host={LOOPBACK},remote.port={remote_port}"
        ),
    };
    let m = n.mac;
    let mac = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    let device = match n.kind {
        NicKind::Virtio => format!(
            "virtio-net-pci,netdev={NETDEV_ID},mac={mac},addr={NIC_SLOT:02x}.0,disable-legacy=on,disable-modern=off,romfile="
        ),
        NicKind::E1000 => {
            format!("e1000,netdev={NETDEV_ID},mac={mac},addr={NIC_SLOT:02x}.0,romfile=")
        }
    };
    vec![
        "-netdev".into(),
        netdev.into(),
        "-device".into(),
        device.into(),
    ]
}

/// A value inside QEMU's `key=value,...` option syntax: a comma is written twice.
fn option_value(v: &std::ffi::OsStr) -> OsString {
    let mut out = Vec::with_capacity(v.len());
    for &b in v.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// The guest's isa-debug-exit value from QEMU's exit code `(v << 1) | 1`. QEMU's own errors
/// also exit with 1, so 1 counts only if the guest ran (sent a record).
pub fn guest_status(exit_code: Option<i32>, guest_ran: bool) -> Option<u32> {
    match exit_code? {
        1 if !guest_ran => None,
        c if c > 0 && c & 1 == 1 => Some((c >> 1) as u32),
        _ => None,
    }
}

/// Boots the probe on QEMU and runs it to its end; `on_record` sees each record as it comes.
pub fn run(cfg: &QemuConfig, mut on_record: impl FnMut(&Record)) -> Result<QemuOutcome, Error> {
    match &cfg.initrd {
        None => {
            if cfg.exec.len() > EXEC_MAX {
                return Err(Error::ExecTooLong(cfg.exec.len()));
            }
            if !cfg.probe.is_file() {
                return Err(Error::ProbeMissing {
                    path: cfg.probe.clone(),
                });
            }
        }
        Some(initrd) => {
            if let Some(p) = [&cfg.probe, initrd].into_iter().find(|p| !p.is_file()) {
                return Err(Error::LinuxImageMissing { path: p.clone() });
            }
        }
    }
    if cfg.mem_mib << 20 < layout::MIN_MEM {
        return Err(Error::MemoryTooSmall(cfg.mem_mib));
    }
    if let Some(d) = &cfg.disk {
        // Caught here rather than as a QEMU start-up failure, which `Auto` would retry on TCG.
        match d.kind {
            DiskKind::Ide if d.read_only => {
                return Err(Error::ReadOnlyIde {
                    path: d.path.clone(),
                })
            }
            DiskKind::Ide | DiskKind::Virtio => {}
        }
        File::open(&d.path).map_err(|source| Error::DiskUnreadable {
            path: d.path.clone(),
            source,
        })?;
    }
    let qemu = find_qemu()?;
    let bios = find_qboot(&qemu);
    match cfg.accel {
        Accel::Kvm | Accel::Tcg => run_once(&qemu, bios.as_deref(), cfg, cfg.accel, &mut on_record),
        Accel::Auto if !kvm_usable() => {
            let mut o = run_once(&qemu, bios.as_deref(), cfg, Accel::Tcg, &mut on_record)?;
            o.kvm_failure = Some("/dev/kvm cannot be opened".into());
            Ok(o)
        }
        Accel::Auto => match run_once(&qemu, bios.as_deref(), cfg, Accel::Kvm, &mut on_record) {
            Err(Error::NoGuest { status, stderr, .. }) => {
                let mut o = run_once(&qemu, bios.as_deref(), cfg, Accel::Tcg, &mut on_record)?;
                o.kvm_failure = Some(format!("qemu {status} with kvm: {stderr}"));
                Ok(o)
            }
            other => other,
        },
    }
}

enum Line {
    Out(String, Instant),
    Eof,
}

/// Kills QEMU if the run ends early (a timeout, or a panic in `on_record`).
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run_once(
    qemu: &Path,
    bios: Option<&Path>,
    cfg: &QemuConfig,
    accel: Accel,
    on_record: &mut impl FnMut(&Record),
) -> Result<QemuOutcome, Error> {
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let mut command = Command::new(qemu);
    command
        .die_with_parent()
        .args(command_line(cfg, accel, bios))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(QemuNic {
        netdev: QemuNetdev::Tap { fd },
        ..
    }) = &cfg.nic
    {
        command.pass_fd(*fd);
    }
    let mut child = command.spawn().map_err(|e| Error::Spawn {
        qemu: qemu.to_path_buf(),
        source: e,
    })?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().map(BufReader::new);
    let stderr = child.stderr.take();
    let mut child = Reaper(child);
    thread::spawn(move || {
        if let Some(out) = stdout {
            for line in out.split(b'\n').map_while(Result::ok) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                if tx.send(Line::Out(text, Instant::now())).is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Line::Eof);
    });
    let errs = thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        tail(s.lines().map(str::to_string))
    });

    let mut records = Vec::new();
    let mut console = VecDeque::new();
    let mut ready = None;
    let linux = cfg.initrd.is_some();
    let (mut kernel, mut init) = (None, None);
    let timed_out = |records: &[Record], console: &VecDeque<String>| Error::TimedOut {
        after: cfg.timeout,
        last: last_words(records, console),
    };
    // When a Linux guest's agent said `done`, the run's outcome is known; a guest still busy
    // powering off (its NIC flooded by the peer's stream, under TCG) is stopped.
    let mut done = None;
    let mut stopped = false;
    loop {
        let now = Instant::now();
        let limit = done.map_or(deadline, |d: Instant| deadline.min(d + LINUX_POWER_OFF));
        if now >= limit && done.is_some() {
            let _ = child.0.kill();
            stopped = true;
            break;
        }
        if now >= limit {
            return Err(timed_out(&records, &console));
        }
        match rx.recv_timeout(limit - now) {
            Ok(Line::Out(text, at)) => match Record::parse(&text) {
                Some(r) => {
                    if r.kind == "ready" {
                        ready.get_or_insert(at - start);
                    }
                    if linux && r.kind == "done" {
                        done.get_or_insert(at);
                    }
                    on_record(&r);
                    records.push(r);
                }
                None if text.is_empty() => {}
                None => {
                    if linux {
                        kernel.get_or_insert(at - start);
                        if init.is_none() && text.contains(crate::session::LINUX_INIT_LINE) {
                            init = Some(at - start);
                        }
                    }
                    if console.len() == TAIL {
                        console.pop_front();
                    }
                    console.push_back(text);
                }
            },
            Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    // Stdout closed: QEMU is exiting.
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Ok(None) => return Err(timed_out(&records, &console)),
            Err(_) => break None,
        }
    };
    let wall = start.elapsed();
    let mut stderr = errs.join().unwrap_or_default();
    if stopped {
        stderr.push(format!(
            "vmbench stopped QEMU: the guest had not powered off {} s after its agent's done",
            LINUX_POWER_OFF.as_secs()
        ));
    }
    let exit_status = status.and_then(|s| s.code());
    // A Linux guest that said something on the console ran (a kernel panic comes before any
    // record): its console tail says why it ended.
    if records.is_empty() && (!linux || console.is_empty()) {
        let status = match (status, exit_status) {
            (_, Some(c)) => format!("exited with status {c}"),
            (Some(s), None) => format!("ended by {s}"),
            (None, None) => "ended".into(),
        };
        return Err(Error::NoGuest {
            accel,
            status,
            stderr: stderr.last().cloned().unwrap_or_default(),
        });
    }
    Ok(QemuOutcome {
        guest_status: guest_status(exit_status, true),
        records,
        console: console.into(),
        stderr,
        exit_status,
        accel,
        kvm_failure: None,
        ready,
        wall,
        kernel,
        init,
    })
}

fn tail(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut t = VecDeque::with_capacity(TAIL);
    for l in lines {
        if t.len() == TAIL {
            t.pop_front();
        }
        t.push_back(l);
    }
    t.into()
}

fn last_words(records: &[Record], console: &VecDeque<String>) -> String {
    match (records.last(), console.back()) {
        (Some(r), _) => format!("last record '{r}'"),
        (None, Some(c)) => format!("last console line '{c}'"),
        (None, None) => "no record or console output".into(),
    }
}

#[cfg(test)]
mod tests;
