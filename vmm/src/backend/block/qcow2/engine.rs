//! The qcow2 engine: opens an image and its backing chain, maps guest reads and writes onto
//! clusters, allocates with copy-on-write, and writes metadata back in crash-safe order.
//!
//! Write-back order on flush (a crash at any point leaves leaks at worst, never a reference to
//! a cluster whose refcount is too low):
//! 1. data clusters are written as the guest writes them;
//! 2. refcount blocks with the increments for new clusters (and any new refcount table);
//! 3. fdatasync: data and increments are durable;
//! 4. dirty L2 tables, then dirty L1 entries;
//! 5. fdatasync: the new mapping is durable;
//! 6. decrements for clusters the new mapping dropped (copy-on-write, discard), then fdatasync.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions as FsOpen};
use std::io;
use std::path::{Path, PathBuf};

use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

mod vectored;

use super::cache::TableCache;
use super::header::{incompat, Header, OFF_AUTOCLEAR, OFF_INCOMPATIBLE};
use super::overlap::{self, Layout};
use super::refcount::{write_entries, Refcounts};
use super::tables::{
    decode_l1, decode_l2, table_from_bytes, table_to_bytes, Mapping, COPIED, ZERO,
};
use super::{has_magic, read_at, sync, write_at, Error};
use crate::backend::block::lock::{self, LockMode};
use crate::backend::block::raw::RawFile;
use crate::backend::block::{check_range, total_len, BlockBackend, BlockFeatures, OpenOptions};
use vm_memory::VolatileSlice;

/// The L2 cache holds the tables for the whole disk, up to this many bytes of them.
const MAX_L2_CACHE_BYTES: u64 = 32 << 20;
/// Longest backing chain followed (a loop is caught earlier, by path).
pub const MAX_CHAIN: usize = 32;
/// The first read at open: enough for any header cluster (2 MiB clusters at most).
const HEADER_READ: u64 = 2 << 20;

/// Where [`Qcow2::flush_until`] stops, to test what a crash at each step leaves on disk.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Refcounts,
    Tables,
}

/// A qcow2 image opened as a block back-end.
pub struct Qcow2 {
    file: File,
    path: PathBuf,
    header: Header,
    read_only: bool,
    l1: Vec<u64>,
    l1_dirty: BTreeSet<usize>,
    l2: TableCache<Vec<u64>>,
    /// Loaded only for writable images: reads never need refcounts.
    refcounts: Option<Refcounts>,
    backing: Option<Box<dyn BlockBackend>>,
    /// The last decompressed cluster, keyed by its compressed host offset.
    inflated: Option<u64>,
    inflate_buf: Vec<u8>,
    inflater: Box<DecompressorOxide>,
    /// A cluster-sized buffer for copy-on-write merges.
    scratch: Vec<u8>,
    /// A cluster of zeroes, for writing zeroes where no zero flag can do it.
    zeros: Vec<u8>,
    /// A data write was about to land on metadata: the image is marked corrupt and nothing
    /// more is written to it, data or metadata.
    corrupt: bool,
}

