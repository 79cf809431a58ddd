//! Children that die with vmbench, and descriptors handed to one child. A `kill -9` of
//! vmbench runs no destructor, so a child (QEMU, `ip`, `git`, `iperf3`) would live on as an
//! orphan, holding its CPU and its disk image. The kernel's parent-death signal (prctl(2)
//! `PR_SET_PDEATHSIG`), set in the child between fork and exec, kills it instead.
//!
//! The signal follows the *thread* that forked the child: spawn from a thread that outlives the
//! child (every spawn site waits for or reaps its child before returning).

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Ties a child's life to ours; see the module documentation.
pub trait DieWithParent {
    /// The child gets SIGKILL when the thread that spawns it dies, and does not start at all
    /// if that happened before it could ask for the signal.
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and calls only prctl(2)
        // and getppid(2), which are async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            self.pre_exec(move || {
                let signal = libc::SIGKILL as libc::c_ulong;
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before the prctl: we were re-parented already.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            })
        }
    }
}

/// Hands one descriptor to a child: QEMU's `-netdev tap,fd=N` takes the TAP vmbench opened in
/// its namespace. Descriptors stay close-on-exec in vmbench, so children spawned at the same
/// time by other threads never inherit them; only this child clears the flag, after the fork.
pub trait PassFd {
    /// The child keeps `fd` open (under the same number) across exec. `fd` must stay open
    /// in the parent until the child has been spawned.
    fn pass_fd(&mut self, fd: RawFd) -> &mut Self;
}

impl PassFd for Command {
    fn pass_fd(&mut self, fd: RawFd) -> &mut Self {
        // SAFETY: the closure runs in the child between fork and exec and calls only fcntl(2),
        // which is async-signal-safe; it allocates nothing and takes no lock. The descriptor
        // number was copied by the fork, so clearing its flag there changes nothing here.
        unsafe {
            self.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}
