//! The block back-end trait shared by virtio-blk and IDE, and the options every back-end takes.

pub mod qcow2;
pub mod raw;

use std::io;
use std::path::Path;

use vm_memory::VolatileSlice;

/// What a back-end can do beyond read, write and flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockFeatures {
    /// Deallocating ranges (virtio-blk DISCARD).
    pub discard: bool,
    /// Writing zeroes without transferring them (virtio-blk WRITE_ZEROES).
    pub write_zeroes: bool,
}

/// A disk image as a device sees it: a byte-addressed, fixed-size store. Offsets and lengths
/// come from the guest; implementations must check them against the capacity and return
/// `io::ErrorKind::InvalidInput` for anything outside, never read or write past the end.
pub trait BlockBackend: Send {
    /// Size in bytes (a multiple of 512).
    fn capacity(&self) -> u64;
    fn read_only(&self) -> bool;
    fn features(&self) -> BlockFeatures {
        BlockFeatures::default()
    }
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at `offset`; `PermissionDenied` on a read-only disk.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills the guest buffers `bufs`, in order, from `offset`: the data of one request,
    /// split across descriptors. The default reads into `scratch` (kept by the caller across
    /// requests) and copies; back-ends that can, override it to read into guest memory.
    fn read_vectored_at(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        scratch.resize(total_len(bufs)?, 0);
        self.read_at(offset, scratch)?;
        copy_to_slices(scratch, bufs);
        Ok(())
    }
    /// Writes the guest buffers `bufs`, in order, at `offset`; the default copies them into
    /// `scratch` first (see [`BlockBackend::read_vectored_at`]).
    fn write_vectored_at(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        scratch.resize(total_len(bufs)?, 0);
        copy_from_slices(bufs, scratch);
        self.write_at(offset, scratch)
    }
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    fn discard(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn write_zeroes(&mut self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// One line for results and logs: format, path, options.
    fn describe(&self) -> String;
}

/// Checks `[offset, offset + len)` against `capacity`.
pub fn check_range(offset: u64, len: u64, capacity: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("range {offset:#x}+{len:#x} is past the end of the disk ({capacity:#x} bytes)"),
        )),
    }
}

/// The bytes in `bufs` together; `InvalidInput` if they overflow.
pub fn total_len(bufs: &[VolatileSlice]) -> io::Result<usize> {
    bufs.iter()
        .try_fold(0usize, |n, b| n.checked_add(b.len()))
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Copies `src` into `bufs` in order, as far as both go.
pub fn copy_to_slices(mut src: &[u8], bufs: &[VolatileSlice]) {
    for b in bufs {
        let n = b.len().min(src.len());
        b.copy_from(&src[..n]);
        src = &src[n..];
    }
}

/// Copies `bufs` in order into `dst`, as far as both go.
pub fn copy_from_slices(bufs: &[VolatileSlice], mut dst: &mut [u8]) {
    for b in bufs {
        let n = b.copy_to(dst);
        dst = &mut dst[n..];
    }
}

/// Options every back-end accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub read_only: bool,
    /// O_DIRECT: bypass the host page cache (raw files).
    pub direct_io: bool,
    /// The format the user stated; None: recognised from the contents ([`detect_format`]),
    /// and then, as QEMU does, a raw image refuses guest writes that would make its first
    /// sector look like another format.
    pub format: Option<DiskFormat>,
}

pub use crate::kinds::DiskFormat;
pub use format::{detect_format, DetectedFormat};

pub mod format;
pub mod lock;

/// Why a disk image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open disk image {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Raw(#[from] raw::Error),
    #[error(transparent)]
    Format(#[from] format::Error),
    #[error("cannot open qcow2 image {path}")]
    Qcow2 {
        path: String,
        #[source]
        source: qcow2::Error,
    },
}

/// Opens a disk image as qcow2 if it starts with the qcow2 magic, else as a raw file. The
/// format comes from the file's contents, never from its name.
pub fn open_disk(path: &Path, opts: OpenOptions) -> Result<Box<dyn BlockBackend>, DiskError> {
    let format = match opts.format {
        Some(f) => f,
        None => detect_format(path)?,
    };
    if format == DiskFormat::Qcow2 {
        let q = qcow2::Qcow2::open(path, opts).map_err(|source| DiskError::Qcow2 {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Box::new(q))
    } else {
        Ok(Box::new(raw::RawFile::open(path, opts)?))
    }
}
