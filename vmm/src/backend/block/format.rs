//! Disk image formats, recognised by their contents as QEMU's format probes recognise them
//! (magic numbers at the start, or a footer in the last sector), never by the file's name.
//! vmbench serves raw and qcow2; an image in any other format QEMU knows is refused, naming the
//! format, instead of being served as raw and having its header overwritten by the guest.
//!
//! Where each magic is: QEMU's block drivers' `probe` functions and the formats' specs (VMDK,
//! VDI, VHD and VHDX, LUKS, QED, DMG's UDIF trailer, Parallels, Bochs, cloop).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub use crate::kinds::DiskFormat;

/// What the contents of an image say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectedFormat {
    /// A format vmbench serves.
    Served(DiskFormat),
    /// A format QEMU knows and vmbench does not serve, by QEMU's name for it.
    Foreign(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read disk image {path}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "disk image {path} is a {format} image, which vmbench does not serve (convert it: qemu-img convert -O qcow2 {path} NEW.qcow2)"
    )]
    Unsupported { path: String, format: &'static str },
}

/// Bytes read from the start of an image: every magic QEMU probes sits in the first 512
/// bytes but VDI's (at 0x40 after a 64-byte text line) and cloop's script line.
pub const HEAD_BYTES: usize = 512;
/// Footers (VHD fixed disks, DMG) live in the last 512 bytes.
pub const TAIL_BYTES: usize = 512;

const QCOW_MAGIC: &[u8; 4] = b"QFI\xfb";

/// Recognises a format from the first bytes of an image (`head`, up to [`HEAD_BYTES`]) and its
/// last sector (`tail`, if the image is longer than one). Pure: what [`detect_format`] and the
/// raw back-end's first-sector guard use.
pub fn detect_bytes(head: &[u8], tail: Option<&[u8]>) -> DetectedFormat {
    use DetectedFormat::{Foreign, Served};
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    let be32 = |off: usize| {
        head.get(off..off + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if at(0, QCOW_MAGIC) {
        return match be32(4) {
            Some(1) => Foreign("qcow"),
            _ => Served(DiskFormat::Qcow2),
        };
    }
    if looks_like_damaged_qcow2(head) {
        return Foreign("qcow2 with a damaged magic");
    }
    let starts = [
        (&b"KDMV"[..], "vmdk"),
        (b"COWD", "vmdk"),
        (b"# Disk DescriptorFile", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "vpc"),
        (b"LUKS\xba\xbe", "luks"),
        (b"QED\0", "qed"),
        (b"WithoutFreeSpace", "parallels"),
        (b"WithouFreSpacExt", "parallels"),
        (b"Bochs Virtual HD Image", "bochs"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>", "vdi"),
        (b"<<< QEMU VM Virtual Disk Image >>>", "vdi"),
        (b"#!/bin/sh\n#V2.0 Format\nmodprobe cloop", "cloop"),
    ];
    for (magic, name) in starts {
        if at(0, magic) {
            return Foreign(name);
        }
    }
    // VDI's signature word, after its 64-byte text line.
    if at(0x40, &0xbeda_107fu32.to_le_bytes()) {
        return Foreign("vdi");
    }
    if let Some(t) = tail {
        if t.starts_with(b"conectix") {
            return Foreign("vpc");
        }
        if t.starts_with(b"koly") {
            return Foreign("dmg");
        }
    }
    Served(DiskFormat::Raw)
}

/// A qcow2 header whose magic is off by one byte: version 2 or 3, sane cluster bits and a
/// header length that fits. Served as raw, the guest would destroy what is left of it.
fn looks_like_damaged_qcow2(head: &[u8]) -> bool {
    let Some(magic) = head.get(..4) else {
        return false;
    };
    let off_by_one = magic.iter().zip(QCOW_MAGIC).filter(|(a, b)| a != b).count() == 1;
    let be32 = |off: usize| {
        head.get(off..off + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let version = be32(4);
    let cluster_bits = be32(20);
    off_by_one && matches!(version, 2 | 3) && (9..=21).contains(&cluster_bits)
}

/// What the image at `path` is, or why vmbench will not serve it.
pub fn detect_format(path: &Path) -> Result<DiskFormat, Error> {
    let read_err = |source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let mut head = vec![0u8; HEAD_BYTES.min(size as usize)];
    file.read_exact_at(&mut head, 0).map_err(read_err)?;
    let mut tail = vec![0u8; TAIL_BYTES];
    let tail = if size >= 2 * TAIL_BYTES as u64 {
        file.read_exact_at(&mut tail, size - TAIL_BYTES as u64)
            .map_err(read_err)?;
        Some(&tail[..])
    } else {
        None
    };
    match detect_bytes(&head, tail) {
        DetectedFormat::Served(f) => Ok(f),
        DetectedFormat::Foreign(format) => Err(Error::Unsupported {
            path: path.display().to_string(),
            format,
        }),
    }
}

#[cfg(test)]
mod tests;
