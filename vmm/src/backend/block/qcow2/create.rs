//! Writes an empty version 3 image (no backing file, 16-bit refcounts), laid out as
//! header | refcount table | refcount blocks | L1 table, every cluster counted once.

use std::fs::OpenOptions as FsOpen;
use std::path::Path;

use super::header::{Header, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};
use super::refcount::rc_set;
use super::{sync, write_at, Error};

const REFCOUNT_ORDER: u32 = 4;

/// Creates (or truncates) `path` as an empty qcow2 v3 image of `size` bytes with
/// `1 << cluster_bits` byte clusters.
pub fn create(path: &Path, size: u64, cluster_bits: u32) -> Result<(), Error> {
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(Error::BadClusterBits(cluster_bits));
    }
    if size > 1 << 56 {
        return Err(Error::TooLarge(size));
    }
    let cs = 1u64 << cluster_bits;
    let l1_entries = size.div_ceil(cs * (cs / 8));
    if l1_entries * 8 > super::header::MAX_L1_BYTES {
        return Err(Error::TableTooLarge {
            what: "l1 table",
            bytes: l1_entries * 8,
        });
    }
    let l1_clusters = (l1_entries * 8).div_ceil(cs);
    let per_block = (cs * 8) >> REFCOUNT_ORDER;
    // The metadata must count itself: grow the refcount blocks and table until they cover it.
    let (mut rt, mut rb) = (1u64, 1u64);
    loop {
        let total = 1 + rt + rb + l1_clusters;
        let need_rb = total.div_ceil(per_block);
        let need_rt = (need_rb * 8).div_ceil(cs);
        if need_rb <= rb && need_rt <= rt {
            break;
        }
        rb = rb.max(need_rb);
        rt = rt.max(need_rt);
    }
    let total = 1 + rt + rb + l1_clusters;
    let h = Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size,
        crypt_method: 0,
        l1_size: u32::try_from(l1_entries).map_err(|_| Error::TooLarge(size))?,
        l1_table_offset: (1 + rt + rb) * cs,
        refcount_table_offset: cs,
        refcount_table_clusters: rt as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: super::header::V3_HEADER_LEN,
        backing_file: None,
        backing_format: None,
    };
    let mut img = vec![0u8; (total * cs) as usize];
    let hb = h.encode_v3();
    img[..hb.len()].copy_from_slice(&hb);
    for b in 0..rb {
        let block_off = (1 + rt + b) * cs;
        let at = (cs + b * 8) as usize;
        img[at..at + 8].copy_from_slice(&block_off.to_be_bytes());
        let block = &mut img[block_off as usize..(block_off + cs) as usize];
        for i in 0..per_block {
            let cluster = b * per_block + i;
            if cluster >= total {
                break;
            }
            rc_set(block, i as usize, REFCOUNT_ORDER, 1);
        }
    }
    let p = path.display().to_string();
    let file = FsOpen::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| Error::Open { path: p, source })?;
    write_at(&file, &img, 0, "new image")?;
    sync(&file)
}
