//! Files a user names on the command line (a scenario, a probe ELF): regular files only, up to
//! a size cap, checked on the opened file so that `/dev/zero`, `/dev/urandom` or a FIFO is
//! refused with one line instead of filling memory or blocking forever.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest scenario file read (shipped ones are a few KiB).
pub const MAX_SCENARIO_BYTES: u64 = 1 << 20;
/// The largest probe ELF taken (the probe's load window is 1 MiB).
pub const MAX_PROBE_BYTES: u64 = 64 << 20;

/// Opens `path` for reading if it is a regular file of at most `cap` bytes; the error says
/// what it is instead. Opened non-blocking, so a FIFO without a writer cannot hang the open.
pub fn open_regular(path: &Path, cap: u64) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    let t = meta.file_type();
    let what = if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}; give a regular file"),
        ));
    }
    if meta.len() > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it is {} bytes, more than the {cap} bytes taken; give the right file",
                meta.len()
            ),
        ));
    }
    Ok(f)
}

/// The contents of a regular file of at most `cap` bytes (a file that grows past the cap
/// while it is read is refused too).
pub fn read_regular(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let f = open_regular(path, cap)?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it grew past {cap} bytes while being read"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_fifos_and_big_files_are_refused_promptly() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", fifo.display());
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(11).unwrap();
        let small = dir.path().join("small");
        std::fs::write(&small, b"0123456789").unwrap();

        for (p, want) in [
            (Path::new("/dev/zero"), "character device"),
            (Path::new("/dev/urandom"), "character device"),
            (dir.path(), "directory"),
            (fifo.as_path(), "FIFO"),
            (big.as_path(), "more than the 10 bytes"),
        ] {
            let e = read_regular(p, 10).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", p.display());
        }
        assert_eq!(read_regular(&small, 10).unwrap(), b"0123456789");
    }
}
