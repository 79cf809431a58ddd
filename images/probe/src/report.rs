//! Records to the harness: `@vmb <kind> key=value ...` lines. Through vmbench's mailbox a
//! record costs one exit; elsewhere (QEMU) it goes out on COM1, one byte at a time.

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use probe_abi::layout::{MAILBOX, MAILBOX_SIZE};
use probe_abi::{flags, ports, BootInfo, RECORD_PREFIX};

use crate::io::{inb, outb, outl, pause};

const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 0x20;

/// Serializes COM1 between vCPUs (only one line on the wire at a time).
static SERIAL_LOCK: AtomicBool = AtomicBool::new(false);

pub struct Record {
    buf: [u8; 1024],
    len: usize,
}

impl Record {
    pub fn new(kind: &str) -> Self {
        let mut r = Record {
            buf: [0; 1024],
            len: 0,
        };
        let _ = fmt::Write::write_str(&mut r, RECORD_PREFIX);
        let _ = fmt::Write::write_str(&mut r, kind);
        r
    }

    /// Appends ` key=value`.
    pub fn kv(mut self, key: &str, value: impl fmt::Display) -> Self {
        let _ = fmt::write(&mut self, format_args!(" {key}={value}"));
        self
    }

    /// Appends free text (for `log` and `error`).
    pub fn text(mut self, args: fmt::Arguments) -> Self {
        let _ = fmt::Write::write_str(&mut self, " ");
        let _ = fmt::write(&mut self, args);
        self
    }

    pub fn send(self, env: &crate::Env) {
        send_bytes(&env.boot, env.vcpu, &self.buf[..self.len]);
    }
}

impl fmt::Write for Record {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Records are one line: newlines inside a value would split them.
        for &b in s.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = if b == b'\n' { b' ' } else { b };
                self.len += 1;
            }
        }
        Ok(())
    }
}

/// Whether records go through the mailbox (one exit a record) rather than the serial port
/// (one exit a byte).
pub fn has_mailbox(boot: &BootInfo) -> bool {
    boot.flags & flags::MAILBOX != 0 && boot.mailbox_port != 0
}

/// Sends one line through the mailbox if this VMM has one, else the serial port.
pub fn send_bytes(boot: &BootInfo, vcpu: u32, bytes: &[u8]) {
    if has_mailbox(boot) {
        let n = bytes.len().min(MAILBOX_SIZE as usize);
        let page = (MAILBOX + u64::from(vcpu) * MAILBOX_SIZE) as *mut u8;
        // SAFETY: the VMM reserved one mailbox page per vCPU at this identity-mapped address,
        // outside the probe image, stacks and heap; only this vCPU writes its page.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), page, n) };
        outl(boot.mailbox_port, n as u32);
    } else {
        serial_write(bytes);
        serial_write(b"\n");
    }
}

pub fn serial_write(bytes: &[u8]) {
    while SERIAL_LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        pause();
    }
    for &b in bytes {
        // A real 16550 accepts a byte only when the holding register is empty.
        let mut spins = 0u32;
        while inb(ports::COM1 + LSR) & LSR_THR_EMPTY == 0 && spins < 100_000 {
            spins += 1;
            pause();
        }
        outb(ports::COM1, b);
    }
    SERIAL_LOCK.store(false, Ordering::Release);
}

/// `log` record with format arguments.
#[macro_export]
macro_rules! log {
    ($env:expr, $($arg:tt)*) => {
        $crate::report::Record::new("log").text(format_args!($($arg)*)).send($env)
    };
}
