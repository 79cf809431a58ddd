//! The linux image from the checked-in lock: two builds from clean caches give the same
//! bytes; the cache is reused; bad input (a kernel the mirror lacks, a locked version it no
//! longer has, a kernel without the devices' modules) fails with the errors users act on.
//! These talk to the Debian mirror through apt (the only network they use).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use images::linux::{self, Lock, Options};

fn temp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vmbench-linux-{name}-"))
        .tempdir()
        .expect("a temporary directory")
}

fn hashes(m: &images::Manifest) -> Vec<(String, String)> {
    m.artifacts
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone()))
        .collect()
}

#[test]
fn two_builds_from_clean_caches_give_the_same_bytes() {
    let (a, b) = (temp("a"), temp("b"));
    let opts = |c: &tempfile::TempDir| Options {
        lock: linux::lock_path(),
        cache: c.path().to_path_buf(),
    };
    let t = Instant::now();
    let first = linux::build(&opts(&a), &mut |p| eprintln!("a: {p}")).expect("first build");
    eprintln!("clean build: {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let second = linux::build(&opts(&b), &mut |p| eprintln!("b: {p}")).expect("second build");
    eprintln!("clean build: {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(first.input_hash, second.input_hash);
    assert_eq!(hashes(&first), hashes(&second));
    let names: Vec<_> = first.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["vmlinuz", "vmlinux", "initramfs.cpio.gz"]);
    // Every locked package is recorded, with its hash, and the module closure.
    let lock = Lock::load(&linux::lock_path()).expect("the lock loads");
    for p in &lock.packages {
        let want = format!("{} {} {} {}", p.name, p.version, p.arch, p.sha256);
        assert!(
            first.inputs.iter().any(|(k, v)| k == "deb" && *v == want),
            "{want} not in the manifest"
        );
    }
    assert!(first
        .inputs
        .iter()
        .any(|(k, v)| k == "module" && v.starts_with("e1000 ")));
    // From the cache: the same manifest, nothing rebuilt, no network.
    let t = Instant::now();
    let again = linux::build(&opts(&a), &mut |p| panic!("rebuilt from the cache: {p}"))
        .expect("cached build");
    eprintln!("cached build: {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(again, first);
}

/// The bad-input tests share one cache (apt's package lists), one test at a time.
struct Shared {
    _guard: std::sync::MutexGuard<'static, ()>,
    path: PathBuf,
}

impl Shared {
    fn clone(&self) -> PathBuf {
        self.path.clone()
    }
}

fn bad_input_cache() -> Shared {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    Shared {
        _guard: guard,
        path: DIR.get_or_init(|| temp("bad")).path().to_path_buf(),
    }
}

#[test]
fn a_kernel_the_mirror_lacks_is_refused_with_what_it_offers() {
    let cache = bad_input_cache();
    let dir = temp("nokernel");
    let opts = Options {
        lock: dir.path().join("linux.lock"),
        cache: cache.clone(),
    };
    let e = linux::lock(&opts, Some("linux-image-0.0.0-0-amd64"), &mut |_| {})
        .expect_err("no such kernel");
    let msg = e.to_string();
    let current = Lock::load(&linux::lock_path())
        .expect("the lock loads")
        .kernel;
    assert!(
        msg.contains("no package linux-image-0.0.0-0-amd64") && msg.contains(&current),
        "{msg}"
    );
    assert!(!opts.lock.exists(), "a failed lock must not write the file");
}

#[test]
fn a_version_the_mirror_no_longer_has_names_it_and_the_fix() {
    let cache = bad_input_cache();
    let dir = temp("gone");
    let mut lock = Lock::load(&linux::lock_path()).expect("the lock loads");
    let p = lock
        .packages
        .iter_mut()
        .find(|p| p.name == "busybox-static")
        .expect("busybox-static is locked");
    p.version = "1:0.0.1-0".into();
    let path = dir.path().join("linux.lock");
    lock.store(&path).expect("writing the lock");
    let e = linux::build(
        &Options {
            lock: path,
            cache: cache.clone(),
        },
        &mut |_| {},
    )
    .expect_err("the version is gone");
    let msg = e.to_string();
    assert!(
        msg.contains("no longer has busybox-static 1:0.0.1-0")
            && msg.contains("vmbench images lock linux"),
        "{msg}"
    );
}

#[test]
fn the_cloud_kernel_is_refused_for_the_modules_it_lacks() {
    let cache = bad_input_cache();
    let dir = temp("cloud");
    let current = Lock::load(&linux::lock_path())
        .expect("the lock loads")
        .kernel;
    let cloud = current.replace("-amd64", "-cloud-amd64");
    let opts = Options {
        lock: dir.path().join("linux.lock"),
        cache: cache.clone(),
    };
    linux::lock(&opts, Some(&cloud), &mut |_| {}).expect("the cloud kernel locks");
    let e = linux::build(&opts, &mut |_| {}).expect_err("the cloud kernel lacks e1000");
    let msg = e.to_string();
    assert!(
        msg.contains("module e1000 (for the e1000 NIC) is not in")
            && msg.contains(&cloud)
            && msg.contains("generic kernel flavour"),
        "{msg}"
    );
}
