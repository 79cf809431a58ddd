//! The metadata-overlap check: before a guest's data goes to a host cluster, the cluster must
//! not hold metadata. A damaged image (an L1 size or an L2 entry off by a little) can map guest
//! data onto its own tables; writing there would destroy the image. QEMU's
//! `overlap-check=cached` is the model: the header, the active L1 table, every L2 table the
//! L1 table points to, the refcount table and its blocks, and the snapshot table, all known
//! from memory without reading the file. Pure: it only compares ranges.

/// Which metadata a write would have hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metadata {
    Header,
    ActiveL1,
    ActiveL2,
    RefcountTable,
    RefcountBlock,
    SnapshotTable,
}

impl Metadata {
    pub fn name(self) -> &'static str {
        match self {
            Metadata::Header => "header",
            Metadata::ActiveL1 => "active l1 table",
            Metadata::ActiveL2 => "active l2 table",
            Metadata::RefcountTable => "refcount table",
            Metadata::RefcountBlock => "refcount block",
            Metadata::SnapshotTable => "snapshot table",
        }
    }
}

/// Where the metadata is, as the engine holds it in memory.
pub struct Layout<'a> {
    pub cluster_bits: u32,
    pub l1_offset: u64,
    /// The in-memory L1 table, with every entry the header's L1 size covers.
    pub l1: &'a [u64],
    pub refcount_table_offset: u64,
    pub refcount_table_bytes: u64,
    /// The in-memory refcount table.
    pub refcount_table: &'a [u64],
    pub snapshots_offset: u64,
    pub nb_snapshots: u32,
}

/// Host offset bits of L1 and refcount table entries (bits 9..=55; the low bits of a
/// refcount table entry are reserved, so the same mask serves).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

/// The metadata the host range `[offset, offset + len)`, widened to whole clusters, would
/// overwrite, if any.
pub fn check(layout: &Layout<'_>, offset: u64, len: u64) -> Option<Metadata> {
    let cs = 1u64 << layout.cluster_bits;
    // In u128: offsets near the top of the range must neither wrap nor saturate into a miss.
    let wide = u128::from(cs);
    let start = u128::from(offset) / wide * wide;
    let end = (u128::from(offset) + u128::from(len)).div_ceil(wide) * wide;
    let hits = |at: u64, bytes: u64| {
        let at = u128::from(at);
        len > 0 && bytes > 0 && at < end && start < at + u128::from(bytes)
    };

    if hits(0, cs) {
        return Some(Metadata::Header);
    }
    if hits(layout.l1_offset, layout.l1.len() as u64 * 8) {
        return Some(Metadata::ActiveL1);
    }
    if hits(layout.refcount_table_offset, layout.refcount_table_bytes) {
        return Some(Metadata::RefcountTable);
    }
    // The snapshot table's length is in the snapshot headers; its first cluster is enough to
    // catch a mapping onto it.
    if layout.nb_snapshots > 0 && hits(layout.snapshots_offset, cs) {
        return Some(Metadata::SnapshotTable);
    }
    let in_range = |e: &u64| {
        let at = *e & OFFSET_MASK;
        at != 0 && hits(at, cs)
    };
    if layout.l1.iter().any(in_range) {
        return Some(Metadata::ActiveL2);
    }
    if layout.refcount_table.iter().any(in_range) {
        return Some(Metadata::RefcountBlock);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CS: u64 = 512;

    fn layout<'a>(l1: &'a [u64], rt: &'a [u64]) -> Layout<'a> {
        Layout {
            cluster_bits: 9,
            l1_offset: 3 * CS,
            l1,
            refcount_table_offset: CS,
            refcount_table_bytes: CS,
            refcount_table: rt,
            snapshots_offset: 0,
            nb_snapshots: 0,
        }
    }

    #[test]
    fn every_kind_of_metadata_is_caught_and_data_passes() {
        let l1 = [(4 * CS) | (1 << 63), 0, 6 * CS];
        let rt = [2 * CS];
        let l = layout(&l1, &rt);

        assert_eq!(check(&l, 0, 1), Some(Metadata::Header));
        assert_eq!(check(&l, CS + 100, 8), Some(Metadata::RefcountTable));
        assert_eq!(check(&l, 2 * CS, CS), Some(Metadata::RefcountBlock));
        assert_eq!(check(&l, 3 * CS, CS), Some(Metadata::ActiveL1));
        assert_eq!(check(&l, 4 * CS + 511, 1), Some(Metadata::ActiveL2));
        assert_eq!(check(&l, 6 * CS, CS), Some(Metadata::ActiveL2));
        assert_eq!(check(&l, 5 * CS, CS), None);
        assert_eq!(check(&l, 7 * CS, 10 * CS), None);
        // A write that starts in data but runs into a table is caught too.
        assert_eq!(check(&l, 5 * CS + 10, CS), Some(Metadata::ActiveL2));
    }

    #[test]
    fn an_l1_table_longer_than_its_cluster_covers_the_next_one() {
        // 67 entries of 8 bytes run 24 bytes into the cluster after the L1 table's.
        let l1 = vec![0u64; 67];
        let l = layout(&l1, &[]);

        assert_eq!(check(&l, 4 * CS, CS), Some(Metadata::ActiveL1));
        assert_eq!(check(&l, 5 * CS, CS), None);
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        let l1 = [u64::MAX];
        let l = layout(&l1, &[u64::MAX]);

        assert_eq!(check(&l, u64::MAX - 3, 100), None);
        assert_eq!(
            check(&l, 0x00ff_ffff_ffff_fe00 + 5, u64::MAX),
            Some(Metadata::ActiveL2)
        );
        assert_eq!(check(&l, 0, 0), None);
    }
}
