//! The floor under vmbench's exit handling: the probe's `calibrate` workload run by a bare
//! KVM_RUN loop on one vCPU, with no bus, no device lookup, no exit accounting and no threads
//! besides the vCPU's own. Each exit is matched on its port or address and answered at once;
//! the mailbox doorbell's records are printed as they arrive.
//!
//! Compare its `calibrate` figures with vmbench's own on the same host, interleaved:
//!
//! ```text
//! cargo run --release -p vmm --example exit_floor -- PROBE_ELF ["calibrate n=2000"]
//! cargo run --release -- boot --probe-exec "calibrate n=2000"
//! ```
//!
//! The probe measures each round trip with the TSC inside the guest, so both numbers are the
//! same measurement; the difference is what vmbench's dispatch adds to an exit.

use std::path::PathBuf;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VcpuExit};
use probe_abi::{flags, layout, ports};
use vm_memory::{Bytes, GuestAddress};
use vmm::boot::{self, ProbeParams};
use vmm::kvm::{self, vcpu};
use vmm::machine::{CALIB_IOEVENTFD, CALIB_MMIO, CALIB_PORT, ENTRY_MARK_PORT, MAILBOX_PORT};
use vmm_sys_util::eventfd::EventFd;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let probe = PathBuf::from(args.next().ok_or("usage: exit_floor PROBE_ELF [EXEC]")?);
    let exec = args.next().unwrap_or_else(|| "calibrate n=2000".into());
    let mem_size = 64 << 20;

    let kvm_fd = kvm::open()?;
    let vm = kvm::create_vm(&kvm_fd)?;
    let mem = kvm::memory::create(&vm, mem_size)?;
    let entry = boot::load_probe(&mem, &probe)?;
    let ioeventfd = EventFd::new(libc::EFD_NONBLOCK)?;
    vm.register_ioevent(
        &ioeventfd,
        &IoEventAddress::Mmio(CALIB_IOEVENTFD),
        NoDatamatch,
    )?;
    let starts = boot::setup(&mem, entry, mem_size, 1)?;
    let mut v = vcpu::create(&vm, &kvm_fd, 0, &starts[0])?;
    let params = ProbeParams {
        mem_size,
        vcpus: 1,
        tsc_khz: v.get_tsc_khz()?,
        flags: flags::VMBENCH | flags::MAILBOX | flags::IOEVENTFD,
        entry_mark_port: ENTRY_MARK_PORT,
        mailbox_port: MAILBOX_PORT,
        calib_port: CALIB_PORT,
        calib_mmio: CALIB_MMIO,
        calib_ioeventfd: CALIB_IOEVENTFD,
        exec: &exec,
    };
    boot::write_boot_info(&mem, &params)?;

    loop {
        match v.run()? {
            VcpuExit::IoOut(port, data) if port == MAILBOX_PORT => {
                let mut len = [0u8; 8];
                len[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
                let len = u64::from_le_bytes(len).min(layout::MAILBOX_SIZE) as usize;
                let mut text = vec![0u8; len];
                mem.read_slice(&mut text, GuestAddress(layout::MAILBOX))?;
                println!("{}", String::from_utf8_lossy(&text).trim_end());
            }
            VcpuExit::IoOut(port, data) if port == ports::DEBUG_EXIT => {
                println!("exit status {}", data.first().copied().unwrap_or(0));
                return Ok(());
            }
            VcpuExit::IoOut(..) | VcpuExit::MmioWrite(..) => {}
            VcpuExit::IoIn(_, data) | VcpuExit::MmioRead(_, data) => data.fill(0),
            other => return Err(format!("unexpected exit: {other:?}").into()),
        }
    }
}
