//! The system calls vmbench makes outside `kvm/`, each behind a safe function: TAP set-up,
//! entering a network namespace, punching holes in a disk image, positioned vectored I/O
//! between a file and guest memory, the process's CPU times and whether it runs as root. Everything else goes through std or vmm-sys-util, which already
//! wrap their calls safely (eventfd, epoll, readv/writev via `File::{read,write}_vectored`).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use vm_memory::VolatileSlice;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// TUNSETIFF: attaches the open `/dev/net/tun` file `tun` to the interface `name` (created if
/// absent) with `flags` (IFF_TAP, IFF_NO_PI, ...). A name that does not fit is refused.
pub fn tun_set_iff(tun: &File, name: &str, flags: libc::c_short) -> io::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: ifreq is plain old data (bytes, integers and a pointer in a union) for which
    // all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one ifreq, and `ifr` is a valid one (its name
    // NUL-terminated: checked above) that outlives the call; `tun` is open.
    let rc = unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETIFF,
            &mut ifr as *mut libc::ifreq,
        )
    };
    check(rc)
}

/// TUNSETVNETHDRSZ: the length of the virtio-net header the TAP prepends to each frame.
pub fn tun_set_vnet_hdr_size(tun: &File, len: libc::c_int) -> io::Result<()> {
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid for the call;
    // `tun` is open.
    let rc = unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETVNETHDRSZ,
            &len as *const libc::c_int,
        )
    };
    check(rc)
}

/// TUNSETOFFLOAD: the offloads (TUN_F_*) the reader of the TAP accepts.
pub fn tun_set_offload(tun: &impl AsFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no memory of ours; the
    // descriptor is open for the call (borrowed).
    let rc = unsafe {
        libc::ioctl(
            tun.as_fd().as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    };
    check(rc)
}

/// setns(2) into the network namespace `ns` (an open /run/netns file). Changes the calling
/// thread only: call it on a thread of its own that ends with the work done there.
pub fn setns_net(ns: &File) -> io::Result<()> {
    // SAFETY: `ns` is an open file that outlives the call; setns changes only the calling
    // thread's network namespace and touches no memory of ours.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    check(rc)
}

/// fallocate(2) on `file` with `mode` (FALLOC_FL_*) over `[offset, offset + len)`.
pub fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let off = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fallocate on a descriptor `file` keeps open; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) };
    check(rc)
}

/// Most iovecs one preadv/pwritev takes (Linux's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// preadv(2) until `bufs` (guest memory, in order) are full with the bytes of `file` from
/// `offset`: short reads and EINTR continue; end of file is `UnexpectedEof`.
pub fn preadv_exact(file: &File, bufs: &[VolatileSlice], offset: u64) -> io::Result<()> {
    vectored_all(file, bufs, offset, Direction::Read)
}

/// pwritev(2) until every byte of `bufs` (guest memory, in order) is in `file` at `offset`:
/// short writes and EINTR continue; a write of nothing is `WriteZero`.
pub fn pwritev_all(file: &File, bufs: &[VolatileSlice], offset: u64) -> io::Result<()> {
    vectored_all(file, bufs, offset, Direction::Write)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Read,
    Write,
}

fn vectored_all(
    file: &File,
    bufs: &[VolatileSlice],
    offset: u64,
    dir: Direction,
) -> io::Result<()> {
    // The guards keep each slice's pointer valid until the calls are done.
    let guards: Vec<_> = bufs.iter().map(|b| b.ptr_guard_mut()).collect();
    let mut iovs: Vec<libc::iovec> = guards
        .iter()
        .filter(|g| g.len() > 0)
        .map(|g| libc::iovec {
            iov_base: g.as_ptr().cast(),
            iov_len: g.len(),
        })
        .collect();
    let mut left: &mut [libc::iovec] = &mut iovs;
    let mut pos = offset;
    while !left.is_empty() {
        let off = i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let count = left.len().min(IOV_MAX) as libc::c_int;
        let rc = match dir {
            // SAFETY: each iovec covers (a tail of) a VolatileSlice that vm-memory checked lies
            // inside guest memory, kept mapped by its guard in `guards` for the call; preadv
            // writes at most `iov_len` bytes into each and touches no other memory of ours.
            Direction::Read => unsafe { libc::preadv(file.as_raw_fd(), left.as_ptr(), count, off) },
            // SAFETY: as above; pwritev only reads the iovecs' bytes.
            Direction::Write => unsafe {
                libc::pwritev(file.as_raw_fd(), left.as_ptr(), count, off)
            },
        };
        let done = match usize::try_from(rc) {
            Ok(0) => {
                return Err(match dir {
                    Direction::Read => io::ErrorKind::UnexpectedEof.into(),
                    Direction::Write => io::ErrorKind::WriteZero.into(),
                })
            }
            Ok(n) => n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
        };
        pos += done as u64;
        left = advance(left, done);
    }
    Ok(())
}

