//! Guest-memory I/O on a qcow2 image without a bounce copy: a request is split at cluster
//! boundaries, and each run of data clusters that lie back to back in the file (the usual
//! case for an image filled in order) moves with one preadv/pwritev straight between the file
//! and the guest's buffers. Zero, unallocated (backing), compressed and not-yet-owned clusters
//! take the copying paths: allocation and copy-on-write merge into a cluster buffer anyway.

use vm_memory::VolatileSlice;

use super::super::tables::{decode_l1, Mapping};
use super::super::Error;
use super::Qcow2;
use crate::backend::block::copy_from_slices;

/// The guest buffers of one request as a byte stream, handed out in consecutive pieces.
struct Cursor<'b, 'a> {
    bufs: &'b [VolatileSlice<'a>],
    /// Index of the current buffer and the bytes of it already handed out.
    index: usize,
    within: usize,
}

impl<'b, 'a> Cursor<'b, 'a> {
    fn new(bufs: &'b [VolatileSlice<'a>]) -> Self {
        Cursor {
            bufs,
            index: 0,
            within: 0,
        }
    }

    /// The next `len` bytes as slices of the guest's buffers (appended to `out`).
    fn take(&mut self, mut len: usize, out: &mut Vec<VolatileSlice<'a>>) -> Result<(), Error> {
        while len > 0 {
            let Some(b) = self.bufs.get(self.index) else {
                return Err(short());
            };
            let n = (b.len() - self.within).min(len);
            if n > 0 {
                out.push(b.subslice(self.within, n).map_err(|_| short())?);
            }
            self.within += n;
            len -= n;
            if self.within == b.len() {
                self.index += 1;
                self.within = 0;
            }
        }
        Ok(())
    }

    /// The next `len` bytes as slices of the guest's buffers.
    fn piece(&mut self, len: usize) -> Result<Vec<VolatileSlice<'a>>, Error> {
        let mut out = Vec::new();
        self.take(len, &mut out)?;
        Ok(out)
    }
}

/// Moves a run between the file and the guest's buffers: the qcow2 image, the run's host
/// offset and length, and its buffers.
type RunIo = fn(&mut Qcow2, u64, u64, &[VolatileSlice]) -> Result<(), Error>;

/// A run of data clusters that lie back to back in the file, and the guest buffers it moves:
/// one preadv/pwritev when a piece does not continue it, or when the request ends.
struct Run<'a> {
    bufs: Vec<VolatileSlice<'a>>,
    /// Host offset and length of the run; `None` while it is empty.
    at: Option<(u64, u64)>,
    io: RunIo,
}

impl<'a> Run<'a> {
    /// An empty run for a request into or out of `bufs` guest buffers.
    fn new(io: RunIo, bufs: usize) -> Self {
        Run {
            bufs: Vec::with_capacity(bufs + 1),
            at: None,
            io,
        }
    }

    /// Adds the next `n` bytes of `cursor`, which belong at host offset `host`; the pending
    /// run is moved first when they do not continue it.
    fn add(
        &mut self,
        q: &mut Qcow2,
        host: u64,
        n: usize,
        cursor: &mut Cursor<'_, 'a>,
    ) -> Result<(), Error> {
        match self.at {
            Some((start, l)) if start + l == host => self.at = Some((start, l + n as u64)),
            _ => {
                self.flush(q)?;
                self.at = Some((host, n as u64));
            }
        }
        cursor.take(n, &mut self.bufs)
    }

    /// Moves the pending run, if any, and leaves it empty.
    fn flush(&mut self, q: &mut Qcow2) -> Result<(), Error> {
        if let Some((host, len)) = self.at.take() {
            (self.io)(q, host, len, &self.bufs)?;
        }
        self.bufs.clear();
        Ok(())
    }
}

/// A request of `len` bytes at guest offset `offset` split at cluster boundaries (`cs` bytes):
/// each piece's guest offset, offset within its cluster and length.
fn pieces(offset: u64, len: usize, cs: u64) -> impl Iterator<Item = (u64, u64, usize)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        (done < len).then(|| {
            let pos = offset + done as u64;
            let within = pos % cs;
            let n = ((cs - within) as usize).min(len - done);
            done += n;
            (pos, within, n)
        })
    })
}

fn short() -> Error {
    Error::Io {
        what: "guest buffers",
        source: std::io::ErrorKind::InvalidInput.into(),
    }
}

fn data_io(source: std::io::Error) -> Error {
    Error::Io {
        what: "data cluster",
        source,
    }
}

