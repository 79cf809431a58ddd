//! The halt watch (`vmm::machine::halt`) on real vCPUs: a machine started as a Linux guest
//! (the 64-bit boot protocol, CPL0) whose "kernel" is a few instructions, so the test does not
//! depend on a kernel image or on a host that runs Linux at full speed. A vCPU halted with
//! interrupts masked (how Linux powers off without ACPI), beside one never started, ends the
//! machine with `Event::Halted`; a vCPU that halts with interrupts enabled, or spins with them
//! masked, does not. Guest CPL0 code is emulated on some hosts (KVM-PVM): four instructions
//! are enough there too.

use std::io::Write;
use std::time::{Duration, Instant};

use vmm::event::Event;
use vmm::machine::{LinuxBoot, Machine, MachineConfig};

/// Where the little kernel loads and starts (above 1 MiB, as an ELF vmlinux must).
const LOAD: u64 = 0x100_0000;
const EHDR: usize = 64;
const PHDR: usize = 56;

/// A minimal ELF64 x86-64 executable: one PT_LOAD of the headers and `code`, entered at the
/// code.
fn elf_kernel(code: &[u8]) -> tempfile::NamedTempFile {
    let code_at = (EHDR + PHDR) as u64;
    let size = code_at + code.len() as u64;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, System V
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(LOAD + code_at).to_le_bytes()); // e_entry
    e.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&(EHDR as u16).to_le_bytes());
    e.extend_from_slice(&(PHDR as u16).to_le_bytes());
    e.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shentsize
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    assert_eq!(e.len(), EHDR);
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    e.extend_from_slice(&LOAD.to_le_bytes()); // p_vaddr
    e.extend_from_slice(&LOAD.to_le_bytes()); // p_paddr
    e.extend_from_slice(&size.to_le_bytes()); // p_filesz
    e.extend_from_slice(&size.to_le_bytes()); // p_memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    assert_eq!(e.len(), EHDR + PHDR);
    e.extend_from_slice(code);
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&e).unwrap();
    f
}

const CLI: u8 = 0xfa;
const STI: u8 = 0xfb;
const HLT: u8 = 0xf4;
/// `jmp` back to the instruction before (a halt woken up halts again; a spin spins).
const JMP_BACK_1: [u8; 2] = [0xeb, 0xfd];
const JMP_SELF: [u8; 2] = [0xeb, 0xfe];

/// Runs `code` as the kernel of a `vcpus`-vCPU Linux machine until it ends or `wait` passes;
/// the ending event, if any.
fn run(code: &[u8], vcpus: usize, wait: Duration) -> Option<String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        panic!("these tests need /dev/kvm (run them as root on a KVM host)");
    }
    let kernel = elf_kernel(code);
    let mut m = Machine::new(&MachineConfig {
        vcpus,
        mem_mib: 128,
        linux: Some(LinuxBoot {
            kernel: kernel.path().to_path_buf(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
        }),
        ..Default::default()
    })
    .expect("the machine is built");
    m.start().expect("the vCPUs start");
    let end = Instant::now() + wait;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match m.events().recv_timeout(left) {
            Ok(Event::Halted { .. }) => return Some("halted".into()),
            Ok(Event::Crash { reason, .. }) => return Some(format!("crashed: {reason}")),
            Ok(Event::Reset { .. }) => return Some("reset".into()),
            Ok(Event::Exit { code, .. }) => return Some(format!("exit {code}")),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    m.stop();
    None
}

#[test]
fn a_machine_whose_vcpus_halted_with_interrupts_masked_is_off() {
    // vCPU 0 halts as Linux's stop_this_cpu does; vCPU 1 was never started (no SIPI).
    let mut code = vec![CLI, HLT];
    code.extend_from_slice(&JMP_BACK_1);
    let begin = Instant::now();
    let end = run(&code, 2, Duration::from_secs(20));
    assert_eq!(end.as_deref(), Some("halted"));
    // Two looks of the watch, plus the emulated instructions; far below the 20 s allowed.
    assert!(
        begin.elapsed() < Duration::from_secs(10),
        "{:?}",
        begin.elapsed()
    );
}

#[test]
fn a_vcpu_halted_with_interrupts_enabled_or_spinning_keeps_the_machine_on() {
    // Idle (an interrupt could wake it) and a spin with interrupts masked (it runs).
    let mut idle = vec![STI, HLT];
    idle.extend_from_slice(&JMP_BACK_1);
    let mut spin = vec![CLI];
    spin.extend_from_slice(&JMP_SELF);
    for code in [idle, spin] {
        let end = run(&code, 1, Duration::from_secs(2));
        assert_eq!(end, None, "{code:02x?}");
    }
}
