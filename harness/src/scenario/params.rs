//! The parameters a case is made of (guest, engine, VM shape, devices, back-ends, workload),
//! where each one lives in a scenario file, which values it takes, when it applies, and the
//! rules that make a combination impossible. The probe's workload syntax is in docs/probe.md.

use std::fmt;

use serde::{Deserialize, Serialize};
pub use vmm::kinds::{DiskFormat, DiskKind, Kind as DeviceKind, NetBackendKind, NicKind};

/// Defines a string-valued choice: serde and clap names, `ALL`, `as_str`, `from_name`,
/// `Display`. (The device kinds are defined the same way in vmm::kinds.)
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] #[value(name = $s)] $var),+
        }

        impl $name {
            /// Every value, as written in scenario files.
            pub const ALL: &'static [&'static str] = &[$($s),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $s),+
                }
            }

            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($s => Some(Self::$var),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

choice!(
    /// Which guest boots.
    Guest {
        /// vmbench's own CPL3 guest (images/probe).
        Probe = "probe",
        /// Debian's kernel with the vmbench agent in its initramfs.
        Linux = "linux",
    }
);
choice!(
    /// Which VMM runs the guest.
    EngineKind {
        Vmbench = "vmbench",
        /// Debian's qemu-system-x86_64 with the equivalent devices.
        Qemu = "qemu",
    }
);
choice!(
    /// The probe driver's register access pattern.
    Profile {
        /// The register traffic of Linux's drivers per operation.
        Linux = "linux",
        /// One doorbell/tail write per batch of descriptors.
        Batched = "batched",
        /// virtio only: EVENT_IDX notifications as `linux`, completions polled with the
        /// device's interrupts off (the VMM's data path without the guest's interrupts).
        Poll = "poll",
    }
);
choice!(
    /// The order of block requests.
    Pattern {
        Seq = "seq",
        Rand = "rand",
    }
);
choice!(
    /// Which way a TCP workload moves bytes.
    Direction {
        /// Guest to host.
        Tx = "tx",
        /// Host to guest.
        Rx = "rx",
    }
);
choice!(
    /// The workload the guest runs, without its parameters.
    WorkloadKind {
        /// Boot, report ready, enumerate PCI and exit: boot-time measurements.
        Hello = "hello",
        /// The host's exit costs (PIO, MMIO, ioeventfd) and an interrupt's round trip (a
        /// self-IPI), as the probe measures them.
        Calibrate = "calibrate",
        /// A stream of frames from the guest to the peer.
        NetTx = "net-tx",
        /// A stream of frames from the peer to the guest.
        NetRx = "net-rx",
        /// UDP request-response round trips.
        NetRr = "net-rr",
        BlkRead = "blk-read",
        BlkWrite = "blk-write",
        /// ICMP echo requests to the peer, 0.2 s apart (the Linux agent's busybox `ping`).
        Ping = "ping",
        /// One TCP connection to (tx) or from (rx) the TAP's host side, as fast as it goes
        /// (the Linux agent; needs `net_backend = "tap"`).
        TcpStream = "tcp-stream",
        /// The image's iperf3 client against the `iperf3 -s` on the TAP's host side (the
        /// Linux agent; needs `net_backend = "tap"`; whole seconds).
        Iperf3 = "iperf3",
    }
);

impl WorkloadKind {
    pub fn needs_nic(self) -> bool {
        matches!(
            self,
            Self::NetTx | Self::NetRx | Self::NetRr | Self::Ping | Self::TcpStream | Self::Iperf3
        )
    }

    /// Speaks TCP to the host side of a TAP (the in-process peer speaks only UDP).
    pub fn needs_tcp(self) -> bool {
        matches!(self, Self::TcpStream | Self::Iperf3)
    }

    pub fn needs_disk(self) -> bool {
        matches!(self, Self::BlkRead | Self::BlkWrite)
    }

    /// Runs for a fixed measurement window after a warm-up (and so takes `warmup_ms` and
    /// `duration_ms`); `hello` and `calibrate` run to completion instead, and `ping` sends
    /// one request per 0.2 s of the window.
    pub fn is_windowed(self) -> bool {
        matches!(self, Self::NetTx | Self::NetRx | Self::NetRr)
            || self.needs_disk()
            || self.needs_tcp()
    }

    /// The frame-level UDP workloads (`frame_size` applies to them).
    pub fn is_frames(self) -> bool {
        matches!(self, Self::NetTx | Self::NetRx | Self::NetRr)
    }

    /// Whether `guest` runs this workload (the probe's are in docs/probe.md, the Linux
    /// agent's in [`images::linux::AGENT_WORKLOADS`]).
    pub fn runs_on(self, guest: Guest) -> bool {
        match guest {
            Guest::Probe => !matches!(self, Self::Ping | Self::TcpStream | Self::Iperf3),
            Guest::Linux => images::linux::AGENT_WORKLOADS.contains(&self.as_str()),
        }
    }
}

/// The workloads a benchmark case can give `guest`, as `"a", "b" or "c"`.
pub(crate) fn workloads_of(guest: Guest) -> String {
    let names: Vec<&str> = WorkloadKind::ALL
        .iter()
        .copied()
        .filter(|n| WorkloadKind::from_name(n).is_some_and(|k| k.runs_on(guest)))
        .collect();
    either(&names)
}

/// Guest memory below which the Debian kernel and the agent's initramfs do not fit.
pub const LINUX_MIN_MEM_MIB: u32 = 128;
/// The interval between the Linux agent's echo requests (busybox `ping -i 0.2`).
pub const PING_INTERVAL_MS: u64 = 200;
/// The longest window the Linux agent gives iperf3 (`-t`), in seconds.
pub const IPERF3_MAX_DURATION_SECS: u64 = 3600;
/// The longest warm-up the Linux agent gives iperf3 (`-O`), in seconds.
pub const IPERF3_MAX_WARMUP_SECS: u64 = 600;

/// Parameters of a block workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIo {
    pub pattern: Pattern,
    /// Bytes per request, a multiple of 512.
    pub block_size: u32,
    /// Requests in flight.
    pub queue_depth: u32,
}

