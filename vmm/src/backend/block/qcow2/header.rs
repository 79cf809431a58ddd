//! The qcow2 header (versions 2 and 3) and its extensions, QEMU docs/interop/qcow2.txt
//! "Header" and "Header extensions". Parsing is pure: it takes the first cluster's bytes and the
//! file size and checks every field before anything is allocated from it.

use super::Error;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
pub const V2_HEADER_LEN: u32 = 72;
pub const V3_HEADER_LEN: u32 = 104;
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// The longest backing file name the spec allows.
const MAX_BACKING_NAME: u32 = 1023;
/// QEMU's limit on the L1 table (32 MiB); larger tables are refused before allocating them.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU's limit on the refcount table (8 MiB).
pub const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;

/// Byte offsets of the fields the engine rewrites in place.
pub const OFF_REFCOUNT_TABLE: u64 = 48;
pub const OFF_INCOMPATIBLE: u64 = 72;
pub const OFF_AUTOCLEAR: u64 = 88;

const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

/// Incompatible feature bits (header bytes 72..80).
pub mod incompat {
    pub const DIRTY: u64 = 1 << 0;
    pub const CORRUPT: u64 = 1 << 1;
    pub const EXTERNAL_DATA: u64 = 1 << 2;
    pub const COMPRESSION_TYPE: u64 = 1 << 3;
    pub const EXTENDED_L2: u64 = 1 << 4;
}

/// What the header says, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    /// The backing file name, if any.
    pub backing_file: Option<String>,
    /// The backing file format extension ("raw", "qcow2"), if present.
    pub backing_format: Option<String>,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table (8-byte entries; extended L2 is refused at parse time).
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// L1 entries needed to map the whole virtual disk.
    pub fn l1_entries_needed(&self) -> u64 {
        self.size.div_ceil(self.cluster_size() * self.l2_entries())
    }

    /// Parses and checks the header. `first` holds at least the first cluster of the file (or the
    /// whole file if it is shorter); `file_size` is the file's length.
    pub fn parse(first: &[u8], file_size: u64) -> Result<Header, Error> {
        if first.len() < 8 {
            return Err(Error::Truncated {
                what: "header",
                needed: u64::from(V2_HEADER_LEN),
                size: file_size,
            });
        }
        if first[0..4] != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion(version));
        }
        let min_len = if version == 2 {
            V2_HEADER_LEN
        } else {
            V3_HEADER_LEN
        };
        if (first.len() as u64) < u64::from(min_len) {
            return Err(Error::Truncated {
                what: "header",
                needed: u64::from(min_len),
                size: file_size,
            });
        }
        let cluster_bits = be32(first, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(Error::BadClusterBits(cluster_bits));
        }
        let cluster_size = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(first, 8),
            backing_file_size: be32(first, 16),
            cluster_bits,
            size: be64(first, 24),
            crypt_method: be32(first, 32),
            l1_size: be32(first, 36),
            l1_table_offset: be64(first, 40),
            refcount_table_offset: be64(first, 48),
            refcount_table_clusters: be32(first, 56),
            nb_snapshots: be32(first, 60),
            snapshots_offset: be64(first, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            backing_file: None,
            backing_format: None,
        };
        if version == 3 {
            h.incompatible_features = be64(first, 72);
            h.compatible_features = be64(first, 80);
            h.autoclear_features = be64(first, 88);
            h.refcount_order = be32(first, 96);
            h.header_length = be32(first, 100);
            if h.header_length < V3_HEADER_LEN
                || !h.header_length.is_multiple_of(8)
                || u64::from(h.header_length) > cluster_size
            {
                return Err(Error::BadHeaderLength(h.header_length));
            }
            if h.refcount_order > 6 {
                return Err(Error::BadRefcountOrder(h.refcount_order));
            }
        }
        if h.crypt_method != 0 {
            return Err(Error::Encrypted(h.crypt_method));
        }
        // The first cluster is the header's; everything in it must lie inside the file.
        let header_area = cluster_size.min(first.len() as u64) as usize;
        let (names, backing_format) = parse_extensions(&first[..header_area], &h)?;
        h.backing_format = backing_format;
        check_incompatible(h.incompatible_features, &names)?;

        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME {
                return Err(Error::BadBackingName("longer than 1023 bytes"));
            }
            let start = h.backing_file_offset;
            let end = start + u64::from(h.backing_file_size);
            if end > header_area as u64 {
                return Err(Error::BadBackingName("outside the first cluster"));
            }
            let raw = &first[start as usize..end as usize];
            let name = std::str::from_utf8(raw)
                .map_err(|_| Error::BadBackingName("not utf-8"))?
                .to_string();
            if name.is_empty() {
                return Err(Error::BadBackingName("empty"));
            }
            h.backing_file = Some(name);
        }
        h.check_layout(file_size)?;
        Ok(h)
    }

    /// Checks the tables' placement against the file: aligned, inside it, of sane sizes.
    fn check_layout(&self, file_size: u64) -> Result<(), Error> {
        let cs = self.cluster_size();
        if self.size > (1 << 56) {
            return Err(Error::TooLarge(self.size));
        }
        let l1_bytes = u64::from(self.l1_size) * 8;
        if u64::from(self.l1_size) < self.l1_entries_needed() {
            return Err(Error::L1TooSmall {
                entries: self.l1_size,
                needed: self.l1_entries_needed(),
            });
        }
        if l1_bytes > MAX_L1_BYTES {
            return Err(Error::TableTooLarge {
                what: "l1 table",
                bytes: l1_bytes,
            });
        }
        if self.l1_size > 0 {
            if !self.l1_table_offset.is_multiple_of(cs) {
                return Err(Error::Unaligned {
                    what: "l1 table",
                    offset: self.l1_table_offset,
                });
            }
            if self
                .l1_table_offset
                .checked_add(l1_bytes)
                .is_none_or(|e| e > file_size)
            {
                return Err(Error::L1PastEof {
                    offset: self.l1_table_offset,
                    bytes: l1_bytes,
                    file_size,
                });
            }
        }
        let rt_bytes = u64::from(self.refcount_table_clusters) * cs;
        if rt_bytes > MAX_REFCOUNT_TABLE_BYTES {
            return Err(Error::TableTooLarge {
                what: "refcount table",
                bytes: rt_bytes,
            });
        }
        if self.refcount_table_clusters == 0 {
            return Err(Error::EmptyRefcountTable);
        }
        if !self.refcount_table_offset.is_multiple_of(cs) || self.refcount_table_offset == 0 {
            return Err(Error::Unaligned {
                what: "refcount table",
                offset: self.refcount_table_offset,
            });
        }
        if self
            .refcount_table_offset
            .checked_add(rt_bytes)
            .is_none_or(|e| e > file_size)
        {
            return Err(Error::RefcountTablePastEof {
                offset: self.refcount_table_offset,
                bytes: rt_bytes,
                file_size,
            });
        }
        Ok(())
    }

    /// A fresh version 3 header (no backing file, 16-bit refcounts) for [`super::create`].
    pub fn encode_v3(&self) -> Vec<u8> {
        let mut b = vec![0u8; V3_HEADER_LEN as usize + 8];
        b[0..4].copy_from_slice(&MAGIC);
        put32(&mut b, 4, 3);
        put32(&mut b, 20, self.cluster_bits);
        put64(&mut b, 24, self.size);
        put32(&mut b, 36, self.l1_size);
        put64(&mut b, 40, self.l1_table_offset);
        put64(&mut b, 48, self.refcount_table_offset);
        put32(&mut b, 56, self.refcount_table_clusters);
        put32(&mut b, 96, self.refcount_order);
        put32(&mut b, 100, V3_HEADER_LEN);
        // The 8 zero bytes after the header are the end-of-extensions marker.
        b
    }
}

