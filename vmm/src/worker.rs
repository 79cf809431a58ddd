//! The one skeleton every device thread runs on (virtio-net, virtio-blk, the e1000's wire):
//! an epoll loop over the device's file descriptors, each with a typed token, plus a kill
//! eventfd the skeleton owns, an optional timeout for device timers, and a failure flag. A
//! handler that fails stops its thread, is logged once and flags its device failed; it never
//! takes the VMM down. Cloud Hypervisor's `epoll_helper.rs` is the model.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// The events a device thread waits for, as a fieldless enum listing itself in `ALL`.
pub trait Token: Copy + Eq + fmt::Debug + Send + 'static {
    const ALL: &'static [Self];
}

/// The epoll data of the kill eventfd; device tokens are their index in `ALL` plus one.
const KILL: u64 = 0;

fn encode<T: Token>(t: T) -> u64 {
    // `ALL` is short (a handful of sources): a scan costs less than the epoll_wait around it.
    T::ALL
        .iter()
        .position(|x| *x == t)
        .map_or(u64::MAX, |i| i as u64 + 1)
}

fn decode<T: Token>(data: u64) -> Option<T> {
    let i = usize::try_from(data.checked_sub(1)?).ok()?;
    T::ALL.get(i).copied()
}

/// What a device thread does between waits.
pub trait Handler: Send + 'static {
    type Token: Token;
    type Error: fmt::Display;

    /// Runs once before the first wait (to serve what arrived before the thread started).
    fn start(&mut self, _sources: &mut Sources<Self::Token>) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Runs before each wait: may pause or resume sources, and returns how long to wait at
    /// most (`None`: until an event).
    fn prepare(
        &mut self,
        _sources: &mut Sources<Self::Token>,
    ) -> Result<Option<Duration>, Self::Error> {
        Ok(None)
    }

    /// Runs after each wait with the tokens that fired, or none when the timeout expired.
    fn handle(&mut self, ready: &[Self::Token]) -> Result<(), Self::Error>;
}

/// The file descriptors a handler waits on.
pub struct Sources<T: Token> {
    epoll: Epoll,
    _token: std::marker::PhantomData<T>,
}

impl<T: Token> Sources<T> {
    fn new() -> io::Result<Self> {
        Ok(Sources {
            epoll: Epoll::new()?,
            _token: std::marker::PhantomData,
        })
    }

    fn ctl(&self, op: ControlOperation, fd: RawFd, data: u64, events: EventSet) -> io::Result<()> {
        self.epoll.ctl(op, fd, EpollEvent::new(events, data))
    }

    /// Starts waiting for `fd` to become readable.
    pub fn add(&mut self, fd: RawFd, token: T) -> io::Result<()> {
        self.ctl(ControlOperation::Add, fd, encode(token), EventSet::IN)
    }

    /// Stops listening to `fd` for now (a back-end with frames nobody can take).
    pub fn pause(&mut self, fd: RawFd, token: T) -> io::Result<()> {
        self.ctl(
            ControlOperation::Modify,
            fd,
            encode(token),
            EventSet::empty(),
        )
    }

    /// Listens to `fd` again after [`Sources::pause`].
    pub fn resume(&mut self, fd: RawFd, token: T) -> io::Result<()> {
        self.ctl(ControlOperation::Modify, fd, encode(token), EventSet::IN)
    }
}