/// A workload with its resolved parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Workload {
    Hello,
    Calibrate {
        iterations: u32,
    },
    NetTx {
        frame_size: u32,
        batch: u32,
    },
    NetRx {
        frame_size: u32,
    },
    NetRr {
        frame_size: u32,
    },
    BlkRead(BlockIo),
    BlkWrite(BlockIo),
    Ping,
    /// `io_size` bytes per write or read call.
    TcpStream {
        direction: Direction,
        io_size: u32,
    },
    /// `streams` parallel connections (iperf3's `-P`).
    Iperf3 {
        direction: Direction,
        streams: u32,
    },
}

impl Workload {
    pub fn kind(&self) -> WorkloadKind {
        match self {
            Workload::Hello => WorkloadKind::Hello,
            Workload::Calibrate { .. } => WorkloadKind::Calibrate,
            Workload::NetTx { .. } => WorkloadKind::NetTx,
            Workload::NetRx { .. } => WorkloadKind::NetRx,
            Workload::NetRr { .. } => WorkloadKind::NetRr,
            Workload::BlkRead(_) => WorkloadKind::BlkRead,
            Workload::BlkWrite(_) => WorkloadKind::BlkWrite,
            Workload::Ping => WorkloadKind::Ping,
            Workload::TcpStream { .. } => WorkloadKind::TcpStream,
            Workload::Iperf3 { .. } => WorkloadKind::Iperf3,
        }
    }
}