/// One entry of the feature name table extension: (bitmap type, bit, name).
type FeatureName = (u8, u8, String);

/// Walks the header extensions; returns the feature name table and the backing format.
fn parse_extensions(area: &[u8], h: &Header) -> Result<(Vec<FeatureName>, Option<String>), Error> {
    let mut names = Vec::new();
    let mut backing_format = None;
    let mut pos = h.header_length as usize;
    // A backing file name, when present, follows the extensions; extensions stop before it.
    let limit = if h.backing_file_offset != 0 && (h.backing_file_offset as usize) < area.len() {
        h.backing_file_offset as usize
    } else {
        area.len()
    };
    loop {
        if pos + 8 > limit {
            // QEMU tolerates a header cluster with no end marker when it is full.
            if pos >= limit {
                break;
            }
            return Err(Error::BadExtension { offset: pos as u64 });
        }
        let kind = be32(area, pos);
        let len = be32(area, pos + 4) as usize;
        if kind == EXT_END {
            break;
        }
        let data_start = pos + 8;
        let data_end = data_start
            .checked_add(len)
            .filter(|&e| e <= limit)
            .ok_or(Error::BadExtension { offset: pos as u64 })?;
        let data = &area[data_start..data_end];
        match kind {
            EXT_BACKING_FORMAT => {
                let f = std::str::from_utf8(data)
                    .map_err(|_| Error::BadExtension { offset: pos as u64 })?;
                backing_format = Some(f.to_string());
            }
            EXT_FEATURE_NAMES => {
                for e in data.chunks_exact(48) {
                    let raw = &e[2..];
                    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
                    names.push((
                        e[0],
                        e[1],
                        String::from_utf8_lossy(&raw[..end]).into_owned(),
                    ));
                }
            }
            // Bitmaps, encryption and data file extensions need features refused elsewhere or
            // are safe to ignore; unknown extensions are ignored as the spec says.
            _ => {}
        }
        pos = data_start + len.next_multiple_of(8);
    }
    Ok((names, backing_format))
}

/// Refuses incompatible features this back-end does not implement, naming them.
fn check_incompatible(bits: u64, names: &[FeatureName]) -> Result<(), Error> {
    // Dirty and corrupt are checked by the engine: they only forbid writing.
    let unsupported = bits & !(incompat::DIRTY | incompat::CORRUPT);
    if unsupported == 0 {
        return Ok(());
    }
    let bit = unsupported.trailing_zeros();
    let name = match 1u64 << bit {
        incompat::EXTERNAL_DATA => "external data file".to_string(),
        incompat::COMPRESSION_TYPE => "compression type".to_string(),
        incompat::EXTENDED_L2 => "extended l2 entries".to_string(),
        _ => names
            .iter()
            .find(|(t, b, _)| *t == 0 && u32::from(*b) == bit)
            .map(|(_, _, n)| n.clone())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    Err(Error::IncompatibleFeature { name, bit })
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
