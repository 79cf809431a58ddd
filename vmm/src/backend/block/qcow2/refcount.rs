//! Host cluster refcounts (qcow2.txt "Host cluster management"): the refcount table, a cache
//! of refcount blocks of any width (refcount_order 0..=6), and the allocator.
//!
//! Clusters are allocated past the end of the file and never reused within a session, so a
//! cluster freed in memory cannot be handed out again while an old on-disk L2 entry still points
//! at it. Increments are written before the L2/L1 entries that need them (see
//! [`Refcounts::write_increments`]); decrements are deferred until the entries that stopped
//! pointing at a cluster are durable ([`Refcounts::write_deferred_frees`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::cache::TableCache;
use super::header::OFF_REFCOUNT_TABLE;
use super::tables::{table_from_bytes, table_to_bytes};
use super::{read_at, sync, write_at, Error};

/// Refcount blocks kept in memory: enough to cover large images without a bound on memory.
const BLOCK_CACHE_BYTES: u64 = 4 << 20;

pub struct Refcounts {
    cluster_bits: u32,
    order: u32,
    table: Vec<u64>,
    table_offset: u64,
    /// Table entries changed since the last write-back.
    dirty_entries: BTreeSet<usize>,
    /// The table was reallocated: write it whole, then point the header at it.
    moved: bool,
    blocks: TableCache<Vec<u8>>,
    /// The next candidate for allocation (cluster aligned, at or past the end of the file).
    next_free: u64,
    /// Host ranges to decrement once the metadata that referenced them is durable.
    deferred: Vec<(u64, u64)>,
}

