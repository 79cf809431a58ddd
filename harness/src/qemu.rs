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
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use probe_abi::{layout, ports};
use vmm::machine::{DISK_SLOT, NIC_SLOT};
use vmm::process::DieWithParent;

use crate::record::Record;

/// Console and stderr lines kept for reports.
const TAIL: usize = 50;
/// The longest exec text the probe takes from the PVH command line.
const EXEC_MAX: usize = 127;
/// Environment variables that override where QEMU and qboot are looked for.
pub const QEMU_ENV: &str = "VMBENCH_QEMU";
pub const QBOOT_ENV: &str = "VMBENCH_QBOOT";
const QEMU_BIN: &str = "qemu-system-x86_64";
const INSTALL_HINT: &str = "apt-get install -t bookworm-backports qemu-system-x86";
/// The first bytes of a qcow2 image (QEMU docs/interop/qcow2.txt, "magic").
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// The MAC address QEMU gives a NIC by default; locally administered.
pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// Every netdev end point is on the loopback interface: a run never sends a frame off the host.
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

/// The disk controller the probe drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    /// virtio-blk-pci, modern interface only (1af4:1042), at [`DISK_SLOT`].
    Virtio,
    /// The primary master on the `pc` machine's built-in PIIX3 IDE function (00:01.1).
    Ide,
}

/// The image format, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// The format the first bytes of an image announce: qcow2 by its magic, anything else is
    /// raw. The file's name plays no part; QEMU is then told the format, never left to probe
    /// it.
    pub fn from_header(head: &[u8]) -> DiskFormat {
        if head.starts_with(&QCOW2_MAGIC) {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        }
    }

    /// Reads the header of the image at `path`.
    pub fn detect(path: &Path) -> Result<DiskFormat, Error> {
        let unreadable = |source| Error::DiskUnreadable {
            path: path.to_path_buf(),
            source,
        };
        let mut head = Vec::with_capacity(QCOW2_MAGIC.len());
        File::open(path)
            .map_err(unreadable)?
            .take(QCOW2_MAGIC.len() as u64)
            .read_to_end(&mut head)
            .map_err(unreadable)?;
        Ok(DiskFormat::from_header(&head))
    }

    /// QEMU's name for it (`-drive format=`).
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuDisk {
    pub kind: DiskKind,
    pub path: PathBuf,
    pub format: DiskFormat,
    /// QEMU opens the image read-only and the device reports it (virtio-blk: VIRTIO_BLK_F_RO).
    pub read_only: bool,
}

