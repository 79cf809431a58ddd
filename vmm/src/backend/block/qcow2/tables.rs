//! L1 and L2 table entries (qcow2.txt "Cluster mapping"): pure decoding of what a guest cluster
//! maps to, and the big-endian table <-> bytes conversions. The L2 cache is a
//! [`super::cache::TableCache`] of decoded tables.

use super::Error;

/// Bit 63 of L1 and L2 entries: the table or cluster has refcount exactly one (writable in place).
pub const COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: a compressed cluster.
pub const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of a standard L2 entry (version 3): the cluster reads as zeroes.
pub const ZERO: u64 = 1;
/// Bits 9..=55: the host offset in L1 entries and standard L2 entries.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// Where a guest cluster's data lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated: the backing file's data, or zeroes.
    Unallocated,
    /// Reads as zeroes; `host` is a preallocated cluster kept for later writes.
    Zero { host: Option<u64>, copied: bool },
    /// A standard cluster at `host`; `copied` means it may be written in place.
    Data { host: u64, copied: bool },
    /// Deflate data starting at `host` (not aligned), `len` bytes at most; `sectors` is the
    /// 512-byte aligned range it occupies, which is what its refcounts count.
    Compressed {
        host: u64,
        len: u64,
        sectors: (u64, u64),
    },
}

/// Decodes an L2 entry. `cluster_bits` sizes the compressed descriptor; version 2 images have no
/// zero flag.
pub fn decode_l2(entry: u64, cluster_bits: u32, version: u32) -> Result<Mapping, Error> {
    if entry & COMPRESSED != 0 {
        // Descriptor: host offset in bits 0..x, additional 512-byte sectors in bits x..=61.
        let x = 62 - (cluster_bits - 8);
        let host = entry & ((1u64 << x) - 1);
        let extra = (entry >> x) & ((1u64 << (cluster_bits - 8)) - 1);
        let start = host & !511;
        let end = start + (extra + 1) * 512;
        return Ok(Mapping::Compressed {
            host,
            len: end - host,
            sectors: (start, end - start),
        });
    }
    let copied = entry & COPIED != 0;
    let host = entry & OFFSET_MASK;
    let cluster_mask = (1u64 << cluster_bits) - 1;
    if host & cluster_mask != 0 {
        return Err(Error::Unaligned {
            what: "data cluster",
            offset: host,
        });
    }
    if entry & ZERO != 0 {
        if version < 3 {
            return Err(Error::ZeroFlagInV2);
        }
        return Ok(Mapping::Zero {
            host: (host != 0).then_some(host),
            copied,
        });
    }
    if host == 0 {
        return Ok(Mapping::Unallocated);
    }
    Ok(Mapping::Data { host, copied })
}

/// An L1 entry's L2 table offset (None when unallocated) and whether it is writable in place.
pub fn decode_l1(entry: u64, cluster_bits: u32) -> Result<(Option<u64>, bool), Error> {
    let off = entry & OFFSET_MASK;
    if off & ((1u64 << cluster_bits) - 1) != 0 {
        return Err(Error::Unaligned {
            what: "l2 table",
            offset: off,
        });
    }
    Ok(((off != 0).then_some(off), entry & COPIED != 0))
}

pub fn table_from_bytes(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

pub fn table_to_bytes(t: &[u64]) -> Vec<u8> {
    t.iter().flat_map(|e| e.to_be_bytes()).collect()
}