impl Refcounts {
    /// Loads the refcount table (its placement was checked against the file by the header).
    pub fn load(
        file: &File,
        cluster_bits: u32,
        order: u32,
        table_offset: u64,
        table_clusters: u32,
        file_size: u64,
    ) -> Result<Self, Error> {
        let cs = 1u64 << cluster_bits;
        let mut raw = vec![0u8; (u64::from(table_clusters) << cluster_bits) as usize];
        read_at(file, &mut raw, table_offset, "refcount table")?;
        let table = table_from_bytes(&raw);
        Ok(Refcounts {
            cluster_bits,
            order,
            table,
            table_offset,
            dirty_entries: BTreeSet::new(),
            moved: false,
            blocks: TableCache::new((BLOCK_CACHE_BYTES >> cluster_bits).max(16) as usize),
            next_free: file_size.next_multiple_of(cs),
            deferred: Vec::new(),
        })
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Where the refcount table is now (it moves when it grows).
    pub fn table_offset(&self) -> u64 {
        self.table_offset
    }

    /// The refcount table's entries, as in memory.
    pub fn table(&self) -> &[u64] {
        &self.table
    }

    /// Refcount entries in one block.
    fn per_block(&self) -> u64 {
        (self.cs() * 8) >> self.order
    }

    fn max(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u32 << self.order)) - 1
        }
    }

    /// The block holding `cluster`'s refcount, loaded into the cache; None if unallocated.
    fn block(&mut self, file: &File, cluster: u64) -> Result<Option<u64>, Error> {
        let ti = cluster / self.per_block();
        let Some(&entry) = self.table.get(ti as usize) else {
            return Ok(None);
        };
        if entry == 0 {
            return Ok(None);
        }
        let off = entry & !511;
        if entry & 511 != 0 || off % self.cs() != 0 {
            return Err(Error::Unaligned {
                what: "refcount block",
                offset: entry,
            });
        }
        if !self.blocks.contains(off) {
            let mut b = vec![0u8; self.cs() as usize];
            read_at(file, &mut b, off, "refcount block")?;
            self.blocks.insert(off, b, false);
        }
        Ok(Some(off))
    }

    /// The refcount of the host cluster with index `cluster`.
    pub fn get(&mut self, file: &File, cluster: u64) -> Result<u64, Error> {
        let Some(off) = self.block(file, cluster)? else {
            return Ok(0);
        };
        let i = (cluster % self.per_block()) as usize;
        let b = self.blocks.get(off).expect("block just loaded");
        Ok(rc_get(b, i, self.order))
    }

    /// Adds `delta` (+1 or -1) to a cluster's refcount, creating its block if needed.
    pub fn adjust(&mut self, file: &File, cluster: u64, delta: i8) -> Result<u64, Error> {
        let off = match self.block(file, cluster)? {
            Some(off) => off,
            None if delta < 0 => {
                return Err(Error::RefcountUnderflow {
                    offset: cluster << self.cluster_bits,
                })
            }
            None => self.new_block(file, cluster / self.per_block())?,
        };
        let (i, order, max) = (
            (cluster % self.per_block()) as usize,
            self.order,
            self.max(),
        );
        let offset = cluster << self.cluster_bits;
        let b = self.blocks.get_mut(off).expect("block just loaded");
        let old = rc_get(b, i, order);
        let new = if delta > 0 {
            if old == max {
                return Err(Error::RefcountOverflow { offset });
            }
            old + 1
        } else {
            old.checked_sub(1)
                .ok_or(Error::RefcountUnderflow { offset })?
        };
        rc_set(b, i, order, new);
        Ok(new)
    }

    /// Creates the refcount block for table index `ti` at the next free cluster and returns its
    /// offset. The block's own cluster is counted in whichever block covers it (usually itself).
    fn new_block(&mut self, file: &File, ti: u64) -> Result<u64, Error> {
        if ti as usize >= self.table.len() {
            self.grow_table(file, ti + 1)?;
            // Growing may have created the block (the new table's clusters need counting).
            if let Some(&e) = self.table.get(ti as usize) {
                if e != 0 {
                    return Ok(e & !511);
                }
            }
        }
        let off = self.take_free(file, 1)?;
        self.blocks.insert(off, vec![0u8; self.cs() as usize], true);
        self.table[ti as usize] = off;
        self.dirty_entries.insert(ti as usize);
        self.adjust(file, off >> self.cluster_bits, 1)?;
        Ok(off)
    }

    /// Replaces the table by a larger one of at least `min_entries` entries at the end of the
    /// file. The header points at it after it is written (see [`Self::write_increments`]).
    fn grow_table(&mut self, file: &File, min_entries: u64) -> Result<(), Error> {
        let per_cluster = self.cs() / 8;
        let old_entries = self.table.len() as u64;
        let entries = (min_entries + 2)
            .max(old_entries * 2)
            .next_multiple_of(per_cluster);
        let clusters = entries / per_cluster;
        if entries * 8 > super::header::MAX_REFCOUNT_TABLE_BYTES {
            return Err(Error::TableTooLarge {
                what: "refcount table",
                bytes: entries * 8,
            });
        }
        let start = self.take_free(file, clusters)?;
        let old = (self.table_offset, old_entries * 8);
        self.table.resize(entries as usize, 0);
        self.table_offset = start;
        self.moved = true;
        self.defer_free(old.0, old.1);
        for c in 0..clusters {
            self.adjust(file, (start >> self.cluster_bits) + c, 1)?;
        }
        Ok(())
    }

    /// Reserves `n` contiguous clusters at the allocation cursor whose refcounts are zero; the
    /// caller counts them.
    fn take_free(&mut self, file: &File, n: u64) -> Result<u64, Error> {
        'search: loop {
            let start = self.next_free;
            for i in 0..n {
                let c = (start >> self.cluster_bits) + i;
                if self.get(file, c)? != 0 {
                    // Counted but past the end of the file: a leak from a crash. Skip it.
                    self.next_free = (c + 1) << self.cluster_bits;
                    continue 'search;
                }
            }
            self.next_free = start + (n << self.cluster_bits);
            return Ok(start);
        }
    }

    /// Allocates one cluster (refcount 1) and returns its offset. Its contents on disk are
    /// undefined until written.
    pub fn alloc(&mut self, file: &File) -> Result<u64, Error> {
        let off = self.take_free(file, 1)?;
        self.adjust(file, off >> self.cluster_bits, 1)?;
        Ok(off)
    }

    /// Decrements every cluster overlapping `[offset, offset + len)` after the next metadata
    /// write-back.
    pub fn defer_free(&mut self, offset: u64, len: u64) {
        if len > 0 {
            self.deferred.push((offset, len));
        }
    }

    pub fn has_dirty(&self) -> bool {
        self.blocks.has_dirty() || !self.dirty_entries.is_empty() || self.moved
    }

    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    pub fn over_capacity(&self) -> bool {
        self.blocks.over_capacity()
    }

    #[cfg(test)]
    pub fn set_block_cache(&mut self, blocks: usize) {
        self.blocks.set_capacity(blocks);
    }

    /// Writes dirty refcount blocks, then (after they are durable) the table entries pointing at
    /// new blocks, then, if the table moved, the header fields pointing at the new table. The
    /// caller syncs afterwards, before writing any L2 or L1 entry.
    pub fn write_increments(&mut self, file: &File) -> Result<(), Error> {
        self.write_blocks(file)?;
        if self.dirty_entries.is_empty() && !self.moved {
            return Ok(());
        }
        // A table entry must never point at a block that is not on disk yet.
        sync(file)?;
        if self.moved {
            write_at(
                file,
                &table_to_bytes(&self.table),
                self.table_offset,
                "refcount table",
            )?;
            sync(file)?;
            let clusters = (self.table.len() as u64 * 8) >> self.cluster_bits;
            let mut h = [0u8; 12];
            h[..8].copy_from_slice(&self.table_offset.to_be_bytes());
            h[8..].copy_from_slice(&(clusters as u32).to_be_bytes());
            write_at(file, &h, OFF_REFCOUNT_TABLE, "header")?;
        } else {
            write_entries(file, &self.table, self.table_offset, &self.dirty_entries)?;
        }
        self.dirty_entries.clear();
        self.moved = false;
        Ok(())
    }

    fn write_blocks(&mut self, file: &File) -> Result<(), Error> {
        for off in self.blocks.dirty_keys() {
            let b = self.blocks.peek(off).expect("dirty key");
            write_at(file, b, off, "refcount block")?;
            self.blocks.mark_clean(off);
        }
        Ok(())
    }

    /// Applies the deferred decrements and writes their blocks. Called only once the L2/L1
    /// entries that dropped these clusters are durable; the caller syncs afterwards.
    pub fn write_deferred_frees(&mut self, file: &File) -> Result<(), Error> {
        let cs = self.cs();
        for (off, len) in std::mem::take(&mut self.deferred) {
            let first = off / cs;
            let last = (off + len - 1) / cs;
            for c in first..=last {
                self.adjust(file, c, -1)?;
            }
        }
        self.write_blocks(file)?;
        if self.has_dirty() {
            // A decrement never creates a block, so nothing else can be pending here.
            self.write_increments(file)?;
        }
        Ok(())
    }
}