impl QemuDisk {
    /// A writable disk on the image at `path`, its format read from the image's header.
    pub fn open(kind: DiskKind, path: impl Into<PathBuf>) -> Result<QemuDisk, Error> {
        let path = path.into();
        let format = DiskFormat::detect(&path)?;
        Ok(QemuDisk {
            kind,
            path,
            format,
            read_only: false,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicKind {
    /// virtio-net-pci, modern interface only (1af4:1041).
    Virtio,
    /// Intel 82540EM (8086:100e).
    E1000,
}

/// Where the NIC's frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuNetdev {
    /// A UDP link on the loopback interface, one Ethernet frame per datagram (QEMU's `dgram`
    /// netdev): QEMU binds `local_port` and sends every frame the guest transmits to
    /// `remote_port`; datagrams arriving at `local_port` are delivered to the guest. The
    /// caller owns the socket at `remote_port`.
    Dgram { local_port: u16, remote_port: u16 },
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
    pub probe: PathBuf,
    /// The probe's workload (`hello`, `calibrate n=100`, ...), passed as the command line.
    pub exec: String,
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
            Error::Spawn { source, .. } | Error::DiskUnreadable { source, .. } => Some(source),
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
        "1",
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
    if !cfg.exec.is_empty() {
        a.extend(["-append".into(), cfg.exec.clone().into()]);
    }
    a
}

/// `-drive` and `-device` for a disk. The format is always given: QEMU then never probes a
/// raw image's contents. Option ROMs are left out (`romfile=`): vmbench's devices have none
/// and the probe does not run them.
pub fn disk_args(d: &QemuDisk) -> Vec<OsString> {
    let mut drive = OsString::from(format!(
        "if=none,id={DISK_ID},format={},file=",
        d.format.name()
    ));
    drive.push(option_value(d.path.as_os_str()));
    if d.read_only {
        drive.push(",readonly=on");
    }
    let device = match d.kind {
        DiskKind::Virtio => format!(
            "virtio-blk-pci,drive={DISK_ID},addr={DISK_SLOT:02x}.0,disable-legacy=on,disable-modern=off,romfile="
        ),
        DiskKind::Ide => format!("ide-hd,drive={DISK_ID},bus=ide.0,unit=0"),
    };
    vec!["-drive".into(), drive, "-device".into(), device.into()]
}

/// `-netdev` and `-device` for a NIC; its netdev only ever names loopback addresses.
pub fn nic_args(n: &QemuNic) -> Vec<OsString> {
    let netdev = match n.netdev {
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
    if cfg.exec.len() > EXEC_MAX {
        return Err(Error::ExecTooLong(cfg.exec.len()));
    }
    if cfg.mem_mib << 20 < layout::MIN_MEM {
        return Err(Error::MemoryTooSmall(cfg.mem_mib));
    }
    if !cfg.probe.is_file() {
        return Err(Error::ProbeMissing {
            path: cfg.probe.clone(),
        });
    }
    if let Some(d) = &cfg.disk {
        // Caught here rather than as a QEMU start-up failure, which `Auto` would retry on TCG.
        if d.kind == DiskKind::Ide && d.read_only {
            return Err(Error::ReadOnlyIde {
                path: d.path.clone(),
            });
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
    let mut child = Command::new(qemu)
        .die_with_parent()
        .args(command_line(cfg, accel, bios))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Spawn {
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
    let timed_out = |records: &[Record], console: &VecDeque<String>| Error::TimedOut {
        after: cfg.timeout,
        last: last_words(records, console),
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out(&records, &console));
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Line::Out(text, at)) => match Record::parse(&text) {
                Some(r) => {
                    if r.kind == "ready" {
                        ready.get_or_insert(at - start);
                    }
                    on_record(&r);
                    records.push(r);
                }
                None if text.is_empty() => {}
                None => {
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
    let stderr = errs.join().unwrap_or_default();
    let exit_status = status.and_then(|s| s.code());
    if records.is_empty() {
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
mod tests {
    use super::*;

    fn cfg() -> QemuConfig {
        QemuConfig {
            exec: "calibrate n=100".into(),
            mem_mib: 128,
            ..QemuConfig::new("/img/probe.elf".into())
        }
    }

    fn value_of<'a>(args: &'a [OsString], flag: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1)?.to_str()
    }

    #[test]
    fn command_line_boots_the_probe_with_its_exec_and_debug_exit() {
        let a = command_line(&cfg(), Accel::Kvm, Some(Path::new("/q/qboot.rom")));

        assert_eq!(value_of(&a, "-kernel"), Some("/img/probe.elf"));
        assert_eq!(value_of(&a, "-append"), Some("calibrate n=100"));
        assert_eq!(value_of(&a, "-m"), Some("128"));
        assert_eq!(value_of(&a, "-bios"), Some("/q/qboot.rom"));
        assert_eq!(value_of(&a, "-serial"), Some("stdio"));
        assert_eq!(
            value_of(&a, "-device"),
            Some("isa-debug-exit,iobase=0xf4,iosize=0x04")
        );
        for flag in ["-nodefaults", "-no-reboot", "-no-user-config"] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing");
        }
    }

    #[test]
    fn accelerator_picks_machine_and_cpu() {
        let kvm = command_line(&cfg(), Accel::Kvm, None);
        let tcg = command_line(&cfg(), Accel::Tcg, None);

        assert_eq!(value_of(&kvm, "-machine"), Some("pc,accel=kvm"));
        assert_eq!(value_of(&kvm, "-cpu"), Some("host,-arch-capabilities"));
        assert_eq!(value_of(&tcg, "-machine"), Some("pc,accel=tcg"));
        assert_eq!(value_of(&tcg, "-cpu"), Some("max"));
        assert!(!tcg.iter().any(|x| x == "-bios"));
        let quiet = QemuConfig {
            exec: String::new(),
            ..cfg()
        };
        assert!(!command_line(&quiet, Accel::Tcg, None)
            .iter()
            .any(|x| x == "-append"));
    }

    #[test]
    fn guest_status_decodes_debug_exit() {
        assert_eq!(guest_status(Some(1), true), Some(0));
        assert_eq!(guest_status(Some(3), true), Some(1));
        assert_eq!(guest_status(Some(5), false), Some(2));
    }

    #[test]
    fn guest_status_is_none_without_debug_exit() {
        // QEMU's own error exit, a reset with -no-reboot, a signal.
        assert_eq!(guest_status(Some(1), false), None);
        assert_eq!(guest_status(Some(0), true), None);
        assert_eq!(guest_status(Some(2), true), None);
        assert_eq!(guest_status(None, true), None);
    }

    /// Every value of a repeated flag, in order.
    fn values_of<'a>(args: &'a [OsString], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .filter_map(|w| w[1].to_str())
            .collect()
    }

    fn disk(kind: DiskKind, format: DiskFormat) -> QemuDisk {
        QemuDisk {
            kind,
            path: "/d/disk.img".into(),
            format,
            read_only: false,
        }
    }

    fn dgram() -> QemuNetdev {
        QemuNetdev::Dgram {
            local_port: 40001,
            remote_port: 40002,
        }
    }

    #[test]
    fn no_devices_by_default() {
        let a = command_line(&cfg(), Accel::Kvm, None);

        assert_eq!(
            values_of(&a, "-device").len(),
            1,
            "only isa-debug-exit: {a:?}"
        );
        for flag in ["-drive", "-netdev"] {
            assert!(!a.iter().any(|x| x == flag), "{flag} in {a:?}");
        }
    }

    #[test]
    fn virtio_disk_is_modern_only_at_the_disk_slot() {
        let a = disk_args(&disk(DiskKind::Virtio, DiskFormat::Raw));

        assert_eq!(
            values_of(&a, "-drive"),
            ["if=none,id=disk0,format=raw,file=/d/disk.img"]
        );
        assert_eq!(
            values_of(&a, "-device"),
            ["virtio-blk-pci,drive=disk0,addr=04.0,disable-legacy=on,disable-modern=off,romfile="]
        );
    }

    #[test]
    fn ide_disk_is_the_primary_master_of_the_builtin_piix() {
        let a = disk_args(&disk(DiskKind::Ide, DiskFormat::Qcow2));

        assert_eq!(
            values_of(&a, "-drive"),
            ["if=none,id=disk0,format=qcow2,file=/d/disk.img"]
        );
        assert_eq!(
            values_of(&a, "-device"),
            ["ide-hd,drive=disk0,bus=ide.0,unit=0"]
        );
    }

    #[test]
    fn read_only_disk_opens_the_drive_read_only() {
        let d = QemuDisk {
            read_only: true,
            ..disk(DiskKind::Virtio, DiskFormat::Qcow2)
        };

        let a = disk_args(&d);

        assert_eq!(
            values_of(&a, "-drive"),
            ["if=none,id=disk0,format=qcow2,file=/d/disk.img,readonly=on"]
        );
    }

    #[test]
    fn commas_in_the_image_path_are_escaped() {
        let d = QemuDisk {
            path: "/d/a,b/x,readonly=on".into(),
            ..disk(DiskKind::Virtio, DiskFormat::Raw)
        };

        let a = disk_args(&d);

        assert_eq!(
            values_of(&a, "-drive"),
            ["if=none,id=disk0,format=raw,file=/d/a,,b/x,,readonly=on"]
        );
    }

    #[test]
    fn virtio_nic_is_modern_only_at_the_nic_slot_on_a_loopback_dgram_link() {
        let a = nic_args(&QemuNic::new(NicKind::Virtio, dgram()));

        assert_eq!(
            values_of(&a, "-netdev"),
            [
                "dgram,id=net0,local.type=inet,local.host=127.0.0.1,local.port=40001,\
              remote.type=inet,remote.host=127.0.0.1,remote.port=40002"
            ]
        );
        assert_eq!(
            values_of(&a, "-device"),
            [
                "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,addr=03.0,\
              disable-legacy=on,disable-modern=off,romfile="
            ]
        );
    }

    #[test]
    fn e1000_nic_takes_its_mac_at_the_nic_slot() {
        let nic = QemuNic {
            mac: [0x02, 0, 0, 0xab, 0xcd, 0xef],
            ..QemuNic::new(NicKind::E1000, dgram())
        };

        let a = nic_args(&nic);

        assert_eq!(
            values_of(&a, "-device"),
            ["e1000,netdev=net0,mac=02:00:00:ab:cd:ef,addr=03.0,romfile="]
        );
        assert_eq!(values_of(&a, "-netdev").len(), 1);
    }

    #[test]
    fn devices_come_before_the_kernel() {
        let c = QemuConfig {
            disk: Some(disk(DiskKind::Virtio, DiskFormat::Raw)),
            nic: Some(QemuNic::new(NicKind::Virtio, dgram())),
            ..cfg()
        };

        let a = command_line(&c, Accel::Kvm, None);

        let devices = values_of(&a, "-device");
        assert_eq!(devices.len(), 3, "{devices:?}");
        assert!(devices[1].starts_with("virtio-blk-pci,drive=disk0,"));
        assert!(devices[2].starts_with("virtio-net-pci,netdev=net0,"));
        assert_eq!(values_of(&a, "-drive").len(), 1);
        assert_eq!(values_of(&a, "-netdev").len(), 1);
        assert_eq!(a[a.len() - 4], "-kernel");
    }

    #[test]
    fn format_comes_from_the_magic_not_the_name() {
        assert_eq!(
            DiskFormat::from_header(b"QFI\xfb\0\0\0\x03"),
            DiskFormat::Qcow2
        );
        assert_eq!(DiskFormat::from_header(b"QFI\xfa"), DiskFormat::Raw);
        assert_eq!(DiskFormat::from_header(b"QF"), DiskFormat::Raw);
        assert_eq!(DiskFormat::from_header(&[0; 512]), DiskFormat::Raw);
        assert_eq!(DiskFormat::from_header(&[]), DiskFormat::Raw);
    }

    #[test]
    fn open_detects_the_format_of_the_file() {
        let dir = std::env::temp_dir().join(format!("vmbench-qemu-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Names that lie about the contents.
        let qcow = dir.join("looks-raw.img");
        let raw = dir.join("looks.qcow2");
        std::fs::write(&qcow, b"QFI\xfb\0\0\0\x03rest of a header").unwrap();
        std::fs::write(&raw, [0u8; 4096]).unwrap();

        let q = QemuDisk::open(DiskKind::Virtio, &qcow);
        let r = QemuDisk::open(DiskKind::Ide, &raw);
        let missing = QemuDisk::open(DiskKind::Virtio, dir.join("absent"));
        std::fs::remove_dir_all(&dir).unwrap();

        let q = q.unwrap();
        assert_eq!((q.format, q.read_only), (DiskFormat::Qcow2, false));
        assert_eq!(r.unwrap().format, DiskFormat::Raw);
        assert!(matches!(missing, Err(Error::DiskUnreadable { .. })));
    }

    #[test]
    fn read_only_ide_is_refused_before_starting_qemu() {
        let c = QemuConfig {
            disk: Some(QemuDisk {
                read_only: true,
                ..disk(DiskKind::Ide, DiskFormat::Raw)
            }),
            probe: std::env::current_exe().unwrap(),
            ..cfg()
        };

        let e = run(&c, |_| {}).unwrap_err();

        assert!(matches!(e, Error::ReadOnlyIde { .. }), "{e}");
        assert!(e.to_string().contains("virtio"));
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = Error::NotInstalled {
            looked: "not on PATH".into(),
        };

        assert!(e.to_string().contains(INSTALL_HINT));
        assert!(Error::ExecTooLong(200).to_string().contains("127"));
    }
}
