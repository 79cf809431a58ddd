//! Image recipes built with the real tools (qemu-img, mke2fs, debugfs), checked with the
//! reference tools: qemu-img info/check, and debugfs on the image converted back to raw.
//! A missing tool fails the test with what to install; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use images::recipe::{self, Recipe};
use images::Manifest;

/// Panics with what to install if a tool is missing (e2fsprogs lives in /usr/sbin).
fn tool(name: &str) -> PathBuf {
    let package = if name == "qemu-img" {
        "qemu-utils"
    } else {
        "e2fsprogs"
    };
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: these tests need it; install {package} (bash .ci/setup)")
        })
}

fn run(name: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn shipped(name: &str) -> Recipe {
    recipe::load(&recipe::find(name).unwrap()).unwrap()
}

/// Builds and counts the progress messages (none means the cache was used).
fn build(r: &Recipe, cache: &Path) -> (Manifest, usize) {
    let mut said = 0;
    let m = recipe::build_in(r, cache, &mut |_| said += 1)
        .unwrap_or_else(|e| panic!("building {}: {}", r.name, chain(&e)));
    (m, said)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s = format!("{s}: {c}");
        cur = c.source();
    }
    s
}

fn qemu_info(path: &Path) -> serde_json::Value {
    let p = path.to_str().unwrap();
    serde_json::from_slice(&run("qemu-img", &["info", "--output=json", p]).stdout).unwrap()
}

