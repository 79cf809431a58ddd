//! The block back-end trait shared by virtio-blk and IDE, and the options every back-end takes.

use std::io;

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

/// Options every back-end accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub read_only: bool,
    /// O_DIRECT: bypass the host page cache (raw files).
    pub direct_io: bool,
    /// The format the user stated; None: recognised from the contents ([`detect_format`]),
    /// and then, as QEMU does, a raw image refuses guest writes that would make its first
    /// sector look like another format.
    pub format: Option<ImageFormat>,
}

pub use super::format::{detect_format, DetectedFormat, ImageFormat};