/// Everything that defines one case, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseParams {
    pub guest: Guest,
    pub engine: EngineKind,
    pub vcpus: u32,
    pub mem_mib: u32,
    /// `"none"` in files and results when there is no NIC.
    #[serde(with = "or_none")]
    pub nic: Option<NicKind>,
    pub net_backend: NetBackendKind,
    /// `"none"` in files and results when there is no disk.
    #[serde(with = "or_none")]
    pub disk: Option<DiskKind>,
    pub disk_format: DiskFormat,
    pub disk_size_mib: u32,
    pub profile: Profile,
    pub workload: Workload,
}

/// An optional device written as its kind's name, or `"none"` for no device (schema v1).
pub mod or_none {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use vmm::kinds::Kind;

    /// What a scenario or the `boot` command line writes for no device.
    pub const NONE: &str = "none";

    pub fn name<K: Kind>(v: Option<K>) -> &'static str {
        v.map_or(NONE, K::as_str)
    }

    /// `"none"` gives `Some(None)`; an unknown name gives `None`.
    pub fn parse<K: Kind>(s: &str) -> Option<Option<K>> {
        match s {
            NONE => Some(None),
            _ => K::from_name(s).map(Some),
        }
    }

    pub fn serialize<K: Kind, S: Serializer>(v: &Option<K>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*v))
    }

    pub fn deserialize<'de, K: Kind, D: Deserializer<'de>>(d: D) -> Result<Option<K>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| {
            let mut names = K::NAMES.to_vec();
            names.push(NONE);
            D::Error::custom(format!("unknown value `{s}`, expected one of {names:?}"))
        })
    }
}

/// The measurement window and seed handed to windowed workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub warmup_ms: u64,
    pub duration_ms: u64,
    pub seed: u64,
}

impl CaseParams {
    /// The guest's workload command line: the probe's (at most [`PROBE_EXEC_MAX`] bytes),
    /// e.g. `net-rr size=64 profile=linux warmup_ms=500 duration_ms=2000`, or the Linux
    /// agent's (docs/agent.md), e.g. `net-rr size=64 nic=virtio warmup_ms=500 duration_ms=2000`.
    pub(crate) fn probe_exec(&self, w: Window) -> String {
        match self.guest {
            Guest::Probe => self.probe_command(w),
            Guest::Linux => self.agent_command(w),
        }
    }

    /// The Linux agent's workload words. It names the device kind (`nic=`, `disk=`), so the
    /// agent refuses to run on any other; `ping` sends one request per 0.2 s of the window.
    fn agent_command(&self, w: Window) -> String {
        let kind = self.workload.kind();
        let mut s = kind.as_str().to_string();
        match self.workload {
            // Refused for a Linux guest (`impossible`); the agent would say so too.
            Workload::Hello | Workload::Calibrate { .. } => {}
            Workload::NetTx { frame_size, .. }
            | Workload::NetRx { frame_size }
            | Workload::NetRr { frame_size } => s += &format!(" size={frame_size}"),
            Workload::BlkRead(b) | Workload::BlkWrite(b) => {
                s += &format!(
                    " pattern={} bs={} qd={} seed={}",
                    b.pattern, b.block_size, b.queue_depth, w.seed
                )
            }
            Workload::Ping => s += &format!(" count={}", (w.duration_ms / PING_INTERVAL_MS).max(1)),
            Workload::TcpStream { direction, io_size } => {
                s += &format!(" direction={direction} size={io_size}")
            }
            Workload::Iperf3 { direction, streams } => {
                s += &format!(" direction={direction} streams={streams}")
            }
        }
        if let (true, Some(nic)) = (kind.needs_nic(), self.nic) {
            s += &format!(" nic={nic}");
        }
        if let (true, Some(disk)) = (kind.needs_disk(), self.disk) {
            s += &format!(" disk={disk}");
        }
        if kind.is_windowed() {
            s += &format!(" warmup_ms={} duration_ms={}", w.warmup_ms, w.duration_ms);
        }
        s
    }

