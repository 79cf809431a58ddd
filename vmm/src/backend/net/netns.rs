//! Network namespaces that vmbench creates for the TAP back-end and always removes, made and
//! deleted with ip-netns(8) and entered with setns(2) on short-lived threads.
//!
//! A namespace is named `<prefix>-<pid>-<n>` (`vmbench-<pid>-<n>` by default) and removed when
//! its [`NetNs`] is dropped. Drop does not run when the process is killed by a signal, so:
//! - the harness must install a Ctrl-C/SIGTERM handler that drops its namespaces, or calls
//!   [`remove_all_owned`], which removes every namespace this process still owns, before it
//!   exits;
//! - the harness should call [`cleanup_stale`] at start-up, which removes the namespaces that
//!   earlier vmbench processes (now dead) left behind.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::process::DieWithParent;

pub const DEFAULT_PREFIX: &str = "vmbench";

/// Said whenever the kernel refuses us for lack of privilege.
pub const NEED_ROOT: &str = "the tap back-end needs root (CAP_NET_ADMIN) to create network \
     namespaces and TAP devices; the default `peer` back-end needs nothing";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{NEED_ROOT}")]
    NoPermission,
    #[error("cannot run `ip` (install iproute2)")]
    IpMissing(#[source] io::Error),
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("namespace prefix {0:?} must be non-empty letters, digits, '_' or '-'")]
    BadPrefix(String),
    #[error("cannot enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: io::Error,
    },
}

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Namespaces this process created and has not removed yet.
static OWNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A network namespace this process created; removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `<name_prefix>-<pid>-<n>`, with `n` unique within this process.
    pub fn create(name_prefix: &str) -> Result<NetNs, Error> {
        let prefix_ok = !name_prefix.is_empty()
            && name_prefix.len() <= 64
            && name_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !prefix_ok {
            return Err(Error::BadPrefix(name_prefix.to_string()));
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{name_prefix}-{}-{n}", std::process::id());
        // Registered first, so that a signal handler running remove_all_owned during the
        // `ip netns add` still removes it.
        lock_owned().insert(name.clone());
        let added = match ip(&["netns", "add", &name]) {
            // Left by an earlier process that had our pid: nobody alive owns it.
            Err(Error::Ip { stderr, .. }) if stderr.contains("File exists") => {
                ip(&["netns", "del", &name]).and_then(|()| ip(&["netns", "add", &name]))
            }
            other => other,
        };
        if let Err(e) = added {
            lock_owned().remove(&name);
            return Err(e);
        }
        Ok(NetNs { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount, which setns(2) takes.
    pub fn path(&self) -> PathBuf {
        netns_dir().join(&self.name)
    }

    /// Runs `ip -n <name> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<(), Error> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `f` on a new thread that has entered the namespace and returns its result; the
    /// calling thread never changes namespace. Sockets and TAP devices `f` opens stay in the
    /// namespace after the thread ends. A panic in `f` is passed on.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        let enter = |source| Error::Enter {
            name: self.name.clone(),
            source,
        };
        let ns = File::open(self.path()).map_err(enter)?;
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                // This thread ends with `f`, so the namespace change ends with it.
                crate::sys::setns_net(&ns).map(|()| f())
            });
            match worker.join() {
                Ok(result) => result.map_err(|e| match e.raw_os_error() {
                    Some(libc::EPERM) => Error::NoPermission,
                    _ => enter(e),
                }),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if lock_owned().remove(&self.name) {
            if let Err(e) = ip(&["netns", "del", &self.name]) {
                log::warn!("cannot remove network namespace {}: {e}", self.name);
            }
        }
    }
}

fn lock_owned() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    // The set stays consistent even if a holder panicked: each operation is one call.
    OWNED.lock().unwrap_or_else(|e| e.into_inner())
}

fn netns_dir() -> PathBuf {
    let run = Path::new("/run/netns");
    if run.exists() {
        run.to_path_buf()
    } else {
        PathBuf::from("/var/run/netns")
    }
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .die_with_parent()
        .args(args)
        .output()
        .map_err(Error::IpMissing)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(classify_ip_failure(args.join(" "), stderr))
}

fn classify_ip_failure(args: String, stderr: String) -> Error {
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        Error::NoPermission
    } else {
        Error::Ip { args, stderr }
    }
}

/// The names `ip netns list` shows.
pub fn list() -> Result<Vec<String>, Error> {
    let out = Command::new("ip")
        .die_with_parent()
        .args(["netns", "list"])
        .output()
        .map_err(Error::IpMissing)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(classify_ip_failure("netns list".into(), stderr));
    }
    // Lines are "name" or "name (id: N)".
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// The pid in a name `<prefix>-<pid>-<n>`.
fn owner_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes namespaces named `vmbench-<pid>-<n>` whose process is gone, and returns the names
/// this call removed (one that another cleaner removed first is not among them). A pid counts as alive if /proc shows it, so a namespace whose creator lives in
/// another pid namespace (another container sharing /run/netns) may be taken for stale.
pub fn cleanup_stale() -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    for name in list()? {
        let Some(pid) = owner_pid(&name, DEFAULT_PREFIX) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match ip(&["netns", "del", &name]) {
            Ok(()) => removed.push(name),
            // Another cleaner (a TAP being set up elsewhere) was first: it is gone all the same.
            Err(Error::Ip { stderr, .. }) if stderr.contains("No such file or directory") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Removes every namespace this process created and still owns; for signal handlers and
/// fatal-error paths, where the owners' destructors will not run. Dropping an owner afterwards
/// does nothing.
pub fn remove_all_owned() {
    let names = std::mem::take(&mut *lock_owned());
    for name in names {
        if let Err(e) = ip(&["netns", "del", &name]) {
            log::warn!("cannot remove network namespace {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_our_name_shape() {
        assert_eq!(owner_pid("vmbench-1234-0", "vmbench"), Some(1234));
        assert_eq!(owner_pid("vmbench-1234-17", "vmbench"), Some(1234));
        assert_eq!(owner_pid("vmbench-1234", "vmbench"), None);
        assert_eq!(owner_pid("vmbench-x-1", "vmbench"), None);
        assert_eq!(owner_pid("vmbenchx-1-1", "vmbench"), None);
        assert_eq!(owner_pid("other-1-1", "vmbench"), None);
        assert_eq!(owner_pid("vmbench-1-2-3", "vmbench"), None);
    }

    #[test]
    fn permission_failures_say_what_to_do() {
        let e = classify_ip_failure(
            "netns add x".into(),
            "mount --make-shared /run/netns failed: Operation not permitted".into(),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("root") && msg.contains("CAP_NET_ADMIN"),
            "{msg}"
        );
        assert!(msg.contains("`peer`"), "{msg}");
        let other = classify_ip_failure("netns add x".into(), "something else".into());
        assert!(matches!(other, Error::Ip { .. }));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "a/b", "a b", "ü"] {
            assert!(
                matches!(NetNs::create(p), Err(Error::BadPrefix(_))),
                "{p:?}"
            );
        }
    }
}