/// Why a device thread stopped before it was told to.
#[derive(Debug, thiserror::Error)]
enum Stopped<E: fmt::Display> {
    #[error("epoll failed: {0}")]
    Epoll(#[source] io::Error),
    #[error("{0}")]
    Device(E),
}

/// A running device thread: stops on [`WorkerThread::stop`] (or drop) and says whether it
/// failed.
pub struct WorkerThread {
    name: String,
    kill: EventFd,
    thread: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl WorkerThread {
    /// Starts `handler` on a thread named `name`, waiting on `sources` and the kill eventfd.
    pub fn spawn<H: Handler>(
        name: &str,
        sources: &[(RawFd, H::Token)],
        mut handler: H,
    ) -> io::Result<WorkerThread> {
        let kill = EventFd::new(libc::EFD_NONBLOCK)?;
        let mut s = Sources::<H::Token>::new()?;
        s.ctl(ControlOperation::Add, kill.as_raw_fd(), KILL, EventSet::IN)?;
        for &(fd, token) in sources {
            s.add(fd, token)?;
        }
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        let what = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                if let Err(e) = run(&mut s, &mut handler) {
                    log::warn!("{what} worker stopped: {e}; the device needs a reset");
                    flag.store(true, Ordering::SeqCst);
                }
            })?;
        Ok(WorkerThread {
            name: name.to_string(),
            kill,
            thread: Some(thread),
            failed,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once the handler has failed and its thread ended.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Tells the thread to end and waits for it. Idempotent.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.kill.write(1);
            let _ = t.join();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run<H: Handler>(s: &mut Sources<H::Token>, h: &mut H) -> Result<(), Stopped<H::Error>> {
    h.start(s).map_err(Stopped::Device)?;
    let mut events = [EpollEvent::default(); 8];
    let mut ready = Vec::with_capacity(events.len());
    loop {
        let timeout = h.prepare(s).map_err(Stopped::Device)?;
        // Rounded up: waking before a device deadline would only spin.
        let ms = timeout.map_or(-1, |t| {
            i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        let n = match s.epoll.wait(ms, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stopped::Epoll(e)),
        };
        ready.clear();
        for ev in &events[..n] {
            if ev.data() == KILL {
                return Ok(());
            }
            if let Some(t) = decode(ev.data()) {
                ready.push(t);
            }
        }
        h.handle(&ready).map_err(Stopped::Device)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Sender};

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum T {
        A,
        B,
    }

    impl Token for T {
        const ALL: &'static [T] = &[T::A, T::B];
    }

    struct Echo {
        a: EventFd,
        b: EventFd,
        seen: Sender<Vec<T>>,
        fail_on_b: bool,
        timeout: Option<Duration>,
    }

    impl Handler for Echo {
        type Token = T;
        type Error = &'static str;

        fn prepare(&mut self, _: &mut Sources<T>) -> Result<Option<Duration>, &'static str> {
            Ok(self.timeout)
        }

        fn handle(&mut self, ready: &[T]) -> Result<(), &'static str> {
            for t in ready {
                let _ = match t {
                    T::A => self.a.read(),
                    T::B => self.b.read(),
                };
            }
            let _ = self.seen.send(ready.to_vec());
            if self.fail_on_b && ready.contains(&T::B) {
                return Err("b is fatal");
            }
            Ok(())
        }
    }

    fn echo(fail_on_b: bool, timeout: Option<Duration>) -> (Echo, RawFd, RawFd, EventFd, EventFd) {
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let b = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (ra, rb) = (a.as_raw_fd(), b.as_raw_fd());
        let (wa, wb) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let (tx, _) = channel();
        (
            Echo {
                a,
                b,
                seen: tx,
                fail_on_b,
                timeout,
            },
            ra,
            rb,
            wa,
            wb,
        )
    }

    #[test]
    fn tokens_round_trip_and_never_collide_with_kill() {
        for &t in T::ALL {
            assert_ne!(encode(t), KILL);
            assert_eq!(decode::<T>(encode(t)), Some(t));
        }
        assert_eq!(decode::<T>(KILL), None);
        assert_eq!(decode::<T>(3), None);
    }

    #[test]
    fn events_reach_the_handler_by_token_and_stop_ends_the_thread() {
        let (mut h, ra, rb, wa, wb) = echo(false, None);
        let (tx, rx) = channel();
        h.seen = tx;
        let mut w = WorkerThread::spawn("test-worker", &[(ra, T::A), (rb, T::B)], h).unwrap();

        wb.write(1).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        wa.write(1).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        w.stop();

        assert_eq!((first, second), (vec![T::B], vec![T::A]));
        assert!(!w.failed());
    }

    #[test]
    fn a_failing_handler_flags_the_device_and_ends_its_thread() {
        let (mut h, ra, rb, _wa, wb) = echo(true, None);
        let (tx, rx) = channel();
        h.seen = tx;
        let mut w = WorkerThread::spawn("test-worker", &[(ra, T::A), (rb, T::B)], h).unwrap();

        wb.write(1).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // The thread ends by itself; the flag is set before it does.
        let t = w.thread.take().unwrap();
        t.join().unwrap();

        assert!(w.failed());
    }

    #[test]
    fn a_timeout_calls_the_handler_with_no_tokens() {
        let (mut h, ra, rb, _wa, _wb) = echo(false, Some(Duration::from_millis(1)));
        let (tx, rx) = channel();
        h.seen = tx;
        let mut w = WorkerThread::spawn("test-worker", &[(ra, T::A), (rb, T::B)], h).unwrap();

        let woke = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        w.stop();

        assert_eq!(woke, Vec::<T>::new());
    }
}