fn assert_qcow2_v3(path: &Path, size_mib: u64) {
    let header = std::fs::read(path).unwrap();
    assert_eq!(&header[..4], b"QFI\xfb", "qcow2 magic");
    assert_eq!(&header[4..8], &[0, 0, 0, 3], "qcow2 version 3");
    let info = qemu_info(path);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], size_mib << 20);
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
    let check = run("qemu-img", &["check", path.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("No errors were found"),
        "qemu-img check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

fn assert_artifact_matches(m: &Manifest) {
    for a in &m.artifacts {
        assert_eq!(
            images::manifest::sha256_file(&a.path).unwrap(),
            a.sha256,
            "{}",
            a.path.display()
        );
        assert_eq!(std::fs::metadata(&a.path).unwrap().len(), a.bytes);
    }
    let dir = m.artifacts[0].path.parent().unwrap();
    assert_eq!(Manifest::load(&dir.join("manifest.json")).as_ref(), Some(m));
}

/// `debugfs -R "cat PATH"` on an ext4 image.
fn ext4_cat(raw: &Path, file: &str) -> String {
    let out = run(
        "debugfs",
        &["-R", &format!("cat {file}"), raw.to_str().unwrap()],
    );
    String::from_utf8(out.stdout).unwrap()
}

fn to_raw(qcow2: &Path, dir: &Path) -> PathBuf {
    let raw = dir.join("back.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            qcow2.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    raw
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the shipped files-disk recipe and its directory elsewhere, with new times.
fn copied_files_disk(root: &Path) -> Recipe {
    let src = recipe::recipes_dir();
    std::fs::copy(src.join("files-disk.toml"), root.join("files-disk.toml")).unwrap();
    copy_tree(&src.join("files"), &root.join("files"));
    recipe::load(&root.join("files-disk.toml")).unwrap()
}

#[test]
fn data_disk_is_a_sparse_qcow2_v3_that_checks_clean() {
    let cache = tempfile::tempdir().unwrap();
    let (m, said) = build(&shipped("data-disk"), cache.path());
    assert!(said > 0);
    assert_eq!(m.image, "data-disk");
    assert_eq!(m.artifacts.len(), 1);
    let a = &m.artifacts[0];
    assert_eq!(a.name, "data");
    assert!(a.path.starts_with(cache.path()) && a.path.extension().unwrap() == "qcow2");
    assert!(a.bytes < 1 << 20, "sparse: {} bytes on file", a.bytes);
    assert!(m
        .tools
        .iter()
        .any(|(t, v)| t == "qemu-img" && v.contains("version")));
    assert_qcow2_v3(&a.path, 64);
    assert_artifact_matches(&m);
}

#[test]
fn files_disk_holds_the_directory_and_is_cached_and_reproducible() {
    let src = recipe::recipes_dir().join("files");
    let cache = tempfile::tempdir().unwrap();
    let r = shipped("files-disk");
    let (m, said) = build(&r, cache.path());
    assert!(said > 0);
    let a = &m.artifacts[0];
    assert_eq!(a.name, "files");
    assert_qcow2_v3(&a.path, 16);
    assert_artifact_matches(&m);
    assert!(m.tools.iter().any(|(t, _)| t == "mke2fs"));

    let scratch = tempfile::tempdir().unwrap();
    let raw = to_raw(&a.path, scratch.path());
    run("e2fsck", &["-fn", raw.to_str().unwrap()]);
    for file in ["hello.txt", "docs/README.txt"] {
        assert_eq!(
            ext4_cat(&raw, &format!("/{file}")),
            std::fs::read_to_string(src.join(file)).unwrap(),
            "{file} in the image"
        );
    }
    let ls = String::from_utf8(run("debugfs", &["-R", "ls -l /", raw.to_str().unwrap()]).stdout)
        .unwrap();
    assert!(ls.contains("hello.txt") && ls.contains("docs"), "{ls}");

    // Again in the same cache: reused, nothing built.
    let (again, said) = build(&r, cache.path());
    assert_eq!(said, 0, "the second build reuses the cache");
    assert_eq!(again, m);

    // From scratch elsewhere, from a copy of the recipe whose files have other times,
    // owners' clocks and paths: the same bytes.
    let other = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new second for ctime
    let (fresh, said) = build(&copied_files_disk(copy.path()), other.path());
    assert!(said > 0);
    assert_eq!(fresh.input_hash, m.input_hash);
    assert_eq!(fresh.artifacts[0].sha256, a.sha256, "reproducible bytes");
    assert_eq!(fresh.artifacts[0].bytes, a.bytes);
}

#[test]
fn vmbench_cache_selects_the_cache_and_a_second_cache_builds_the_same_bytes() {
    let first = tempfile::tempdir().unwrap();
    let (reference, _) = build(&shipped("files-disk"), first.path());
    let second = tempfile::tempdir().unwrap();
    // No other test reads VMBENCH_CACHE: they all name their cache.
    std::env::set_var("VMBENCH_CACHE", second.path());
    let m = recipe::build("files-disk", &mut |_| {}).unwrap();
    let list = images::list().unwrap();
    std::env::remove_var("VMBENCH_CACHE");
    let status = |name: &str| &list.iter().find(|e| e.name == name).unwrap().status;
    assert!(matches!(status("files-disk"), images::Status::Built(b) if *b == m));
    assert!(matches!(status("data-disk"), images::Status::NotBuilt));
    assert!(matches!(status("probe"), images::Status::NotBuilt));
    assert_eq!(list[0].name, "probe");
    assert!(m.artifacts[0].path.starts_with(second.path()));
    assert_eq!(m.artifacts[0].sha256, reference.artifacts[0].sha256);
}

#[test]
fn a_changed_file_changes_the_key_and_the_bytes() {
    let root = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let r = copied_files_disk(root.path());
    let (before, _) = build(&r, cache.path());
    std::fs::write(root.path().join("files/hello.txt"), "changed\n").unwrap();
    let (after, said) = build(&r, cache.path());
    assert!(said > 0);
    assert_ne!(after.input_hash, before.input_hash);
    assert_ne!(after.artifacts[0].sha256, before.artifacts[0].sha256);
    let scratch = tempfile::tempdir().unwrap();
    let raw = to_raw(&after.artifacts[0].path, scratch.path());
    assert_eq!(ext4_cat(&raw, "/hello.txt"), "changed\n");
}

#[test]
fn a_damaged_cache_entry_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let r = shipped("data-disk");
    let (m, _) = build(&r, cache.path());
    std::fs::write(&m.artifacts[0].path, b"garbage").unwrap();
    let (again, said) = build(&r, cache.path());
    assert!(said > 0, "rebuilt");
    assert_eq!(again, m);
    assert_artifact_matches(&again);
}

#[test]
fn raw_disks_are_sparse_files_and_raw_ext4() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("tree")).unwrap();
    std::fs::write(root.path().join("tree/a.txt"), "raw a\n").unwrap();
    let path = root.path().join("raw-disks.toml");
    std::fs::write(
        &path,
        r#"
name = "raw-disks"
description = "raw disks"

[[disk]]
name = "empty"
size_mib = 8
format = "raw"

[[disk]]
name = "fs"
size_mib = 8
format = "raw"
from_dir = "tree"
"#,
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let (m, _) = build(&recipe::load(&path).unwrap(), cache.path());
    let names: Vec<_> = m.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["empty", "fs"]);
    assert_artifact_matches(&m);
    let empty = &m.artifacts[0];
    assert_eq!(empty.bytes, 8 << 20);
    assert!(std::fs::read(&empty.path).unwrap().iter().all(|&b| b == 0));
    assert_eq!(qemu_info(&empty.path)["format"], "raw");
    assert_eq!(m.artifacts[1].bytes, 8 << 20);
    assert_eq!(ext4_cat(&m.artifacts[1].path, "/a.txt"), "raw a\n");
    // Only e2fsprogs was needed: no qcow2 disk.
    assert!(!m.tools.iter().any(|(t, _)| t == "qemu-img"));
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_the_file() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("typo.toml");
    std::fs::write(
        &path,
        "name = \"typo\"\ndescription = \"d\"\n\n[[disk]]\nname = \"data\"\nsize_mib = 8\nfromdir = \"x\"\n",
    )
    .unwrap();
    let e = chain(&recipe::load(&path).unwrap_err());
    assert!(e.contains("fromdir"), "{e}");
    assert!(e.contains(&format!("{}:7:1", path.display())), "{e}");
    assert!(e.contains("from_dir"), "lists the known keys: {e}");
}

#[test]
fn a_missing_from_dir_is_an_error_naming_it() {
    tool("mke2fs");
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("nodir.toml");
    std::fs::write(
        &path,
        "name = \"nodir\"\ndescription = \"d\"\n[[disk]]\nname = \"fs\"\nsize_mib = 8\nfrom_dir = \"no-such-dir\"\n",
    )
    .unwrap();
    let r = recipe::load(&path).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let e = recipe::build_in(&r, cache.path(), &mut |_| {}).unwrap_err();
    assert!(matches!(e, recipe::Error::FromDir { .. }), "{e:?}");
    let e = chain(&e);
    assert!(
        e.contains(&root.path().join("no-such-dir").display().to_string())
            && e.contains("disk `fs`")
            && e.contains("nodir.toml"),
        "{e}"
    );
    assert!(recipe::cached(&r, cache.path()).is_err());
}

#[test]
fn an_unknown_image_names_the_known_ones() {
    let e = recipe::build("no-such-image", &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-image") && e.contains("data-disk") && e.contains("files-disk"),
        "{e}"
    );
}

#[test]
fn tools_are_there() {
    for t in ["qemu-img", "mke2fs", "debugfs", "e2fsck"] {
        tool(t);
    }
}