    fn probe_command(&self, w: Window) -> String {
        let kind = self.workload.kind();
        let mut s = kind.as_str().to_string();
        match self.workload {
            // `ping`, `tcp-stream` and `iperf3` are refused for the probe (`impossible`).
            Workload::Hello
            | Workload::Ping
            | Workload::TcpStream { .. }
            | Workload::Iperf3 { .. } => {}
            Workload::Calibrate { iterations } => s += &format!(" n={iterations}"),
            Workload::NetTx { frame_size, batch } => {
                s += &format!(" size={frame_size} batch={batch}")
            }
            Workload::NetRx { frame_size } | Workload::NetRr { frame_size } => {
                s += &format!(" size={frame_size}")
            }
            Workload::BlkRead(b) | Workload::BlkWrite(b) => {
                s += &format!(
                    " pattern={} bs={} qd={}",
                    b.pattern, b.block_size, b.queue_depth
                );
                if b.pattern == Pattern::Rand {
                    s += &format!(" seed={}", w.seed);
                }
            }
        }
        if kind.is_windowed() {
            s += &format!(
                " profile={} warmup_ms={} duration_ms={}",
                self.profile, w.warmup_ms, w.duration_ms
            );
        }
        s
    }
}

/// The longest probe command line (defined by the probe's boot information).
pub const PROBE_EXEC_MAX: usize = probe_abi::EXEC_MAX;

/// A parameter's value as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PVal {
    Str(String),
    Int(i64),
}

impl fmt::Display for PVal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PVal::Str(s) => f.write_str(s),
            PVal::Int(i) => write!(f, "{i}"),
        }
    }
}

impl PVal {
    /// As in TOML source: strings quoted.
    pub fn quoted(&self) -> String {
        match self {
            PVal::Str(s) => format!("\"{s}\""),
            PVal::Int(i) => i.to_string(),
        }
    }
}

pub(crate) enum Kind {
    Choice(&'static [&'static str]),
    /// A device kind's names, or `"none"` for no device.
    ChoiceOrNone(&'static [&'static str]),
    Int {
        min: i64,
        max: i64,
        multiple_of: i64,
    },
}

impl Kind {
    /// The values a choice takes, as written in files (empty for integers).
    pub fn choices(&self) -> Vec<&'static str> {
        match *self {
            Kind::Choice(names) => names.to_vec(),
            Kind::ChoiceOrNone(names) => {
                let mut v = names.to_vec();
                v.push(or_none::NONE);
                v
            }
            Kind::Int { .. } => Vec::new(),
        }
    }
}

/// Where a parameter is set outside the matrix: a top-level key or a key of a section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Top,
    Vm,
    Devices,
    Workload,
}

impl Section {
    pub fn table(self) -> Option<&'static str> {
        match self {
            Section::Top => None,
            Section::Vm => Some("vm"),
            Section::Devices => Some("devices"),
            Section::Workload => Some("workload"),
        }
    }
}

pub(crate) struct ParamSpec {
    /// The name in the matrix, in exclusions and in case ids.
    pub name: &'static str,
    pub section: Section,
    /// The key inside its section (differs from `name` only for the workload's `name`).
    pub key: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
}

pub(crate) enum DefaultValue {
    Str(&'static str),
    Int(i64),
}

impl DefaultValue {
    pub fn value(&self) -> PVal {
        match *self {
            DefaultValue::Str(s) => PVal::Str(s.to_string()),
            DefaultValue::Int(i) => PVal::Int(i),
        }
    }
}

/// Identifies a parameter; indexes [`PARAMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum P {
    Guest,
    Engine,
    Vcpus,
    MemMib,
    Nic,
    NetBackend,
    Disk,
    DiskFormat,
    DiskSizeMib,
    Profile,
    Workload,
    Iterations,
    FrameSize,
    Batch,
    Pattern,
    BlockSize,
    QueueDepth,
    Direction,
    IoSize,
    Streams,
}

