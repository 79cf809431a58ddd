//! Counting a queue's kicks (the driver's notifications, ioeventfd writes) so that a snapshot
//! taken at any instant says how many the driver had written by then.
//!
//! KVM signals the queue's eventfd synchronously in the vCPU's exit path, so every kick a
//! driver wrote before a port or MMIO exit is in the eventfd's count when the VMM handles
//! that exit; the worker reads (and clears) the count only when it gets round to it. Counting
//! only what the worker read would cut a measured window short by whatever was still unread at
//! its edges: a driver that kicks for every frame (no EVENT_IDX) while its worker waits for a
//! CPU leaves up to a ring's worth there (seen: 172 of 8,434 in a 0.3 s window on a loaded
//! host). A snapshot therefore adds the eventfd's unread count (the kernel shows it in
//! `/proc/self/fdinfo`), under the lock the worker takes to read and count, so that no kick
//! is in neither half or in both.

use std::os::fd::AsRawFd;
use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

#[derive(Default)]
pub struct Kicks(Mutex<State>);

#[derive(Default)]
struct State {
    /// Kicks the worker read from the eventfd.
    consumed: u64,
    /// A duplicate of the queue's eventfd (the worker owns the original), set at activation.
    watched: Option<EventFd>,
}

impl Kicks {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Watches `notify` from now on: called when a worker is given the queue.
    pub fn watch(&self, notify: &EventFd) {
        self.state().watched = notify.try_clone().ok();
    }

    /// Reads and counts the kicks `notify` (non-blocking) holds. A worker calls it after
    /// draining its ring and before re-enabling notifications, so the kicks for what it just
    /// served are consumed with it, and no later wake-up finds an empty ring. (Uncontended
    /// but for the rare snapshot.)
    pub fn consume(&self, notify: &EventFd) {
        let mut s = self.state();
        if let Ok(n) = notify.read() {
            s.consumed += n;
        }
    }

    /// Every kick written so far: those consumed plus those still unread.
    pub fn total(&self) -> u64 {
        let s = self.state();
        s.consumed + s.watched.as_ref().and_then(unread).unwrap_or(0)
    }
}

/// The count an eventfd holds, from its fdinfo (`eventfd-count: <hex>`, Linux ≥ 3.8).
fn unread(fd: &EventFd) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    parse_fdinfo(&info)
}

fn parse_fdinfo(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-count:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_snapshot_counts_the_kicks_still_unread_and_those_consumed() {
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let k = Kicks::default();
        k.watch(&notify);
        assert_eq!(k.total(), 0);
        notify.write(1).unwrap();
        notify.write(1).unwrap();
        assert_eq!(k.total(), 2, "two unread");
        k.consume(&notify);
        assert_eq!(k.total(), 2, "two consumed");
        notify.write(1).unwrap();
        assert_eq!(k.total(), 3, "two consumed, one unread");
        k.consume(&notify);
        k.consume(&notify); // nothing to read: counts nothing
        assert_eq!(k.total(), 3);
    }

    #[test]
    fn without_a_watched_eventfd_only_consumed_kicks_count() {
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let k = Kicks::default();
        notify.write(5).unwrap();
        assert_eq!(k.total(), 0);
        k.consume(&notify);
        assert_eq!(k.total(), 5);
    }

    #[test]
    fn fdinfo_count_is_hexadecimal() {
        let info = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\neventfd-count:               1f\neventfd-id: 3\n";
        assert_eq!(parse_fdinfo(info), Some(31));
        assert_eq!(parse_fdinfo("pos:\t0\n"), None);
    }

    #[test]
    fn snapshots_racing_a_consuming_worker_never_lose_or_double_a_kick() {
        // A writer (the driver) and a consumer (the worker) race a snapshotting thread: every
        // snapshot lies between the kicks written before it began and after it ended.
        let notify = std::sync::Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let k = std::sync::Arc::new(Kicks::default());
        k.watch(&notify);
        let written = std::sync::Arc::new(AtomicU64::new(0));
        const N: u64 = 20_000;
        let writer = {
            let (notify, written) = (notify.clone(), written.clone());
            std::thread::spawn(move || {
                for _ in 0..N {
                    notify.write(1).unwrap();
                    written.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let consumer = {
            let (notify, k, written) = (notify.clone(), k.clone(), written.clone());
            std::thread::spawn(move || {
                while written.load(Ordering::SeqCst) < N {
                    k.consume(&notify);
                }
                k.consume(&notify);
            })
        };
        while written.load(Ordering::SeqCst) < N {
            let low = written.load(Ordering::SeqCst);
            let seen = k.total();
            // `written` is counted after the write, so one more may already be in.
            let high = written.load(Ordering::SeqCst) + 1;
            assert!(low <= seen && seen <= high, "{low} <= {seen} <= {high}");
        }
        writer.join().unwrap();
        consumer.join().unwrap();
        assert_eq!(k.total(), N);
    }
}