impl Qcow2 {
    /// Opens an image and its backing chain. Backing files are opened read-only.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<Self, Error> {
        Self::open_in_chain(path, opts, &mut Vec::new())
    }

    fn open_in_chain(
        path: &Path,
        opts: OpenOptions,
        chain: &mut Vec<PathBuf>,
    ) -> Result<Self, Error> {
        let p = path.display().to_string();
        let open_err = |source| Error::Open {
            path: p.clone(),
            source,
        };
        if opts.direct_io {
            return Err(Error::DirectIo);
        }
        let canonical = std::fs::canonicalize(path).map_err(open_err)?;
        if chain.contains(&canonical) {
            return Err(Error::BackingLoop { path: p.clone() });
        }
        if chain.len() >= MAX_CHAIN {
            return Err(Error::BackingTooDeep(MAX_CHAIN));
        }
        chain.push(canonical);
        let file = FsOpen::new()
            .read(true)
            .write(!opts.read_only)
            .open(path)
            .map_err(open_err)?;
        // Locked before anything is read: another writer may be changing the metadata.
        lock::lock(&file, path, LockMode::of(&opts))?;
        let file_size = file.metadata().map_err(open_err)?.len();
        let mut first = vec![0u8; file_size.min(HEADER_READ) as usize];
        read_at(&file, &mut first, 0, "header")?;
        let header = Header::parse(&first, file_size)?;
        drop(first);

        if !opts.read_only {
            if header.incompatible_features & incompat::DIRTY != 0 {
                return Err(Error::NotWritable("dirty"));
            }
            if header.incompatible_features & incompat::CORRUPT != 0 {
                return Err(Error::NotWritable("corrupt"));
            }
        }
        let mut raw_l1 = vec![0u8; header.l1_size as usize * 8];
        read_at(&file, &mut raw_l1, header.l1_table_offset, "l1 table")?;
        let l1 = table_from_bytes(&raw_l1);

        let refcounts = if opts.read_only {
            None
        } else {
            if header.autoclear_features != 0 && header.version >= 3 {
                // The spec lets a writer that does not know the auto-clear features (bitmaps,
                // raw external data) write only after clearing them.
                write_at(&file, &[0u8; 8], OFF_AUTOCLEAR, "header")?;
                sync(&file)?;
            }
            Some(Refcounts::load(
                &file,
                header.cluster_bits,
                header.refcount_order,
                header.refcount_table_offset,
                header.refcount_table_clusters,
                file_size,
            )?)
        };

        let backing = match &header.backing_file {
            None => None,
            Some(name) => {
                let bp = resolve_backing(path, name);
                Some(open_backing(&bp, header.backing_format.as_deref(), chain)?)
            }
        };
        let cs = header.cluster_size();
        let l2_tables = header
            .l1_entries_needed()
            .min(MAX_L2_CACHE_BYTES >> header.cluster_bits)
            .max(4);
        Ok(Qcow2 {
            file,
            path: path.to_path_buf(),
            read_only: opts.read_only,
            l1,
            l1_dirty: BTreeSet::new(),
            l2: TableCache::new(l2_tables as usize),
            refcounts,
            backing,
            inflated: None,
            inflate_buf: vec![0u8; cs as usize],
            inflater: Box::default(),
            scratch: vec![0u8; cs as usize],
            zeros: vec![0u8; cs as usize],
            corrupt: false,
            header,
        })
    }

    /// The parsed header (for tests and tools).
    pub fn header_version(&self) -> u32 {
        self.header.version
    }

    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// How many L2 tables the cache holds before evicting.
    pub fn l2_cache_tables(&self) -> usize {
        self.l2.capacity()
    }

    fn cs(&self) -> u64 {
        self.header.cluster_size()
    }

    /// L1 index and L2 index of guest offset `pos`.
    fn indices(&self, pos: u64) -> (usize, usize) {
        let cluster = pos >> self.header.cluster_bits;
        let per = self.header.l2_entries();
        ((cluster / per) as usize, (cluster % per) as usize)
    }

    /// Loads the L2 table at `off` into the cache.
    fn load_l2(&mut self, off: u64) -> Result<(), Error> {
        if !self.l2.contains(off) {
            let mut raw = vec![0u8; self.cs() as usize];
            read_at(&self.file, &mut raw, off, "l2 table")?;
            self.l2.insert(off, table_from_bytes(&raw), false);
        }
        Ok(())
    }

    /// What guest offset `pos` maps to, without allocating anything.
    fn lookup(&mut self, pos: u64) -> Result<Mapping, Error> {
        let (l1i, l2i) = self.indices(pos);
        let Some(&l1e) = self.l1.get(l1i) else {
            return Ok(Mapping::Unallocated);
        };
        let (Some(off), _) = decode_l1(l1e, self.header.cluster_bits)? else {
            return Ok(Mapping::Unallocated);
        };
        self.load_l2(off)?;
        let entry = self.l2.get(off).expect("just loaded")[l2i];
        decode_l2(entry, self.header.cluster_bits, self.header.version)
    }

    fn refcounts(&mut self) -> &mut Refcounts {
        self.refcounts
            .as_mut()
            .expect("writable image has refcounts")
    }

    fn read_inner(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let cs = self.cs();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let within = pos % cs;
            let n = ((cs - within) as usize).min(buf.len() - done);
            let chunk = &mut buf[done..done + n];
            match self.lookup(pos)? {
                Mapping::Unallocated => self.read_backing(pos, chunk)?,
                Mapping::Zero { .. } => chunk.fill(0),
                Mapping::Data { host, .. } => {
                    read_at(&self.file, chunk, host + within, "data cluster")?
                }
                m @ Mapping::Compressed { .. } => {
                    self.inflate(m)?;
                    let w = within as usize;
                    chunk.copy_from_slice(&self.inflate_buf[w..w + n]);
                }
            }
            done += n;
        }
        Ok(())
    }

    /// Reads from the backing file, zeroes past its end (or everywhere without one).
    fn read_backing(&mut self, pos: u64, chunk: &mut [u8]) -> Result<(), Error> {
        let Some(b) = self.backing.as_mut() else {
            chunk.fill(0);
            return Ok(());
        };
        let cap = b.capacity();
        let have = cap.saturating_sub(pos).min(chunk.len() as u64) as usize;
        if have > 0 {
            b.read_at(pos, &mut chunk[..have])
                .map_err(Error::BackingRead)?;
        }
        chunk[have..].fill(0);
        Ok(())
    }

    /// Decompresses a compressed cluster into `inflate_buf` (raw deflate, as QEMU writes it).
    fn inflate(&mut self, m: Mapping) -> Result<(), Error> {
        let Mapping::Compressed { host, len, .. } = m else {
            return Ok(());
        };
        if self.inflated == Some(host) {
            return Ok(());
        }
        self.inflated = None;
        // The last compressed cluster's final sector may be cut short by the end of the file.
        let mut input = vec![0u8; len as usize];
        let mut got = 0usize;
        while got < input.len() {
            match std::os::unix::fs::FileExt::read_at(
                &self.file,
                &mut input[got..],
                host + got as u64,
            ) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        what: "compressed cluster",
                        source,
                    })
                }
            }
        }
        if got == 0 {
            return Err(Error::PastEof {
                what: "compressed cluster",
                offset: host,
            });
        }
        self.inflater.init();
        let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
        let (status, _, out) = decompress(
            &mut self.inflater,
            &input[..got],
            &mut self.inflate_buf,
            0,
            flags,
        );
        // Decompression stops when it has produced a cluster; the stream may go on.
        let ok = matches!(status, TINFLStatus::Done | TINFLStatus::HasMoreOutput);
        if !ok || out != self.inflate_buf.len() {
            return Err(Error::BadCompressed { offset: host });
        }
        self.inflated = Some(host);
        Ok(())
    }

    /// The L2 table covering `pos`, writable in place (allocated or copied as needed): its host
    /// offset and the entry index.
    fn l2_for_write(&mut self, pos: u64) -> Result<(u64, usize), Error> {
        let (l1i, l2i) = self.indices(pos);
        let (old, copied) = decode_l1(self.l1[l1i], self.header.cluster_bits)?;
        match old {
            Some(off) if copied => {
                self.load_l2(off)?;
                Ok((off, l2i))
            }
            Some(off) => {
                // Shared with a snapshot: copy it. The data clusters it maps keep their counts
                // (the snapshot's table still references them once, the copy once more).
                self.load_l2(off)?;
                let table = self.l2.remove(off).expect("just loaded");
                let new = self.alloc()?;
                self.l2.insert(new, table, true);
                let cs = self.cs();
                self.refcounts().defer_free(off, cs);
                self.set_l1(l1i, new);
                Ok((new, l2i))
            }
            None => {
                let new = self.alloc()?;
                let entries = self.header.l2_entries() as usize;
                self.l2.insert(new, vec![0u64; entries], true);
                self.set_l1(l1i, new);
                Ok((new, l2i))
            }
        }
    }

    fn set_l1(&mut self, l1i: usize, l2_off: u64) {
        self.l1[l1i] = l2_off | COPIED;
        self.l1_dirty.insert(l1i);
    }

    fn alloc(&mut self) -> Result<u64, Error> {
        let file = &self.file;
        self.refcounts
            .as_mut()
            .expect("writable image has refcounts")
            .alloc(file)
    }

    fn set_l2(&mut self, l2_off: u64, l2i: usize, entry: u64) {
        self.l2.get_mut(l2_off).expect("l2 table in cache")[l2i] = entry;
    }

    /// Writes `data` (inside one cluster) at guest offset `pos`.
    fn write_cluster(&mut self, pos: u64, data: &[u8]) -> Result<(), Error> {
        let cs = self.cs();
        let within = (pos % cs) as usize;
        let full = data.len() as u64 == cs;
        let (l2_off, l2i) = self.l2_for_write(pos)?;
        let entry = self.l2.get(l2_off).expect("l2 table in cache")[l2i];
        let m = decode_l2(entry, self.header.cluster_bits, self.header.version)?;
        match m {
            Mapping::Data { host, copied: true } => {
                self.guard(host + within as u64, data.len() as u64)?;
                return write_at(&self.file, data, host + within as u64, "data cluster");
            }
            Mapping::Zero {
                host: Some(host),
                copied: true,
            } => {
                // Preallocated zero cluster: fill it, keep it.
                self.guard(host, cs)?;
                self.scratch.fill(0);
                self.scratch[within..within + data.len()].copy_from_slice(data);
                write_at(&self.file, &self.scratch, host, "data cluster")?;
                self.set_l2(l2_off, l2i, host | COPIED);
                return Ok(());
            }
            _ => {}
        }
        // Copy-on-write into a new cluster: from the backing file, a shared or compressed
        // cluster, or zeroes.
        let new = self.alloc()?;
        self.guard(new, cs)?;
        if full {
            write_at(&self.file, data, new, "data cluster")?;
        } else {
            let mut buf = std::mem::take(&mut self.scratch);
            let base = pos - within as u64;
            let filled = match m {
                Mapping::Unallocated => self.read_backing(base, &mut buf),
                Mapping::Data { host, .. } => read_at(&self.file, &mut buf, host, "data cluster"),
                Mapping::Compressed { .. } => self
                    .inflate(m)
                    .map(|()| buf.copy_from_slice(&self.inflate_buf)),
                Mapping::Zero { .. } => {
                    buf.fill(0);
                    Ok(())
                }
            };
            let written = filled.and_then(|()| {
                buf[within..within + data.len()].copy_from_slice(data);
                write_at(&self.file, &buf, new, "data cluster")
            });
            self.scratch = buf;
            written?;
        }
        self.set_l2(l2_off, l2i, new | COPIED);
        self.free_mapping(m);
        Ok(())
    }

    /// Refuses a data write to host `[offset, offset + len)` if it would land on metadata
    /// (QEMU's `overlap-check=cached`): the image is then marked corrupt, as QEMU marks it.
    fn guard(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        if self.corrupt {
            return Err(Error::MarkedCorrupt);
        }
        let rc = self
            .refcounts
            .as_ref()
            .expect("writable image has refcounts");
        let layout = Layout {
            cluster_bits: self.header.cluster_bits,
            l1_offset: self.header.l1_table_offset,
            l1: &self.l1,
            refcount_table_offset: rc.table_offset(),
            refcount_table_bytes: rc.table().len() as u64 * 8,
            refcount_table: rc.table(),
            snapshots_offset: self.header.snapshots_offset,
            nb_snapshots: self.header.nb_snapshots,
        };
        let Some(hit) = overlap::check(&layout, offset, len) else {
            return Ok(());
        };
        self.mark_corrupt();
        Err(Error::MetadataOverlap {
            what: hit.name(),
            offset,
        })
    }

    /// Sets the header's corrupt bit (version 3; version 2 has no feature bits and is only
    /// refused in this process) and stops every later write.
    fn mark_corrupt(&mut self) {
        self.corrupt = true;
        if self.header.version < 3 {
            return;
        }
        self.header.incompatible_features |= incompat::CORRUPT;
        let bits = self.header.incompatible_features.to_be_bytes();
        let marked =
            write_at(&self.file, &bits, OFF_INCOMPATIBLE, "header").and_then(|()| sync(&self.file));
        if let Err(e) = marked {
            log::error!(
                "qcow2 {}: cannot mark the image corrupt: {e}",
                self.path.display()
            );
        }
    }

    /// Defers the refcount decrement of whatever `m` pointed to.
    fn free_mapping(&mut self, m: Mapping) {
        let cs = self.cs();
        let rc = self.refcounts();
        match m {
            Mapping::Data { host, .. }
            | Mapping::Zero {
                host: Some(host), ..
            } => rc.defer_free(host, cs),
            Mapping::Compressed { sectors, .. } => rc.defer_free(sectors.0, sectors.1),
            Mapping::Unallocated | Mapping::Zero { host: None, .. } => {}
        }
    }

    fn write_inner(&mut self, offset: u64, buf: &[u8]) -> Result<(), Error> {
        if self.corrupt {
            return Err(Error::MarkedCorrupt);
        }
        self.writeback_if_full()?;
        let cs = self.cs();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let n = ((cs - pos % cs) as usize).min(buf.len() - done);
            self.write_cluster(pos, &buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Makes `[offset, offset + len)` read as zeroes. Whole clusters become zero clusters (v3)
    /// or are deallocated; `dealloc` also drops preallocated clusters (discard).
    fn zero_range(&mut self, offset: u64, len: u64, dealloc: bool) -> Result<(), Error> {
        if self.corrupt {
            return Err(Error::MarkedCorrupt);
        }
        self.writeback_if_full()?;
        let cs = self.cs();
        let end = offset + len;
        let mut pos = offset;
        while pos < end {
            let n = (cs - pos % cs).min(end - pos);
            let m = self.lookup(pos)?;
            let reads_zero = match m {
                Mapping::Zero { .. } => true,
                Mapping::Unallocated => self.backing.is_none(),
                _ => false,
            };
            if n == cs {
                self.zero_cluster(pos, m, reads_zero, dealloc)?;
            } else if !reads_zero {
                self.write_zeroes_in(pos, n as usize)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Writes `n` real zero bytes at `pos` (inside one cluster).
    fn write_zeroes_in(&mut self, pos: u64, n: usize) -> Result<(), Error> {
        let zeros = std::mem::take(&mut self.zeros);
        let r = self.write_cluster(pos, &zeros[..n]);
        self.zeros = zeros;
        r
    }

    /// Makes one whole cluster read as zeroes: a zero cluster (v3; keeping a cluster we own
    /// unless `dealloc`), an unallocated one (no backing file), or real zeroes (v2 over a
    /// backing file, which has no zero flag to hide it).
    fn zero_cluster(
        &mut self,
        pos: u64,
        m: Mapping,
        reads_zero: bool,
        dealloc: bool,
    ) -> Result<(), Error> {
        let holds_cluster = !matches!(m, Mapping::Unallocated | Mapping::Zero { host: None, .. });
        if reads_zero && !(dealloc && holds_cluster) {
            return Ok(());
        }
        let v3 = self.header.version >= 3;
        let has_backing = self.backing.is_some();
        if !v3 && has_backing {
            return self.write_zeroes_in(pos, self.cs() as usize);
        }
        let (l2_off, l2i) = self.l2_for_write(pos)?;
        let entry = match m {
            Mapping::Data { host, copied: true }
            | Mapping::Zero {
                host: Some(host),
                copied: true,
            } if v3 && !dealloc => host | COPIED | ZERO,
            _ if has_backing => ZERO,
            _ => 0,
        };
        self.set_l2(l2_off, l2i, entry);
        if entry & COPIED == 0 {
            self.free_mapping(m);
        }
        Ok(())
    }

    /// Writes metadata back when the caches are past their capacity (dirty tables are never
    /// evicted unwritten).
    fn writeback_if_full(&mut self) -> Result<(), Error> {
        let rc_full = self.refcounts.as_ref().is_some_and(|r| r.over_capacity());
        if self.l2.over_capacity() || rc_full {
            self.flush_metadata(None)?;
        }
        Ok(())
    }

    /// Writes back everything, in the order described at the top of this file.
    fn flush_metadata(&mut self, stop: Option<Stage>) -> Result<(), Error> {
        if self.read_only {
            return Ok(());
        }
        if self.corrupt {
            // The tables in memory may point anywhere: writing them could spread the damage.
            return Err(Error::MarkedCorrupt);
        }
        let file = &self.file;
        let rc = self
            .refcounts
            .as_mut()
            .expect("writable image has refcounts");
        rc.write_increments(file)?;
        sync(file)?;
        if stop == Some(Stage::Refcounts) {
            return Ok(());
        }
        if self.l2.has_dirty() || !self.l1_dirty.is_empty() {
            for off in self.l2.dirty_keys() {
                let t = self.l2.peek(off).expect("dirty key");
                write_at(file, &table_to_bytes(t), off, "l2 table")?;
                self.l2.mark_clean(off);
            }
            write_entries(file, &self.l1, self.header.l1_table_offset, &self.l1_dirty)?;
            self.l1_dirty.clear();
            sync(file)?;
        }
        if stop == Some(Stage::Tables) {
            return Ok(());
        }
        if rc.has_deferred() {
            rc.write_deferred_frees(file)?;
            sync(file)?;
        }
        Ok(())
    }

    /// Test hook: runs the write-back up to `stage`, as a crash there would leave it.
    #[cfg(test)]
    pub(super) fn flush_until(&mut self, stage: Stage) -> Result<(), Error> {
        self.flush_metadata(Some(stage))
    }

    /// Test hook: closes the image as a crash would, with no write-back (the file and its
    /// lock are released, as the kernel releases them for a dead process).
    #[cfg(test)]
    pub(super) fn crash(mut self) {
        self.read_only = true;
    }

    /// The refcount of the host cluster at `offset` (tests).
    #[cfg(test)]
    pub(super) fn refcount_of(&mut self, offset: u64) -> Result<u64, Error> {
        let file = &self.file;
        let bits = self.header.cluster_bits;
        self.refcounts
            .as_mut()
            .expect("writable")
            .get(file, offset >> bits)
    }

    /// Shrinks the caches so that writes overflow them (tests of write-back on eviction).
    #[cfg(test)]
    pub(super) fn set_cache_sizes(&mut self, l2_tables: usize, refcount_blocks: usize) {
        self.l2.set_capacity(l2_tables);
        if let Some(r) = self.refcounts.as_mut() {
            r.set_block_cache(refcount_blocks);
        }
    }

    #[cfg(test)]
    pub(super) fn l2_cached(&self) -> usize {
        self.l2.len()
    }

    #[cfg(test)]
    pub(super) fn adjust_refcount(&mut self, offset: u64, delta: i8) -> Result<u64, Error> {
        let file = &self.file;
        let bits = self.header.cluster_bits;
        self.refcounts
            .as_mut()
            .expect("writable")
            .adjust(file, offset >> bits, delta)
    }
}

/// Relative backing names are relative to the overlay's directory.
fn resolve_backing(overlay: &Path, name: &str) -> PathBuf {
    let n = Path::new(name);
    if n.is_absolute() {
        n.to_path_buf()
    } else {
        overlay.parent().unwrap_or(Path::new(".")).join(n)
    }
}

/// Opens a backing file read-only: qcow2 (continuing the chain) or raw. The format comes from
/// the overlay's backing format extension, else from the file's magic.
fn open_backing(
    path: &Path,
    format: Option<&str>,
    chain: &mut Vec<PathBuf>,
) -> Result<Box<dyn BlockBackend>, Error> {
    let p = path.display().to_string();
    let ro = OpenOptions {
        read_only: true,
        direct_io: false,
        format: None,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::BackingMissing { path: p })
        }
        Err(source) => return Err(Error::Open { path: p, source }),
    };
    let qcow2 = match format {
        Some("qcow2") => true,
        Some("raw") => false,
        None => has_magic(&file).map_err(|source| Error::Open {
            path: p.clone(),
            source,
        })?,
        Some(other) => return Err(Error::BackingFormat(other.to_string())),
    };
    drop(file);
    if qcow2 {
        match Qcow2::open_in_chain(path, ro, chain) {
            Ok(q) => Ok(Box::new(q)),
            // These already name the file and are what the user must fix.
            Err(
                e @ (Error::BackingMissing { .. }
                | Error::BackingLoop { .. }
                | Error::BackingTooDeep(_)),
            ) => Err(e),
            Err(e) => Err(Error::Backing {
                path: p,
                source: Box::new(e),
            }),
        }
    } else {
        Ok(Box::new(
            RawFile::open(path, ro).map_err(Error::BackingRaw)?,
        ))
    }
}

impl BlockBackend for Qcow2 {
    fn capacity(&self) -> u64 {
        self.header.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn features(&self) -> BlockFeatures {
        BlockFeatures {
            discard: !self.read_only,
            write_zeroes: !self.read_only,
        }
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.header.size)?;
        Ok(self.read_inner(offset, buf)?)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, buf.len() as u64, self.header.size)?;
        Ok(self.write_inner(offset, buf)?)
    }

    /// Data clusters straight into guest memory (`vectored.rs`).
    fn read_vectored_at(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        let n = total_len(bufs)?;
        check_range(offset, n as u64, self.header.size)?;
        Ok(self.read_vectored_inner(offset, bufs, n, scratch)?)
    }

    /// Data clusters this image owns straight from guest memory; allocation and
    /// copy-on-write through `scratch` (`vectored.rs`).
    fn write_vectored_at(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let n = total_len(bufs)?;
        check_range(offset, n as u64, self.header.size)?;
        Ok(self.write_vectored_inner(offset, bufs, n, scratch)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        Ok(self.flush_metadata(None)?)
    }

    fn discard(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, len, self.header.size)?;
        Ok(self.zero_range(offset, len, true)?)
    }

    fn write_zeroes(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        check_range(offset, len, self.header.size)?;
        Ok(self.zero_range(offset, len, false)?)
    }

    fn describe(&self) -> String {
        let mut s = format!(
            "qcow2 v{} {} ({} KiB clusters{})",
            self.header.version,
            self.path.display(),
            self.cs() / 1024,
            if self.read_only { ", read-only" } else { "" }
        );
        if let Some(b) = &self.backing {
            s.push_str(&format!(" backed by [{}]", b.describe()));
        }
        s
    }
}

impl Drop for Qcow2 {
    /// A clean shutdown writes the metadata back; a crash is what the flush order protects.
    fn drop(&mut self) {
        if self.corrupt {
            return;
        }
        if let Err(e) = self.flush_metadata(None) {
            log::error!(
                "qcow2 {}: metadata write-back on close failed: {e}",
                self.path.display()
            );
        }
    }
}