pub(crate) const PARAMS: &[(P, ParamSpec)] = {
    use DefaultValue as D;
    use Section as S;
    const fn p(
        name: &'static str,
        section: Section,
        kind: Kind,
        default: DefaultValue,
    ) -> ParamSpec {
        ParamSpec {
            name,
            section,
            key: name,
            kind,
            default,
        }
    }
    /// One of `names`, `default` where not set.
    const fn choice(
        name: &'static str,
        section: Section,
        names: &'static [&'static str],
        default: &'static str,
    ) -> ParamSpec {
        p(name, section, Kind::Choice(names), D::Str(default))
    }
    /// One of `names` or "none", the default.
    const fn choice_or_none(
        name: &'static str,
        section: Section,
        names: &'static [&'static str],
    ) -> ParamSpec {
        let none = D::Str(or_none::NONE);
        p(name, section, Kind::ChoiceOrNone(names), none)
    }
    /// An integer in `range`, `default` where not set.
    const fn int(
        name: &'static str,
        section: Section,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> ParamSpec {
        let kind = Kind::Int {
            min: *range.start(),
            max: *range.end(),
            multiple_of: 1,
        };
        p(name, section, kind, D::Int(default))
    }
    // The VMM's limits, defined once there.
    const MAX_VCPUS: i64 = vmm::boot::MAX_VCPUS as i64;
    const MAX_MEM_MIB: i64 = vmm::boot::MAX_MEM_MIB as i64;
    // The probe's limits, defined once in its ABI.
    const BATCH_MAX: i64 = probe_abi::limits::NET_TX_BATCH_MAX as i64;
    const QUEUE_DEPTH_MAX: i64 = probe_abi::limits::BLK_QUEUE_DEPTH_MAX as i64;
    &[
        (P::Guest, choice("guest", S::Top, Guest::ALL, "probe")),
        (
            P::Engine,
            choice("engine", S::Top, EngineKind::ALL, "vmbench"),
        ),
        (P::Vcpus, int("vcpus", S::Vm, 1..=MAX_VCPUS, 1)),
        (P::MemMib, int("mem_mib", S::Vm, 32..=MAX_MEM_MIB, 256)),
        (P::Nic, choice_or_none("nic", S::Devices, NicKind::NAMES)),
        (
            P::NetBackend,
            choice("net_backend", S::Devices, NetBackendKind::NAMES, "peer"),
        ),
        (P::Disk, choice_or_none("disk", S::Devices, DiskKind::NAMES)),
        (
            P::DiskFormat,
            choice("disk_format", S::Devices, DiskFormat::NAMES, "raw"),
        ),
        (
            P::DiskSizeMib,
            int("disk_size_mib", S::Devices, 1..=1 << 20, 256),
        ),
        (
            P::Profile,
            choice("profile", S::Workload, Profile::ALL, "linux"),
        ),
        (
            P::Workload,
            ParamSpec {
                name: "workload",
                section: S::Workload,
                key: "name",
                kind: Kind::Choice(WorkloadKind::ALL),
                default: D::Str("hello"),
            },
        ),
        (
            P::Iterations,
            int("iterations", S::Workload, 1..=100_000, 1000),
        ),
        // Ethernet frames without the FCS: 60 bytes minimum, 1514 for a 1500-byte MTU.
        (P::FrameSize, int("frame_size", S::Workload, 60..=1514, 64)),
        (P::Batch, int("batch", S::Workload, 1..=BATCH_MAX, 1)),
        (
            P::Pattern,
            choice("pattern", S::Workload, Pattern::ALL, "seq"),
        ),
        (
            P::BlockSize,
            p(
                "block_size",
                S::Workload,
                Kind::Int {
                    min: 512,
                    max: 4 << 20,
                    multiple_of: 512,
                },
                D::Int(4096),
            ),
        ),
        (
            P::QueueDepth,
            int("queue_depth", S::Workload, 1..=QUEUE_DEPTH_MAX, 1),
        ),
        (
            P::Direction,
            choice("direction", S::Workload, Direction::ALL, "tx"),
        ),
        // The Linux agent's limits (images/agent/src/tcp.rs).
        (P::IoSize, int("io_size", S::Workload, 1..=1 << 20, 65536)),
        (P::Streams, int("streams", S::Workload, 1..=16, 1)),
    ]
};

