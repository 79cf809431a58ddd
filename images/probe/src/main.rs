//! The probe: vmbench's minimal x86-64 guest. Started at CPL3 with IOPL=3 in 64-bit mode (by
//! vmbench's VMM directly, by its own PVH stub elsewhere), it never runs a privileged
//! instruction, so it runs natively even where a hypervisor emulates guest kernel code.
#![no_std]
#![no_main]

mod alloc;
mod args;
mod ata;
mod blk;
mod calibrate;
mod disk;
mod e1000;
mod hostile;
mod ide;
mod io;
mod irq;
mod mem;
mod net;
mod nic;
mod pci;
mod pvh;
mod report;
mod samples;
mod start_info;
mod tsc;
mod virtio;
mod window;

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

use probe_abi::{exit, flags, ports, BootInfo, BOOT_MAGIC};
use report::Record;

// Entry at CPL3: RDI = boot information (0 under the PVH stub), RSI = vCPU index (or, under
// the stub, the PVH start-info address). The first instruction marks the entry for the
// VMM's boot timeline.
global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    test rdi, rdi",
    "    jz 2f",
    "    movzx edx, word ptr [rdi + {mark}]",
    "    test edx, edx",
    "    jz 2f",
    "    out dx, al",
    "2:",
    "    and rsp, -16",
    "    call {main}",
    "3:  jmp 3b",
    mark = const core::mem::offset_of!(BootInfo, entry_mark_port),
    main = sym probe_main,
);

/// What every part of the probe needs to know.
pub struct Env {
    pub boot: BootInfo,
    pub vcpu: u32,
    /// TSC at the first Rust instruction of this vCPU.
    pub entry_tsc: u64,
    /// TSC ticks per microsecond (from the VMM, or calibrated against the PIT).
    pub tsc_khz: u32,
}

impl Env {
    pub fn ns(&self, ticks: u64) -> u64 {
        if self.tsc_khz == 0 {
            return 0;
        }
        ((u128::from(ticks) * 1_000_000) / u128::from(self.tsc_khz)) as u64
    }
}

static APS_READY: AtomicU32 = AtomicU32::new(0);

extern "C" fn probe_main(info: u64, arg: u64) -> ! {
    let entry_tsc = io::rdtsc();
    // SAFETY: a non-zero `info` is the boot information block the VMM placed at
    // layout::BOOT_INFO in identity-mapped RAM; it is read once, by value.
    let vmm_info =
        (info != 0).then(|| unsafe { core::ptr::read_volatile(info as *const BootInfo) });
    let (boot, vcpu) = match vmm_info {
        Some(b) if b.magic == BOOT_MAGIC => (b, arg as u32),
        // Started by the PVH stub: `arg` is the PVH start-info address.
        _ => (start_info::boot_info(arg), 0),
    };
    let mut env = Env {
        boot,
        vcpu,
        entry_tsc,
        tsc_khz: boot.tsc_khz,
    };
    if vcpu == 0 {
        alloc::init(env.boot.mem_size);
    }
    if env.tsc_khz == 0 && vcpu == 0 {
        env.tsc_khz = tsc::calibrate_with_pit();
    }
    if vcpu == 0 {
        io::set_tsc_khz(env.tsc_khz);
    }
    // `hang` stops before `ready`, to exercise the harness's ready timeout.
    if vcpu == 0 && env.boot.exec_str().split_ascii_whitespace().eq(["hang"]) {
        log!(&env, "hanging on purpose before ready");
        loop {
            io::pause();
        }
    }
    Record::new("ready")
        .kv("vcpu", vcpu)
        .kv("entry_tsc", entry_tsc)
        .kv("tsc", io::rdtsc())
        .send(&env);
    if vcpu != 0 {
        APS_READY.fetch_add(1, Ordering::Release);
        loop {
            io::pause();
        }
    }
    wait_for_aps(&env);
    let mut code = run(&env);
    if irq::missed_count() > 0 {
        Record::new("error")
            .text(format_args!(
                "{} virtio completion(s) waited more than {} ms for their MSI-X interrupt: the device or the VMM lost it",
                irq::missed_count(),
                virtio::MISSED_AFTER_MS
            ))
            .send(&env);
        code = exit::FAILED;
    }
    Record::new("done")
        .kv("status", if code == exit::OK { "ok" } else { "failed" })
        .send(&env);
    finish(code)
}

