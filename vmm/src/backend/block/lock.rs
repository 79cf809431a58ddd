//! Image locking, as QEMU locks its images: open file description (OFD) locks taken with
//! `fcntl(F_OFD_SETLK)`, shared for a reader and exclusive for a writer, over the whole file.
//! Backing files are opened read-only and so take shared locks: two overlays may share one
//! base, but nobody may write a base an overlay reads.
//!
//! An OFD lock belongs to the open file, not to the process: it goes away when the last
//! descriptor of that open is closed (the back-end dropped), and a second open in the same
//! process conflicts like another process would. QEMU's own locks are byte-range OFD locks
//! (bytes 100.. and 200..), so a QEMU holding an image conflicts with a vmbench writer and
//! the other way round.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// How an image is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// A reader: any number of readers together, no writer.
    Shared,
    /// A writer: alone.
    Exclusive,
}

impl LockMode {
    /// Readers share an image, a writer holds it alone.
    pub fn of(opts: &super::OpenOptions) -> Self {
        if opts.read_only {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "disk image {path} is in use{holder}: another {what} holds its lock (stop it, or open the image read-only)"
    )]
    Busy {
        path: String,
        /// " by pid N (comm)" when /proc says who, else empty.
        holder: String,
        what: &'static str,
    },
    #[error("cannot lock disk image {path}")]
    Lock {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Takes the lock for `mode` on `file` (opened from `path`) or says who holds a conflicting
/// one. Never waits.
pub fn lock(file: &File, path: &Path, mode: LockMode) -> Result<(), Error> {
    let l_type = match mode {
        LockMode::Shared => libc::F_RDLCK,
        LockMode::Exclusive => libc::F_WRLCK,
    };
    // SAFETY: flock is plain old data; all-zero is a valid value, the fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // to the end of the file, however it grows
    fl.l_pid = 0; // OFD locks require 0
                  // SAFETY: fcntl on a descriptor `file` owns, with a pointer to a live, initialised flock
                  // the call only reads.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl as *const _) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    let busy = matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES));
    if !busy {
        return Err(Error::Lock {
            path: path.display().to_string(),
            source: e,
        });
    }
    Err(Error::Busy {
        path: path.display().to_string(),
        holder: holder(file)
            .map(|(pid, comm)| format!(" by pid {pid} ({comm})"))
            .unwrap_or_default(),
        what: match mode {
            LockMode::Shared => "writer",
            LockMode::Exclusive => "user",
        },
    })
}

/// Another process with the same file open and a lock on it, found in /proc (an OFD lock
/// records no pid; `/proc/PID/fdinfo/FD` lists the locks of each open file). None if /proc
/// does not say, or if only this process holds it (a second open in one process).
fn holder(file: &File) -> Option<(u32, String)> {
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let me = std::process::id();
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let same = std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == dev && m.ino() == ino);
            if !same {
                continue;
            }
            let info = proc_entry.path().join("fdinfo").join(fd.file_name());
            let locked = std::fs::read_to_string(info).is_ok_and(|s| s.contains("lock:"));
            if locked {
                let comm = std::fs::read_to_string(proc_entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                return Some((pid, comm));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path) -> std::path::PathBuf {
        let p = dir.join("img");
        std::fs::write(&p, [0u8; 512]).unwrap();
        p
    }

    #[test]
    fn readers_share_and_a_writer_is_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = file(d.path());
        let a = File::open(&p).unwrap();
        let b = File::open(&p).unwrap();
        let w = File::options().read(true).write(true).open(&p).unwrap();

        lock(&a, &p, LockMode::Shared).unwrap();
        lock(&b, &p, LockMode::Shared).unwrap();
        let refused = lock(&w, &p, LockMode::Exclusive).unwrap_err();
        drop((a, b));
        // Another test of this binary forking while `a` and `b` were open holds copies of
        // their file descriptions, and so their locks, until that child's exec closes them.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match lock(&w, &p, LockMode::Exclusive) {
                Err(Error::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                r => break r.unwrap(),
            }
        }
        let c = File::open(&p).unwrap();
        let reader_refused = lock(&c, &p, LockMode::Shared).unwrap_err();

        assert!(matches!(refused, Error::Busy { .. }), "{refused}");
        assert!(refused.to_string().contains(&p.display().to_string()));
        assert!(matches!(reader_refused, Error::Busy { .. }));
    }
}