impl P {
    pub fn spec(self) -> &'static ParamSpec {
        &PARAMS[self as usize].1
    }

    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn by_name(name: &str) -> Option<P> {
        PARAMS.iter().find(|(_, s)| s.name == name).map(|&(p, _)| p)
    }

    pub fn in_section(section: Section, key: &str) -> Option<P> {
        PARAMS
            .iter()
            .find(|(_, s)| s.section == section && s.key == key)
            .map(|&(p, _)| p)
    }

    /// Why this parameter means nothing for `c`, if it does not.
    pub fn not_applicable(self, c: &CaseParams) -> Option<String> {
        let kind = c.workload.kind();
        let needs = |kinds: &str| format!("it applies only to the {kinds} workloads, not `{kind}`");
        match self {
            P::NetBackend if c.nic.is_none() => {
                Some("it needs a NIC, but nic is \"none\"".to_string())
            }
            P::DiskFormat | P::DiskSizeMib if c.disk.is_none() => {
                Some("it needs a disk, but disk is \"none\"".to_string())
            }
            P::Profile if !kind.is_windowed() => Some(needs("net-* and blk-*")),
            P::Profile if c.guest != Guest::Probe => {
                Some("it sets the probe's drivers, and the guest is not the probe".to_string())
            }
            P::Iterations if kind != WorkloadKind::Calibrate => Some(needs("calibrate")),
            P::FrameSize if !kind.is_frames() => Some(needs("net-tx, net-rx and net-rr")),
            P::Batch if kind != WorkloadKind::NetTx => Some(needs("net-tx")),
            P::Batch if c.guest == Guest::Linux => Some(
                "the Linux agent sends one datagram per system call; batch is the probe's"
                    .to_string(),
            ),
            P::Pattern | P::BlockSize | P::QueueDepth if !kind.needs_disk() => {
                Some(needs("blk-read and blk-write"))
            }
            P::Direction if !kind.needs_tcp() => Some(needs("tcp-stream and iperf3")),
            P::IoSize if kind != WorkloadKind::TcpStream => Some(needs("tcp-stream")),
            P::Streams if kind != WorkloadKind::Iperf3 => Some(needs("iperf3")),
            _ => None,
        }
    }
}