/// Waits (up to 2 s) for the other vCPUs to report in, so `info` can say how many did.
fn wait_for_aps(env: &Env) {
    let want = env.boot.vcpus.saturating_sub(1);
    let deadline = io::rdtsc() + u64::from(env.tsc_khz.max(1_000_000)) * 2_000;
    while APS_READY.load(Ordering::Acquire) < want && io::rdtsc() < deadline {
        io::pause();
    }
}

fn run(env: &Env) -> u32 {
    let exec = env.boot.exec_str();
    let mut words = exec.split_ascii_whitespace();
    let name = words.next().unwrap_or("hello");
    match name {
        "hello" => {
            hello(env);
            exit::OK
        }
        "calibrate" => calibrate::run(env, words),
        "blk-pattern" => disk::pattern(env, words),
        "blk-read" => disk::stream(env, false, words),
        "blk-write" => disk::stream(env, true, words),
        "ide-check" => disk::check(env, words),
        "net-tx" => net::tx(env, words),
        "net-rx" => net::rx(env, words),
        "net-rr" => net::rr(env, words),
        "hostile" => hostile::run(env, words),
        "crash" => crash(env),
        // `hang after-ready`: stops after `ready`, for the harness's run timeout.
        "hang" => {
            log!(env, "hanging on purpose after ready");
            loop {
                io::pause();
            }
        }
        other => {
            Record::new("error")
                .text(format_args!("unknown workload '{other}'; known: hello, calibrate, blk-pattern, blk-read, blk-write, ide-check, net-tx, net-rx, net-rr, hostile, crash, hang"))
                .send(env);
            exit::BAD_EXEC
        }
    }
}

// A UD2 with a name, so the probe can say where it is about to fault.
global_asm!(
    ".section .text, \"ax\"",
    ".global probe_crash_ud2",
    "probe_crash_ud2:",
    "    ud2",
);

extern "C" {
    fn probe_crash_ud2() -> !;
}

/// Faults on purpose: the VMM must report a crash at exactly this RIP.
fn crash(env: &Env) -> ! {
    let rip = probe_crash_ud2 as *const () as usize;
    Record::new("crashing")
        .kv("rip", format_args!("{rip:#x}"))
        .send(env);
    // SAFETY: deliberately raises #UD; its IDT gate is absent, so the VM triple-faults, which
    // is the point.
    unsafe { probe_crash_ud2() }
}

fn hello(env: &Env) {
    let engine = if env.boot.flags & flags::VMBENCH != 0 {
        "vmbench"
    } else {
        "other"
    };
    Record::new("info")
        .kv("engine", engine)
        .kv("mem", env.boot.mem_size)
        .kv("vcpus", env.boot.vcpus)
        .kv("vcpus_ready", APS_READY.load(Ordering::Acquire) + 1)
        .kv("tsc_khz", env.tsc_khz)
        .kv(
            "tsc_source",
            if env.boot.tsc_khz != 0 { "vmm" } else { "pit" },
        )
        .send(env);
    let mut count = 0;
    pci::scan(|f| {
        count += 1;
        Record::new("pci")
            .kv(
                "bdf",
                format_args!("{:02x}:{:02x}.{}", f.bus, f.dev, f.func),
            )
            .kv("id", format_args!("{:04x}:{:04x}", f.vendor, f.device))
            .kv("class", format_args!("{:06x}", f.class))
            .kv("rev", f.revision)
            .send(env);
    });
    Record::new("pci-done").kv("functions", count).send(env);
}

/// Ends the VM through the isa-debug-exit port; spins if nothing listens there.
fn finish(code: u32) -> ! {
    io::outl(ports::DEBUG_EXIT, code);
    loop {
        io::pause();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The boot information may not be known here; the serial path always works.
    let mut r = Record::new("error");
    r = r.text(format_args!("panic: {}", info.message()));
    if let Some(l) = info.location() {
        r = r.kv("at", format_args!("{}:{}", l.file(), l.line()));
    }
    r.send(&Env {
        boot: BootInfo::zeroed(),
        vcpu: 0,
        entry_tsc: 0,
        tsc_khz: 0,
    });
    finish(exit::FAILED)
}

/// The prebuilt `core` of the host target refers to the unwinder's personality routine even
/// though the probe aborts on panic and never unwinds; this satisfies the link.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