/// Writes the 512-byte sectors of `table` that hold the `dirty` entries.
pub fn write_entries(
    file: &File,
    table: &[u64],
    table_offset: u64,
    dirty: &BTreeSet<usize>,
) -> Result<(), Error> {
    let mut last_sector = None;
    for &i in dirty {
        let sector = i / 64;
        if last_sector == Some(sector) {
            continue;
        }
        last_sector = Some(sector);
        let end = ((sector + 1) * 64).min(table.len());
        let bytes = table_to_bytes(&table[sector * 64..end]);
        file.write_all_at(&bytes, table_offset + sector as u64 * 512)
            .map_err(|source| Error::Io {
                what: "table",
                source,
            })?;
    }
    Ok(())
}

/// Entry `i` of a refcount block of width `1 << order` bits (big-endian; sub-byte entries start
/// at the least significant bit).
pub fn rc_get(b: &[u8], i: usize, order: u32) -> u64 {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let pos = i * bits;
            u64::from((b[pos / 8] >> (pos % 8)) & ((1u16 << bits) - 1) as u8)
        }
        3 => u64::from(b[i]),
        4 => u64::from(u16::from_be_bytes([b[2 * i], b[2 * i + 1]])),
        5 => u64::from(u32::from_be_bytes(
            b[4 * i..4 * i + 4].try_into().expect("4"),
        )),
        _ => u64::from_be_bytes(b[8 * i..8 * i + 8].try_into().expect("8")),
    }
}

pub fn rc_set(b: &mut [u8], i: usize, order: u32, v: u64) {
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let pos = i * bits;
            let mask = (((1u16 << bits) - 1) as u8) << (pos % 8);
            b[pos / 8] = (b[pos / 8] & !mask) | (((v as u8) << (pos % 8)) & mask);
        }
        3 => b[i] = v as u8,
        4 => b[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_be_bytes()),
        5 => b[4 * i..4 * i + 4].copy_from_slice(&(v as u32).to_be_bytes()),
        _ => b[8 * i..8 * i + 8].copy_from_slice(&v.to_be_bytes()),
    }
}