impl Qcow2 {
    /// Where guest offset `pos` lives in the file if a write there may go straight to it: a
    /// data cluster this image alone owns (COPIED), in an L2 table it alone owns. Anything
    /// else needs the allocating path ([`Qcow2::write_cluster`]).
    fn owned_data(&mut self, pos: u64) -> Result<Option<u64>, Error> {
        let (l1i, _) = self.indices(pos);
        let Some(&l1e) = self.l1.get(l1i) else {
            return Ok(None);
        };
        match decode_l1(l1e, self.header.cluster_bits)? {
            (Some(_), true) => {}
            _ => return Ok(None),
        }
        Ok(match self.lookup(pos)? {
            Mapping::Data { host, copied: true } => Some(host),
            _ => None,
        })
    }

    /// Fills `bufs` from guest offset `offset` (range already checked).
    pub(super) fn read_vectored_inner(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let mut cursor = Cursor::new(bufs);
        let mut run = Run::new(Qcow2::read_run, bufs.len());
        for (pos, within, n) in pieces(offset, len, self.cs()) {
            let m = self.lookup(pos)?;
            if let Mapping::Data { host, .. } = m {
                run.add(self, host + within, n, &mut cursor)?;
            } else {
                run.flush(self)?;
                let piece = cursor.piece(n)?;
                self.read_other(m, pos, &piece, n, scratch)?;
            }
        }
        run.flush(self)
    }

    /// A cluster piece that is not plain data in this file: zeroes, the backing file's bytes,
    /// or a compressed cluster's.
    fn read_other(
        &mut self,
        m: Mapping,
        pos: u64,
        piece: &[VolatileSlice],
        n: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        match m {
            Mapping::Zero { .. } => fill_zero(piece, &self.zeros),
            Mapping::Unallocated => self.read_backing_vectored(pos, piece, n, scratch)?,
            Mapping::Compressed { .. } => {
                self.inflate(m)?;
                let w = (pos % self.cs()) as usize;
                crate::backend::block::copy_to_slices(&self.inflate_buf[w..w + n], piece);
            }
            Mapping::Data { .. } => {
                // The caller reads data clusters in place; through a buffer is still right.
                scratch.resize(n, 0);
                self.read_inner(pos, &mut scratch[..n])?;
                crate::backend::block::copy_to_slices(&scratch[..n], piece);
            }
        }
        Ok(())
    }

    /// Reads a run of data clusters at host offset `host` into `bufs`.
    fn read_run(&mut self, host: u64, _len: u64, bufs: &[VolatileSlice]) -> Result<(), Error> {
        crate::sys::preadv_exact(&self.file, bufs, host).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::PastEof {
                    what: "data cluster",
                    offset: host,
                }
            } else {
                data_io(e)
            }
        })
    }

    /// The backing file's bytes (its own vectored path: raw files and qcow2 read into guest
    /// memory directly too), zeroes past its end or everywhere without one.
    fn read_backing_vectored(
        &mut self,
        pos: u64,
        piece: &[VolatileSlice],
        n: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let Some(b) = self.backing.as_mut() else {
            fill_zero(piece, &self.zeros);
            return Ok(());
        };
        let have = b.capacity().saturating_sub(pos).min(n as u64) as usize;
        let mut split = Cursor::new(piece);
        let head = split.piece(have)?;
        if have > 0 {
            b.read_vectored_at(pos, &head, scratch)
                .map_err(Error::BackingRead)?;
        }
        let tail = split.piece(n - have)?;
        fill_zero(&tail, &self.zeros);
        Ok(())
    }

    /// Writes `bufs` at guest offset `offset` (range already checked, image writable).
    pub(super) fn write_vectored_inner(
        &mut self,
        offset: u64,
        bufs: &[VolatileSlice],
        len: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if self.corrupt {
            return Err(Error::MarkedCorrupt);
        }
        self.writeback_if_full()?;
        let mut cursor = Cursor::new(bufs);
        let mut run = Run::new(Qcow2::write_run, bufs.len());
        for (pos, within, n) in pieces(offset, len, self.cs()) {
            if let Some(host) = self.owned_data(pos)? {
                run.add(self, host + within, n, &mut cursor)?;
            } else {
                run.flush(self)?;
                // Allocation or copy-on-write: the cluster is assembled in a buffer anyway.
                let piece = cursor.piece(n)?;
                scratch.resize(n, 0);
                copy_from_slices(&piece, &mut scratch[..n]);
                self.write_cluster(pos, &scratch[..n])?;
            }
        }
        run.flush(self)
    }

    /// Writes a run of owned data clusters, after the metadata-overlap check of its whole
    /// host range.
    fn write_run(&mut self, host: u64, len: u64, bufs: &[VolatileSlice]) -> Result<(), Error> {
        self.guard(host, len)?;
        crate::sys::pwritev_all(&self.file, bufs, host).map_err(data_io)
    }
}

/// Zeroes the guest buffers `piece` (from `zeros`, a cluster of zero bytes: a piece is never
/// longer than a cluster).
fn fill_zero(piece: &[VolatileSlice], zeros: &[u8]) {
    for b in piece {
        b.copy_from(&zeros[..b.len()]);
    }
}