/// `"a", "b" or "c"`.
fn either(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match q.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// A combination that cannot run, blamed on the parameter whose value should change.
pub(crate) struct Impossible {
    pub blame: P,
    pub message: String,
    pub hint: String,
}

/// The rules that make a combination of otherwise valid values impossible.
pub(crate) fn impossible(c: &CaseParams) -> Vec<Impossible> {
    let kind = c.workload.kind();
    let mut out = Vec::new();
    let exclude = "or drop such cases with an [[exclude]] entry";
    if kind.needs_nic() && c.nic.is_none() {
        out.push(Impossible {
            blame: P::Workload,
            message: format!("workload `{kind}` needs a NIC, but nic is \"none\""),
            hint: format!(
                "set nic = {} in [devices] or the matrix, {exclude}",
                either(NicKind::NAMES)
            ),
        });
    }
    if kind.needs_disk() && c.disk.is_none() {
        out.push(Impossible {
            blame: P::Workload,
            message: format!("workload `{kind}` needs a disk, but disk is \"none\""),
            hint: format!(
                "set disk = {} in [devices] or the matrix, {exclude}",
                either(DiskKind::NAMES)
            ),
        });
    }
    if !kind.runs_on(c.guest) {
        out.push(Impossible {
            blame: P::Workload,
            message: format!("guest \"{}\" does not run workload `{kind}`", c.guest),
            hint: format!("it runs {}, {exclude}", workloads_of(c.guest)),
        });
    }
    if kind.needs_tcp() && kind.runs_on(c.guest) && c.nic.is_some() {
        match c.net_backend {
            NetBackendKind::Tap => {}
            NetBackendKind::Peer => out.push(Impossible {
                blame: P::Workload,
                message: format!(
                    "workload `{kind}` needs TCP on the host side, but net_backend is \"peer\", which speaks only UDP"
                ),
                hint: format!(
                    "set net_backend = \"tap\" (vmbench's TCP sink/source and iperf3 -s in its own namespace) in [devices] or the case's matrix entry, {exclude}"
                ),
            }),
        }
    }
    if c.guest == Guest::Linux && c.mem_mib < LINUX_MIN_MEM_MIB {
        out.push(Impossible {
            blame: P::MemMib,
            message: format!(
                "mem_mib = {} is too small for guest \"linux\" (the kernel and its initramfs)",
                c.mem_mib
            ),
            hint: format!("use mem_mib = {LINUX_MIN_MEM_MIB} or more"),
        });
    }
    match c.engine {
        EngineKind::Vmbench => {}
        // A Linux guest brings up every vCPU QEMU gives it (`-smp`) and reports them.
        EngineKind::Qemu if c.guest == Guest::Linux => {}
        // QEMU starts the probe through its PVH entry, which brings up the boot vCPU only:
        // the guest would report one vCPU whatever the case said.
        EngineKind::Qemu if c.vcpus > 1 => out.push(Impossible {
            blame: P::Vcpus,
            message: format!(
                "engine \"qemu\" runs the probe on one vCPU, so vcpus = {} cannot run there",
                c.vcpus
            ),
            hint: format!("use vcpus = 1 with engine = \"qemu\", {exclude}"),
        }),
        EngineKind::Qemu => {}
    }
    if c.guest == Guest::Probe && c.profile == Profile::Poll && kind.is_windowed() {
        let emulated = if kind.needs_disk() {
            c.disk.filter(|d| *d == DiskKind::Ide).map(|d| d.as_str())
        } else {
            c.nic.filter(|n| *n == NicKind::E1000).map(|n| n.as_str())
        };
        if let Some(device) = emulated {
            out.push(Impossible {
                blame: P::Profile,
                message: format!(
                    "profile \"poll\" is virtio's (EVENT_IDX, no interrupts), and this case drives the {device}"
                ),
                hint: format!(
                    "use profile = \"linux\" or \"batched\" for the {device}, {exclude}"
                ),
            });
        }
    }
    if let Workload::BlkRead(b) | Workload::BlkWrite(b) = c.workload {
        // The probe drives the controller itself; Linux queues what the device cannot take.
        let limit = c
            .disk
            .filter(|_| c.guest == Guest::Probe)
            .and_then(|d| Some((d, d.commands_in_flight()?)));
        if let Some((disk, max)) = limit.filter(|&(_, max)| b.queue_depth > max) {
            let commands = match max {
                1 => "one command".to_string(),
                n => format!("{n} commands"),
            };
            out.push(Impossible {
                blame: P::QueueDepth,
                message: format!(
                    "{} has {commands} in flight, so queue_depth {} cannot run on disk \"{disk}\"",
                    disk.as_str().to_uppercase(),
                    b.queue_depth
                ),
                hint: format!(
                    "add [[exclude]] disk = \"{disk}\", queue_depth = {} (or use queue_depth = {max})",
                    b.queue_depth
                ),
            });
        }
        if c.disk.is_some() && u64::from(b.block_size) > u64::from(c.disk_size_mib) << 20 {
            out.push(Impossible {
                blame: P::BlockSize,
                message: format!(
                    "block_size {} is larger than the {} MiB disk",
                    b.block_size, c.disk_size_mib
                ),
                hint: "raise [devices] disk_size_mib or lower block_size".to_string(),
            });
        }
    }
    out
}