/// Drops the first `n` bytes from the iovecs: whole ones off the front, then the start of
/// the next (pointer arithmetic within its own buffer, `wrapping_add` needs no unsafe).
fn advance(iovs: &mut [libc::iovec], mut n: usize) -> &mut [libc::iovec] {
    let mut skip = 0;
    while skip < iovs.len() && n >= iovs[skip].iov_len {
        n -= iovs[skip].iov_len;
        skip += 1;
    }
    let rest = &mut iovs[skip..];
    if let Some(first) = rest.first_mut() {
        first.iov_base = first.iov_base.cast::<u8>().wrapping_add(n).cast();
        first.iov_len -= n;
    }
    rest
}

/// User and system CPU time of the whole process so far, in nanoseconds.
pub fn process_cpu_ns() -> io::Result<(u64, u64)> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage into the pointed-to buffer, which has its size.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    check(rc)?;
    // SAFETY: getrusage succeeded, so the struct is initialised (it was zeroed before, too).
    let ru = unsafe { ru.assume_init() };
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    Ok((ns(ru.ru_utime), ns(ru.ru_stime)))
}

/// Clock ticks per second (the unit of /proc's CPU times), if the system says.
pub fn clock_ticks_per_second() -> Option<u64> {
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0)
}

/// True when the process runs with effective user id 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let (u0, s0) = process_cpu_ns().unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let (u1, s1) = process_cpu_ns().unwrap();
        assert!(u1 + s1 > u0 + s0, "{x}");
    }

    #[test]
    fn clock_ticks_are_known() {
        assert!(clock_ticks_per_second().is_some());
    }

    #[test]
    fn tun_names_that_do_not_fit_are_refused_before_any_ioctl() {
        let f = File::open("/dev/null").unwrap();
        for name in ["", "a-name-too-long-for-ifnamsiz", "nul\0inside"] {
            let e = tun_set_iff(&f, name, 0).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }

    #[test]
    fn vectored_io_moves_every_byte_and_reports_end_of_file() {
        let path = std::env::temp_dir().join(format!("vmbench-sys-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let mut a = [1u8; 3];
        let mut b = [2u8; 5000];
        let mut empty = [0u8; 0];
        let bufs = [
            VolatileSlice::from(&mut a[..]),
            VolatileSlice::from(&mut empty[..]),
            VolatileSlice::from(&mut b[..]),
        ];
        pwritev_all(&file, &bufs, 10).unwrap();
        let mut back = vec![0u8; 5003];
        let mut c = [0u8; 4003];
        let mut d = [0u8; 1000];
        preadv_exact(
            &file,
            &[
                VolatileSlice::from(&mut c[..]),
                VolatileSlice::from(&mut d[..]),
            ],
            10,
        )
        .unwrap();
        back[..4003].copy_from_slice(&c);
        back[4003..].copy_from_slice(&d);
        assert_eq!(&back[..3], &[1, 1, 1]);
        assert!(back[3..].iter().all(|&x| x == 2));
        let e = preadv_exact(&file, &[VolatileSlice::from(&mut d[..])], 5000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn advance_drops_whole_and_partial_iovecs() {
        let mut x = [0u8; 10];
        let base = x.as_mut_ptr();
        let mut iovs = [
            libc::iovec {
                iov_base: base.cast(),
                iov_len: 4,
            },
            libc::iovec {
                iov_base: base.wrapping_add(4).cast(),
                iov_len: 6,
            },
        ];
        let rest = advance(&mut iovs, 6);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].iov_len, 4);
        assert_eq!(rest[0].iov_base as usize, base as usize + 6);
        assert!(advance(rest, 4).is_empty());
    }

    #[test]
    fn fallocate_refuses_offsets_past_i64() {
        let f = File::open("/dev/null").unwrap();
        let e = fallocate(&f, 0, u64::MAX, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
