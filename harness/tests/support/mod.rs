//! What the end-to-end tests share: the probe image, temporary directories, and booting a
//! configured machine to the end of its session.
#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use vmbench::record::Record;
use vmbench::session::{self, Limits, Outcome};
use vmm::{Machine, MachineConfig};

/// The probe ELF, built (or found in the cache) once per test binary.
pub fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let m = images::probe::build(&mut |_| {}).expect("the probe builds");
            m.artifacts[0].path.clone()
        })
        .clone()
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vmbench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the machine and runs its session (10 s to ready, 60 s to finish).
pub fn run(cfg: &MachineConfig) -> Outcome {
    let mut m = Machine::new(cfg).unwrap_or_else(|e| panic!("machine {cfg:?}: {e}"));
    let limits = Limits {
        ready: Duration::from_secs(10),
        run: Duration::from_secs(60),
    };
    session::run(&mut m, &limits, |_| {}).expect("the machine runs")
}

/// The workload's `result` record.
pub fn result<'a>(out: &'a Outcome, name: &str) -> &'a Record {
    out.records_of("result")
        .map(|t| &t.record)
        .find(|r| r.get("name") == Some(name))
        .unwrap_or_else(|| panic!("no result {name} in {:?} {:?}", out.records, out.ending))
}
