//! The system calls PID 1 needs: mounts, module loading, power-off; and what the agent reads
//! about the machine from /proc and /sys.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::rec::Record;

/// The modules to load, in dependency order, one file name per line (written by the image
/// builder, `images/src/linux/mod.rs`).
pub const MODULE_ORDER: &str = "/lib/modules/vmbench/order";
pub const MODULE_DIR: &str = "/lib/modules/vmbench";

fn mount(src: &str, target: &str, fstype: &str) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).map_err(|_| format!("bad mount argument {s:?}"));
    let (s, t, f) = (c(src)?, c(target)?, c(fstype)?);
    // SAFETY: the three pointers are valid NUL-terminated strings that outlive the call; a
    // null data argument is allowed.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        // devtmpfs may already be mounted by the kernel (CONFIG_DEVTMPFS_MOUNT).
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!("cannot mount {fstype} on {target}: {e}"));
        }
    }
    Ok(())
}

pub fn mount_basics() -> Result<(), String> {
    mount("proc", "/proc", "proc")?;
    mount("sysfs", "/sys", "sysfs")?;
    mount("devtmpfs", "/dev", "devtmpfs")?;
    Ok(())
}

pub struct Loaded {
    pub loaded: usize,
    pub failed: usize,
}

/// Loads every module of [`MODULE_ORDER`] with `finit_module`, reporting each
/// (`@vmb module name= status=loaded|builtin|failed ms=`).
pub fn load_modules() -> Loaded {
    let mut out = Loaded {
        loaded: 0,
        failed: 0,
    };
    let order = match std::fs::read_to_string(MODULE_ORDER) {
        Ok(o) => o,
        Err(e) => {
            Record::new("error")
                .text(&format!("cannot read {MODULE_ORDER}: {e}"))
                .send();
            out.failed += 1;
            return out;
        }
    };
    for file in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = file.trim_end_matches(".ko").to_string();
        let t = Instant::now();
        let r = std::fs::File::open(format!("{MODULE_DIR}/{file}")).and_then(|f| {
            let empty = c"";
            // SAFETY: a valid open fd and a NUL-terminated empty parameter string.
            let r =
                unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), empty.as_ptr(), 0) };
            if r == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        let rec = Record::new("module")
            .kv("name", &name)
            .kv("ms", t.elapsed().as_millis());
        match r {
            Ok(()) => {
                out.loaded += 1;
                rec.kv("status", "loaded").send();
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                out.loaded += 1;
                rec.kv("status", "present").send();
            }
            Err(e) => {
                out.failed += 1;
                rec.kv("status", "failed").text(&e.to_string()).send();
            }
        }
    }
    out
}

/// Nanoseconds since boot (CLOCK_BOOTTIME).
pub fn uptime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn mem_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The driver bound to a /sys/block or /sys/class/net entry (`none` if unbound). virtio
/// devices sit below the virtio bus device; their driver is that device's.
pub fn driver_of(sys_path: &str) -> String {
    std::fs::read_link(format!("{sys_path}/device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "none".into())
}

/// Flushes and powers the machine off; PID 1 must never return. With ACPI (QEMU) Linux
/// powers off; without it (vmbench's VMM) Linux halts every CPU with interrupts masked, which
/// vmbench's VMM recognises as the end of the machine (docs/linux-boot.md, "Ending the
/// machine").
pub fn power_off() -> ! {
    // SAFETY: sync takes no arguments; reboot with RB_POWER_OFF ends the machine.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Not PID 1 or not allowed: nothing left to do but stop.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// Runs busybox `applet args...`; an error carries its output.
pub fn busybox(applet: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new("/bin/busybox")
        .arg(applet)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run busybox {applet}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "busybox {applet} {} failed ({}): {}",
            args.join(" "),
            out.status,
            text.trim()
        ))
    }
}
