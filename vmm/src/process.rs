//! Children that die with vmbench. A `kill -9` of vmbench runs no destructor, so a child (QEMU,
//! `ip`, `git`) would live on as an orphan, holding its CPU and its disk image. The kernel's
//! parent-death signal (prctl(2) `PR_SET_PDEATHSIG`), set in the child between fork and exec,
//! kills it instead.
//!
//! The signal follows the *thread* that forked the child: spawn from a thread that outlives the
//! child (every spawn site waits for or reaps its child before returning).

use std::io;
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
