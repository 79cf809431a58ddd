//! Parsing a virtio-blk request (virtio 1.2, 5.2.6) from a descriptor chain: pure, no I/O.
//! Every guest-controlled field is checked here; the executor trusts what this returns.

use std::io::Read;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{Address, ByteValued, GuestMemory, GuestMemoryMmap, Permissions, VolatileSlice};

pub const SECTOR: u64 = 512;
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
pub const ID_BYTES: usize = 20;
/// Discard/write-zeroes segments accepted per request (advertised as max_*_seg).
pub const MAX_SEGMENTS: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: Header is repr(C) with only integer fields and no padding; any bytes are valid.
unsafe impl ByteValued for Header {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub sector: u64,
    pub num_sectors: u32,
    pub flags: u32,
}

// SAFETY: Segment is repr(C) with only integer fields and no padding; any bytes are valid.
unsafe impl ByteValued for Segment {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Read { len: u64 },
    Write { len: u64 },
    Flush,
    GetId,
    Discard(Vec<Segment>),
    WriteZeroes(Vec<Segment>),
    Unsupported(u32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("descriptor chain outside guest memory or malformed")]
    Chain,
    #[error("request header shorter than 16 bytes")]
    ShortHeader,
    #[error("no writable status byte")]
    NoStatus,
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(u64),
    #[error("segment list of {0} bytes is not a whole number of 16-byte segments, or too many")]
    Segments(usize),
}

/// A parsed request: what to do, and where it starts on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: Kind,
    pub sector: u64,
}

impl Request {
    /// Parses the chain's header and checks its layout against the request type. Returns
    /// the request and the chain's reader (the data of a write) and writer (the buffer of a
    /// read; its last byte is the status).
    pub fn parse<'a>(
        mem: &'a GuestMemoryMmap,
        chain: DescriptorChain<&'a GuestMemoryMmap>,
    ) -> Result<(Request, Reader<'a>, Writer<'a>), Error> {
        let mut reader = Reader::new(mem, chain.clone()).map_err(|_| Error::Chain)?;
        let writer = Writer::new(mem, chain).map_err(|_| Error::Chain)?;
        if writer.available_bytes() < 1 {
            return Err(Error::NoStatus);
        }
        if reader.available_bytes() < std::mem::size_of::<Header>() {
            return Err(Error::ShortHeader);
        }
        let h: Header = reader.read_obj().map_err(|_| Error::ShortHeader)?;
        let kind = match h.kind {
            T_IN => {
                let len = (writer.available_bytes() - 1) as u64;
                if !len.is_multiple_of(SECTOR) {
                    return Err(Error::Unaligned(len));
                }
                Kind::Read { len }
            }
            T_OUT => {
                let len = reader.available_bytes() as u64;
                if !len.is_multiple_of(SECTOR) {
                    return Err(Error::Unaligned(len));
                }
                Kind::Write { len }
            }
            T_FLUSH => Kind::Flush,
            T_GET_ID => Kind::GetId,
            T_DISCARD | T_WRITE_ZEROES => {
                let n = reader.available_bytes();
                let size = std::mem::size_of::<Segment>();
                if n == 0 || n % size != 0 || n / size > MAX_SEGMENTS {
                    return Err(Error::Segments(n));
                }
                let mut segs = Vec::with_capacity(n / size);
                for _ in 0..n / size {
                    let mut raw = [0u8; 16];
                    reader.read_exact(&mut raw).map_err(|_| Error::Chain)?;
                    segs.push(Segment {
                        sector: u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default()),
                        num_sectors: u32::from_le_bytes(raw[8..12].try_into().unwrap_or_default()),
                        flags: u32::from_le_bytes(raw[12..16].try_into().unwrap_or_default()),
                    });
                }
                if h.kind == T_DISCARD {
                    Kind::Discard(segs)
                } else {
                    Kind::WriteZeroes(segs)
                }
            }
            other => Kind::Unsupported(other),
        };
        Ok((
            Request {
                kind,
                sector: h.sector,
            },
            reader,
            writer,
        ))
    }
}

/// The guest memory holding a request's data, as slices vm-memory checked (split where a
/// descriptor or a memory region ends): for a read, the first `len` bytes of the writable
/// descriptors (the byte after them is the status); for a write, the `len` bytes of the
/// readable descriptors after the header. `chain` is the one [`Request::parse`] took, and
/// `len` the length it returned in [`Kind::Read`] or [`Kind::Write`]; other kinds have no
/// data.
pub fn data_slices<'a>(
    mem: &'a GuestMemoryMmap,
    chain: DescriptorChain<&'a GuestMemoryMmap>,
    kind: &Kind,
) -> Result<Vec<VolatileSlice<'a>>, Error> {
    match *kind {
        Kind::Read { len } => take(mem, chain.writable(), Permissions::Write, 0, len),
        Kind::Write { len } => take(
            mem,
            chain.readable(),
            Permissions::Read,
            std::mem::size_of::<Header>() as u64,
            len,
        ),
        Kind::Flush
        | Kind::GetId
        | Kind::Discard(_)
        | Kind::WriteZeroes(_)
        | Kind::Unsupported(_) => Ok(Vec::new()),
    }
}

/// `len` bytes of the descriptors `descs` after the first `skip`, as guest memory slices.
fn take<'a>(
    mem: &'a GuestMemoryMmap,
    descs: impl Iterator<Item = Descriptor>,
    access: Permissions,
    mut skip: u64,
    len: u64,
) -> Result<Vec<VolatileSlice<'a>>, Error> {
    let mut left = len;
    let mut out = Vec::new();
    for d in descs {
        if left == 0 {
            break;
        }
        let dlen = u64::from(d.len());
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let n = (dlen - skip).min(left);
        let addr = d.addr().checked_add(skip).ok_or(Error::Chain)?;
        skip = 0;
        let count = usize::try_from(n).map_err(|_| Error::Chain)?;
        for s in mem
            .get_slices(addr, count, access)
            .map_err(|_| Error::Chain)?
        {
            out.push(s.map_err(|_| Error::Chain)?);
        }
        left -= n;
    }
    if left != 0 {
        return Err(Error::Chain);
    }
    Ok(out)
}
