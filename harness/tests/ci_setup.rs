//! `.ci/setup` adds bookworm-backports on the mirror the machine is configured with, read by
//! `.ci/debian-mirror` from apt's sources in both formats (issue 15, item 11).

use std::path::{Path, PathBuf};
use std::process::Command;

fn mirror(root: &Path) -> (String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/debian-mirror");
    let o = Command::new("bash")
        .arg(script)
        .arg(root)
        .arg("bookworm-backports")
        .output()
        .expect("bash runs");
    assert!(o.status.success(), "{o:?}");
    (
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn apt_root(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/apt/sources.list.d")).unwrap();
    for (name, text) in files {
        let p: PathBuf = d.path().join("etc/apt").join(name);
        std::fs::write(p, text).unwrap();
    }
    d
}

#[test]
fn the_one_line_format_gives_the_mirror_and_its_options() {
    let root = apt_root(&[(
        "sources.list",
        "# a comment\ndeb http://security.debian.org/debian-security bookworm-security main\n\
         deb-src http://src.example/debian bookworm main\n\
         deb [arch=amd64 signed-by=/k.gpg] http://mirror.example.org/debian/ bookworm main contrib\n",
    )]);

    let (line, _) = mirror(root.path());

    assert_eq!(
        line,
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example.org/debian bookworm-backports main"
    );
}

#[test]
fn the_deb822_format_gives_the_mirror_and_its_keyring() {
    let root = apt_root(&[(
        "sources.list.d/debian.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n\
         Types: deb\n# a snapshot\nURIs: http://deb.example.net/debian\nSuites: bookworm bookworm-updates\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: http://deb.example.net/debian-security\nSuites: bookworm-security\nComponents: main\n",
    )]);

    let (line, _) = mirror(root.path());

    assert_eq!(
        line,
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.example.net/debian bookworm-backports main"
    );
}

#[test]
fn no_configured_source_falls_back_to_deb_debian_org_and_says_so() {
    let root = apt_root(&[(
        "sources.list.d/other.list",
        "deb http://ppa.example/ubuntu jammy main\n",
    )]);

    let (line, err) = mirror(root.path());

    assert_eq!(
        line,
        "deb http://deb.debian.org/debian bookworm-backports main"
    );
    assert!(err.contains("no enabled 'bookworm' deb source"), "{err}");
}
