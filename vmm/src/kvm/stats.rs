//! KVM's own per-vCPU statistics through the binary stats interface (KVM_GET_STATS_FD,
//! Documentation/virt/kvm/api.rst 4.133): exits by kind as the kernel counts them, including
//! the ones that never reach user space (ioeventfd writes, halts, interrupt windows). Hosts
//! whose KVM lacks the interface simply report none.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;

use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::ioctl;
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);

/// Stat types (bits 0-3 of flags): cumulative counters are the ones that can be subtracted.
const TYPE_MASK: u32 = 0xf;
const TYPE_CUMULATIVE: u32 = 0;
const HEADER: usize = 24;
const DESC_FIXED: usize = 16;

/// One vCPU's stats file and the cumulative counters it offers: (name, offset in the data block).
pub struct VcpuStats {
    file: File,
    data_offset: u64,
    counters: Vec<(String, u64)>,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

impl VcpuStats {
    /// Opens the vCPU's stats file; `None` where the host's KVM does not offer one.
    pub fn open(vcpu: &VcpuFd) -> Option<VcpuStats> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new file descriptor (or
        // -1); `vcpu` is a valid vCPU fd for the duration of the call.
        let fd = unsafe { ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return None;
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let file = unsafe { File::from_raw_fd(fd) };
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, 0).ok()?;
        let name_size = u32_at(&h, 4)? as usize;
        let num_desc = u32_at(&h, 8)? as usize;
        let desc_offset = u64::from(u32_at(&h, 16)?);
        let data_offset = u64::from(u32_at(&h, 20)?);
        let desc_size = DESC_FIXED + name_size;
        if num_desc > 4096 || name_size > 4096 {
            return None;
        }
        let mut descs = vec![0u8; desc_size * num_desc];
        file.read_exact_at(&mut descs, desc_offset).ok()?;
        let mut counters = Vec::new();
        for d in descs.chunks(desc_size) {
            let flags = u32_at(d, 0)?;
            let size = u16_at(d, 6)?;
            let offset = u32_at(d, 8)?;
            if flags & TYPE_MASK != TYPE_CUMULATIVE || size != 1 {
                continue;
            }
            let name = &d[DESC_FIXED..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            counters.push((
                String::from_utf8_lossy(&name[..end]).into_owned(),
                u64::from(offset),
            ));
        }
        Some(VcpuStats {
            file,
            data_offset,
            counters,
        })
    }

    /// The cumulative counters now, by name.
    pub fn read(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Some(end) = self.counters.iter().map(|(_, o)| o + 8).max() else {
            return out;
        };
        let mut data = vec![0u8; end as usize];
        if self
            .file
            .read_exact_at(&mut data, self.data_offset)
            .is_err()
        {
            return out;
        }
        for (name, off) in &self.counters {
            let o = *off as usize;
            if let Some(v) = data.get(o..o + 8).and_then(|b| b.try_into().ok()) {
                out.insert(name.clone(), u64::from_le_bytes(v));
            }
        }
        out
    }
}

/// Every vCPU's counters summed, for a snapshot of the whole VM.
pub fn sum(stats: &[VcpuStats]) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for s in stats {
        for (k, v) in s.read() {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}
