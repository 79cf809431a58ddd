//! The e1000's wire: frames arriving from the back-end are stored into the receive ring as the
//! hardware's DMA engine would, off the vCPU threads, and the interrupt-moderation timers fire
//! on time. Register accesses stay on the vCPU threads. Runs on the shared worker skeleton.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::regs::{slot_names, REG_SLOTS};
use super::E1000;
use crate::counters::Counters;
use crate::worker::{Handler, Sources, WorkerThread};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// The back-end has frames.
    Rx,
    /// A register access armed an earlier moderation deadline.
    Deadline,
}

impl crate::worker::Token for Token {
    const ALL: &'static [Token] = &[Token::Rx, Token::Deadline];
}

/// While the receive FIFO is backlogged the wire is not listened to; this bounds how long a
/// frame waits for the driver's descriptors to be noticed.
const BACKLOG_POLL: Duration = Duration::from_millis(1);

struct Wire {
    dev: Arc<Mutex<E1000>>,
    rx_fd: RawFd,
    deadline: EventFd,
    armed: bool,
}

impl Handler for Wire {
    type Token = Token;
    type Error = io::Error;

    fn prepare(&mut self, sources: &mut Sources<Token>) -> io::Result<Option<Duration>> {
        let (deadline, backlogged) = {
            let d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
            (d.next_deadline(), d.rx_backlogged())
        };
        // With frames waiting for descriptors, stop listening to the wire until the driver
        // returns buffers (its RDT write drains the FIFO).
        if backlogged == self.armed {
            if backlogged {
                sources.pause(self.rx_fd, Token::Rx)?;
            } else {
                sources.resume(self.rx_fd, Token::Rx)?;
            }
            self.armed = !backlogged;
        }
        let mut timeout = deadline.map(|t| t.saturating_duration_since(Instant::now()));
        if !self.armed {
            timeout = Some(timeout.map_or(BACKLOG_POLL, |t| t.min(BACKLOG_POLL)));
        }
        Ok(timeout)
    }

    fn handle(&mut self, ready: &[Token]) -> io::Result<()> {
        if ready.contains(&Token::Deadline) {
            // Only a wake-up; prepare() reads the new deadline.
            let _ = self.deadline.read();
        }
        let mut d = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if ready.contains(&Token::Rx) {
            d.rx_poll();
        }
        d.poll(Instant::now());
        Ok(())
    }
}

/// Starts the wire thread of `dev`, whose back-end signals frames on `rx_fd`.
pub fn spawn(dev: Arc<Mutex<E1000>>, rx_fd: RawFd) -> io::Result<WorkerThread> {
    let deadline = EventFd::new(libc::EFD_NONBLOCK)?;
    dev.lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_deadline_waker(deadline.try_clone()?);
    let deadline_fd = deadline.as_raw_fd();
    let wire = Wire {
        dev,
        rx_fd,
        deadline,
        armed: true,
    };
    WorkerThread::spawn(
        "e1000-io",
        &[(rx_fd, Token::Rx), (deadline_fd, Token::Deadline)],
        wire,
    )
}

/// The e1000's counters for the harness.
pub struct DeviceView(pub Arc<Mutex<E1000>>);

impl Counters for DeviceView {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let c = self.0.lock().unwrap_or_else(|e| e.into_inner()).counters();
        let mut all = vec![
            ("mmio_reads", c.mmio_reads),
            ("mmio_writes", c.mmio_writes),
            ("io_reads", c.io_reads),
            ("io_writes", c.io_writes),
            ("tx_frames", c.tx_frames),
            ("tx_bytes", c.tx_bytes),
            ("tx_descriptors", c.tx_descriptors),
            ("tx_dropped", c.tx_dropped),
            ("rx_frames", c.rx_frames),
            ("rx_bytes", c.rx_bytes),
            ("rx_descriptors", c.rx_descriptors),
            ("rx_filtered", c.rx_filtered),
            ("rx_missed", c.rx_missed),
            ("rx_dropped", c.rx_dropped),
            ("interrupts", c.interrupts),
            ("dma_errors", c.dma_errors),
            ("bad_ring", c.bad_ring),
            ("backend_errors", c.backend_errors),
        ];
        for i in 0..REG_SLOTS {
            let (r, w) = slot_names(i);
            all.push((r, c.reg_reads[i]));
            all.push((w, c.reg_writes[i]));
        }
        all
    }
}

/// The counters of the e1000's back-end (the device owns it), under the back-end's name.
pub struct BackendView(pub Arc<Mutex<E1000>>);

impl Counters for BackendView {
    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        crate::backend::net::backend_snapshot(
            self.0.lock().unwrap_or_else(|e| e.into_inner()).backend(),
        )
    }
}
