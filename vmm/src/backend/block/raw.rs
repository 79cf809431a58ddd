//! A raw disk image: the file's bytes are the disk's bytes. Buffered or O_DIRECT.

use std::fs::{File, OpenOptions as FsOpen};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use vm_memory::VolatileSlice;

use super::{
    check_range, copy_from_slices, copy_to_slices, total_len, BlockBackend, BlockFeatures,
    OpenOptions,
};

/// The sector a guessed raw image guards ([`RawFile::guard_first_sector`]).
const FIRST_SECTOR: u64 = 512;
/// O_DIRECT transfers must be aligned to the logical block size; 4 KiB covers every device.
const DIRECT_ALIGN: usize = 4096;

pub struct RawFile {
    file: File,
    path: PathBuf,
    capacity: u64,
    opts: OpenOptions,
    /// Aligned bounce buffer for O_DIRECT.
    bounce: AlignedBuf,
}

/// A heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        AlignedBuf {
            storage: Vec::new(),
            offset: 0,
            len: 0,
        }
    }

    fn get(&mut self, len: usize) -> &mut [u8] {
        if self.len < len {
            self.storage = vec![0u8; len + DIRECT_ALIGN];
            let addr = self.storage.as_ptr() as usize;
            self.offset = addr.next_multiple_of(DIRECT_ALIGN) - addr;
            self.len = len;
        }
        &mut self.storage[self.offset..self.offset + len]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open disk image {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("disk image {path} is {size} bytes, not a multiple of 512")]
    Size { path: String, size: u64 },
    #[error(transparent)]
    Lock(#[from] super::lock::Error),
}

impl RawFile {
    pub fn open(path: &Path, opts: OpenOptions) -> Result<Self, Error> {
        let p = path.display().to_string();
        let mut o = FsOpen::new();
        o.read(true).write(!opts.read_only);
        if opts.direct_io {
            o.custom_flags(libc::O_DIRECT);
        }
        let file = o.open(path).map_err(|e| Error::Open {
            path: p.clone(),
            source: e,
        })?;
        let size = file
            .metadata()
            .map_err(|e| Error::Open {
                path: p.clone(),
                source: e,
            })?
            .len();
        if size % 512 != 0 {
            return Err(Error::Size { path: p, size });
        }
        super::lock::lock(&file, path, super::lock::LockMode::of(&opts))?;
        Ok(RawFile {
            file,
            path: path.to_path_buf(),
            capacity: size,
            opts,
            bounce: AlignedBuf::new(),
        })
    }

    /// The aligned window around `[offset, offset + len)` for O_DIRECT.
    fn window(offset: u64, len: usize) -> (u64, usize) {
        let a = DIRECT_ALIGN as u64;
        let start = offset / a * a;
        let end = (offset + len as u64).div_ceil(a) * a;
        (start, (end - start) as usize)
    }
}

impl BlockBackend for RawFile {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn read_only(&self) -> bool {
        self.opts.read_only
    }

    fn features(&self) -> BlockFeatures {
        BlockFeatures {
            discard: !self.opts.read_only,
            write_zeroes: !self.opts.read_only,
        }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.capacity)?;
        if !self.opts.direct_io {
            return self.file.read_exact_at(buf, offset);
        }
        let (start, len) = Self::window(offset, buf.len());
        let skip = (offset - start) as usize;
        let n = buf.len();
        let b = self.bounce.get(len);
        self.file.read_exact_at(b, start)?;
        buf.copy_from_slice(&b[skip..skip + n]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.opts.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, buf.len() as u64, self.capacity)?;
        if self.opts.format.is_none() && offset < FIRST_SECTOR {
            self.guard_first_sector(offset, buf)?;
        }
        if !self.opts.direct_io {
            return self.file.write_all_at(buf, offset);
        }
        let (start, len) = Self::window(offset, buf.len());
        let skip = (offset - start) as usize;
        let n = buf.len();
        let partial = skip != 0 || n != len;
        let b = self.bounce.get(len);
        if partial {
            // Read-modify-write of the aligned window.
            self.file.read_exact_at(b, start)?;
        }
        b[skip..skip + n].copy_from_slice(buf);
        self.file.write_all_at(b, start)
    }

    /// Straight into guest memory with preadv, unless O_DIRECT and a segment (or the offset)
    /// is not aligned as it requires: then through the aligned bounce buffer.
    fn read_vectored_at(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        _scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        let n = total_len(bufs)?;
        check_range(offset, n as u64, self.capacity)?;
        if !self.opts.direct_io || direct_aligned(offset, bufs) {
            return crate::sys::preadv_exact(&self.file, bufs, offset);
        }
        let (start, len) = Self::window(offset, n);
        let skip = (offset - start) as usize;
        let b = self.bounce.get(len);
        self.file.read_exact_at(b, start)?;
        copy_to_slices(&b[skip..skip + n], bufs);
        Ok(())
    }

    /// Straight from guest memory with pwritev, unless O_DIRECT and a segment (or the
    /// offset) is not aligned: then through the aligned bounce buffer (read-modify-write of
    /// partial blocks).
    fn write_vectored_at(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        _scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        if self.opts.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let n = total_len(bufs)?;
        check_range(offset, n as u64, self.capacity)?;
        if !self.opts.direct_io || direct_aligned(offset, bufs) {
            return crate::sys::pwritev_all(&self.file, bufs, offset);
        }
        let (start, len) = Self::window(offset, n);
        let skip = (offset - start) as usize;
        let partial = skip != 0 || n != len;
        let b = self.bounce.get(len);
        if partial {
            self.file.read_exact_at(b, start)?;
        }
        copy_from_slices(bufs, &mut b[skip..skip + n]);
        self.file.write_all_at(b, start)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.punch(
            offset,
            len,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        // Punching a hole reads back as zeroes and keeps the size.
        self.punch(
            offset,
            len,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        )
    }

    fn describe(&self) -> String {
        format!(
            "raw {}{}{}",
            self.path.display(),
            if self.opts.direct_io { " O_DIRECT" } else { "" },
            if self.opts.read_only {
                " read-only"
            } else {
                ""
            }
        )
    }
}

/// Whether O_DIRECT can take `bufs` at `offset` as they are: the offset and every segment's
/// address and length multiples of [`DIRECT_ALIGN`].
fn direct_aligned(offset: u64, bufs: &[VolatileSlice]) -> bool {
    let a = DIRECT_ALIGN;
    offset.is_multiple_of(a as u64)
        && bufs.iter().all(|b| {
            b.len().is_multiple_of(a) && (b.ptr_guard().as_ptr() as usize).is_multiple_of(a)
        })
}

impl RawFile {
    /// The image's format was guessed: a write that would make its first sector look like
    /// another format (a qcow2 header naming a backing file on the host, say) is refused, as
    /// QEMU refuses it, so that the next open does not take the guest's word for the format.
    fn guard_first_sector(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let n = FIRST_SECTOR.min(self.capacity) as usize;
        let mut sector = vec![0u8; n];
        self.read_at(0, &mut sector)?;
        let at = offset as usize;
        let take = (n - at).min(buf.len());
        sector[at..at + take].copy_from_slice(&buf[..take]);
        match super::format::detect_bytes(&sector, None) {
            super::format::DetectedFormat::Served(super::DiskFormat::Raw) => Ok(()),
            other => Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "write refused: it would make the first sector of {} (probed as raw) look like {other:?}",
                    self.path.display()
                ),
            )),
        }
    }

    fn punch(&mut self, offset: u64, len: u64, mode: i32) -> io::Result<()> {
        if self.opts.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, len, self.capacity)?;
        crate::sys::fallocate(&self.file, mode, offset, len)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::block::DiskFormat;

    fn image(bytes: usize) -> (tempdir::Dir, PathBuf) {
        let d = tempdir::Dir::new();
        let p = d.0.join("disk.raw");
        std::fs::write(&p, vec![0u8; bytes]).unwrap();
        (d, p)
    }

    /// A directory removed on drop (tests only; no extra crate).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p =
                    std::env::temp_dir().join(format!("vmbench-raw-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn writes_read_back_buffered_and_direct() {
        for direct_io in [false, true] {
            let (_d, p) = image(1 << 20);
            let mut f = RawFile::open(
                &p,
                OpenOptions {
                    direct_io,
                    read_only: false,
                    format: None,
                },
            )
            .unwrap();
            let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();

            f.write_at(4096 + 100, &data).unwrap();
            let mut back = vec![0u8; 3000];
            f.read_at(4096 + 100, &mut back).unwrap();
            f.flush().unwrap();

            assert_eq!(back, data, "direct_io={direct_io}");
            let file = std::fs::read(&p).unwrap();
            assert_eq!(&file[4196..7196], &data[..]);
            assert!(file[..4196].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn out_of_range_is_invalid_input_and_read_only_refuses_writes() {
        let (_d, p) = image(8192);
        let mut f = RawFile::open(
            &p,
            OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut buf = [0u8; 512];
        assert_eq!(
            f.read_at(8192 - 256, &mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            f.read_at(u64::MAX, &mut buf).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            f.write_at(0, &buf).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(f.read_only());
    }

    #[test]
    fn write_zeroes_and_discard_zero_the_range() {
        let (_d, p) = image(1 << 16);
        let mut f = RawFile::open(&p, OpenOptions::default()).unwrap();
        f.write_at(0, &[0xaa; 1 << 16]).unwrap();
        f.write_zeroes(4096, 8192).unwrap();
        f.discard(32768, 4096).unwrap();
        let file = std::fs::read(&p).unwrap();
        assert!(file[4096..12288].iter().all(|&b| b == 0));
        assert!(file[32768..36864].iter().all(|&b| b == 0));
        assert_eq!(file[0], 0xaa);
        assert_eq!(file[12288], 0xaa);
        assert_eq!(file.len(), 1 << 16);
    }

    #[test]
    fn size_not_a_multiple_of_512_is_refused() {
        let (_d, p) = image(1000);
        assert!(matches!(
            RawFile::open(&p, OpenOptions::default()),
            Err(Error::Size { size: 1000, .. })
        ));
    }

    #[test]
    fn a_guessed_raw_image_refuses_writes_that_make_it_look_like_another_format() {
        let (_d, p) = image(1 << 16);
        let mut guessed = RawFile::open(&p, OpenOptions::default()).unwrap();
        let mut qcow2_header = vec![0u8; 512];
        qcow2_header[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");

        let header = guessed.write_at(0, &qcow2_header);
        let piecewise = guessed.write_at(1, b"DMV"); // "\0DMV" is harmless...
        let completes = guessed.write_at(0, b"K"); // ...until "KDMV"
        let partition_table = guessed.write_at(446, &[0x80; 66]);
        let elsewhere = guessed.write_at(512, &qcow2_header);
        drop(guessed);
        let mut stated = RawFile::open(
            &p,
            OpenOptions {
                format: Some(DiskFormat::Raw),
                ..Default::default()
            },
        )
        .unwrap();
        let stated_header = stated.write_at(0, &qcow2_header);

        assert_eq!(header.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert!(piecewise.is_ok());
        assert_eq!(
            completes.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert!(partition_table.is_ok());
        assert!(elsewhere.is_ok());
        assert!(stated_header.is_ok(), "a stated raw format takes any write");
        assert_eq!(&std::fs::read(&p).unwrap()[..4], b"QFI\xfb");
    }
}
