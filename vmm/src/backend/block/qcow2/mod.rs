//! qcow2 disk images (versions 2 and 3), specified in QEMU's docs/interop/qcow2.txt: header and
//! extensions ([`header`]), L1/L2 mapping ([`tables`]) with an LRU write-back cache ([`cache`]),
//! refcounts and allocation ([`refcount`]), and the engine serving a [`BlockBackend`]
//! ([`engine`]). Backing chains end in a raw or qcow2 base.
//!
//! [`BlockBackend`]: super::block::BlockBackend

mod cache;
mod create;
mod engine;
mod header;
mod overlap;
mod refcount;
mod tables;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

pub use create::create;
pub use engine::Qcow2;
pub use header::MAGIC;

/// Why an image cannot be opened, or why an I/O on it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("i/o error on the {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("file is truncated: the {what} needs {needed} bytes, the file has {size}")]
    Truncated {
        what: &'static str,
        needed: u64,
        size: u64,
    },
    #[error("not a qcow2 image (bad magic)")]
    BadMagic,
    #[error("unsupported qcow2 version {0}")]
    UnsupportedVersion(u32),
    #[error("cluster_bits {0} is outside 9..=21")]
    BadClusterBits(u32),
    #[error("bad header length {0}")]
    BadHeaderLength(u32),
    #[error("refcount_order {0} is above 6")]
    BadRefcountOrder(u32),
    #[error("encrypted images are not supported (crypt method {0})")]
    Encrypted(u32),
    #[error("unsupported incompatible feature: {name} (bit {bit})")]
    IncompatibleFeature { name: String, bit: u32 },
    #[error(
        "image is marked {0}: it can only be opened read-only (repair: qemu-img check -r all)"
    )]
    NotWritable(&'static str),
    #[error("bad header extension at byte {offset}")]
    BadExtension { offset: u64 },
    #[error("bad backing file name: {0}")]
    BadBackingName(&'static str),
    #[error("virtual size {0} is too large")]
    TooLarge(u64),
    #[error("l1 table has {entries} entries, the disk size needs {needed}")]
    L1TooSmall { entries: u32, needed: u64 },
    #[error("{what} of {bytes} bytes is too large")]
    TableTooLarge { what: &'static str, bytes: u64 },
    #[error(
        "l1 table at {offset:#x} ({bytes} bytes) is past the end of the file ({file_size} bytes)"
    )]
    L1PastEof {
        offset: u64,
        bytes: u64,
        file_size: u64,
    },
    #[error("refcount table at {offset:#x} ({bytes} bytes) is past the end of the file ({file_size} bytes)")]
    RefcountTablePastEof {
        offset: u64,
        bytes: u64,
        file_size: u64,
    },
    #[error("refcount table is empty")]
    EmptyRefcountTable,
    #[error("{what} at {offset:#x} is not cluster aligned")]
    Unaligned { what: &'static str, offset: u64 },
    #[error("{what} at {offset:#x} is past the end of the file")]
    PastEof { what: &'static str, offset: u64 },
    #[error("zero flag set in a version 2 image")]
    ZeroFlagInV2,
    #[error("refcount overflow for the cluster at {offset:#x}")]
    RefcountOverflow { offset: u64 },
    #[error("refcount underflow for the cluster at {offset:#x}")]
    RefcountUnderflow { offset: u64 },
    #[error("compressed cluster at {offset:#x} does not decompress to a cluster")]
    BadCompressed { offset: u64 },
    #[error("backing file {path} is missing")]
    BackingMissing { path: String },
    #[error("backing file loop: {path} is already in the chain")]
    BackingLoop { path: String },
    #[error("backing chain is deeper than {0} images")]
    BackingTooDeep(usize),
    #[error("unsupported backing file format {0:?}")]
    BackingFormat(String),
    #[error("cannot open backing file {path}")]
    Backing {
        path: String,
        #[source]
        source: Box<Error>,
    },
    #[error("cannot open raw backing file")]
    BackingRaw(#[source] super::raw::Error),
    #[error("backing file read failed")]
    BackingRead(#[source] io::Error),
    #[error("o_direct is not supported for qcow2 images")]
    DirectIo,
    #[error("preventing a data write at {offset:#x} onto the {what}: image marked corrupt (repair: qemu-img check -r all)")]
    MetadataOverlap { what: &'static str, offset: u64 },
    #[error("image was marked corrupt after a write onto its metadata: writes are refused")]
    MarkedCorrupt,
    #[error(transparent)]
    Lock(#[from] crate::backend::block::lock::Error),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io { source, .. } | Error::BackingRead(source) => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Reads exactly `buf.len()` bytes; a short file is [`Error::PastEof`], not a generic I/O error.
fn read_at(file: &File, buf: &mut [u8], offset: u64, what: &'static str) -> Result<(), Error> {
    file.read_exact_at(buf, offset).map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            Error::PastEof { what, offset }
        } else {
            Error::Io { what, source }
        }
    })
}

fn write_at(file: &File, buf: &[u8], offset: u64, what: &'static str) -> Result<(), Error> {
    file.write_all_at(buf, offset)
        .map_err(|source| Error::Io { what, source })
}

fn sync(file: &File) -> Result<(), Error> {
    file.sync_data().map_err(|source| Error::Io {
        what: "image file (fdatasync)",
        source,
    })
}

/// True if the file starts with the qcow2 magic. Format detection never looks at the name.
pub fn has_magic(file: &File) -> io::Result<bool> {
    let mut m = [0u8; 4];
    match file.read_exact_at(&mut m, 0) {
        Ok(()) => Ok(m == MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}
