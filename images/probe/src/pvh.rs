//! The PVH entry, so that other VMMs (QEMU `-kernel probe.elf`) can start the probe: a 32-bit
//! CPL0 stub that builds what vmbench's VMM otherwise provides (GDT, TSS with an all-ports I/O
//! bitmap, identity page tables, at the probe-abi layout addresses) and drops to `_start` at
//! CPL3 with RDI = 0 and RSI = the start info.
//!
//! References: the Xen x86/HVM direct boot ABI (xen/docs/misc/pvh.pandoc: 32-bit protected
//! mode, paging off, flat CS/DS, EBX = physical address of `struct hvm_start_info`, see
//! xen/include/public/arch-x86/hvm/start_info.h), its entry-point ELF note
//! (`XEN_ELFNOTE_PHYS32_ENTRY` = 18, xen/include/public/elfnote.h) and, for long mode, Intel
//! SDM vol. 3A, 10.8.5 (Initializing IA-32e Mode).
//!
//! QEMU's pvh.bin (SeaBIOS, microvm) leaves the start info, memory map and command line in
//! the first pages, under the GDT and TSS, so the stub first copies them to the boot-info and
//! command-line pages and passes the copy. Every instruction here runs at CPL0, which KVM-PVM
//! emulates one by one (about 1 µs each): the stub does the least it can, string stores and
//! one unrolled loop over the page directories (about 10 ms there, 0.5 ms under TCG).

use core::arch::global_asm;

use probe_abi::layout::{
    BOOT_INFO, CMDLINE, CMDLINE_MAX, GDT, IDT, IDT_SIZE, MMIO_HOLE, PD, PDPT, PML4, STACKS,
    STACK_SIZE, TSS,
};

/// Where the stub copies the start info (version 1: 56 bytes) and its memory map. Under PVH
/// the probe builds its boot information from the start info (start_info.rs) and never reads
/// the block at BOOT_INFO, so its page is free; the command line goes to CMDLINE.
const START_INFO: u64 = BOOT_INFO;
const START_INFO_SIZE: u64 = 56;
const MEMMAP: u64 = BOOT_INFO + 0x40;
const MEMMAP_ENTRY_SIZE: u64 = 24;
/// As many entries as start_info.rs reads; they fit below CMDLINE.
const MAX_MEMMAP_ENTRIES: u64 = 128;
const _: () = assert!(MEMMAP + MAX_MEMMAP_ENTRIES * MEMMAP_ENTRY_SIZE <= CMDLINE);
/// Offsets in `hvm_start_info`.
const SI_VERSION: u64 = 4;
const SI_CMDLINE: u64 = 24;
const SI_MEMMAP: u64 = 40;
const SI_MEMMAP_ENTRIES: u64 = 48;

/// The I/O permission bitmap starts right after the 104-byte 64-bit TSS and covers all 65536
/// ports (0x2000 bytes, all clear: every port allowed); the byte after it must be 0xFF.
const IO_BITMAP: u64 = 0x68;
const TSS_LIMIT: u64 = IO_BITMAP + 0x2000;
/// GiB of identity map: RAM up to the 32-bit MMIO hole, and the hole (uncached).
const MAPPED_GIB: u64 = 4;
const HOLE_GIB: u64 = MMIO_HOLE >> 30;
const _: () = assert!(MMIO_HOLE.is_multiple_of(1 << 30) && HOLE_GIB < MAPPED_GIB);

/// Page-table entry bits (SDM vol. 3A, 4.5): present, writable, user, cache-disable, 2 MiB.
const PTE: u64 = 0x7;
const PCD: u64 = 0x10;
const PS: u64 = 0x80;

/// CR0: PE | MP | ET | NE | PG (EM and TS clear: SSE usable at CPL3, caches on).
const CR0: u64 = 0x8000_0033;
/// CR4: PAE | OSFXSR | OSXMMEXCPT.
const CR4: u64 = 0x620;
const EFER_MSR: u64 = 0xc000_0080;
const EFER_LME: u64 = 0x100;

/// Null, kernel code and data, user code and data, TSS (two entries).
const GDT_ENTRIES: u64 = 7;
/// Selectors, as vmm/src/boot/gdt.rs lays the GDT out.
const KERNEL_CS: u64 = 0x08;
pub(crate) const USER_CS: u64 = 0x18 | 3;
const USER_DS: u64 = 0x20 | 3;
const TSS_SEL: u64 = 0x28;
/// IOPL = 3, interrupts on (the probe cannot execute STI at CPL3 under KVM-PVM; nothing
/// arrives before it enables its local APIC), reserved bit 1.
const USER_RFLAGS: u64 = 0x3202;
/// The 8259 PICs' data ports (interrupt masks). Both PICs and the local APIC's LINT0 and LINT1
/// entries (`irq::LAPIC_LVT0/1`) are masked, so the only interrupts are the MSIs and IPIs the
/// probe asks for (vmbench's VMM masks LINT0/1 the same way; vmm/src/kvm/vcpu.rs).
const PIC1_DATA: u64 = 0x21;
const PIC2_DATA: u64 = 0xa1;

global_asm!(
    ".section .text.pvh, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "    cld",
    // The start info, its memory map and the command line may lie where the GDT and TSS go
    // (QEMU's pvh.bin puts them at 0x500-0x2300): copy them out first, fixing the pointers.
    "    xor ebp, ebp",
    "    test ebx, ebx",
    "    jz .Lpvh_tables",
    "    mov ebp, {si}",
    "    mov esi, ebx",
    "    mov edi, ebp",
    "    mov ecx, {si_size} / 4",
    "    rep movsd",
    "    cmp dword ptr [{si} + {si_version}], 1",
    "    jb .Lpvh_cmdline",
    "    mov esi, [{si} + {si_memmap}]",
    "    test esi, esi",
    "    jz .Lpvh_cmdline",
    "    mov ecx, [{si} + {si_entries}]",
    "    mov eax, {max_entries}",
    "    cmp ecx, eax",
    "    cmova ecx, eax",
    "    mov [{si} + {si_entries}], ecx",
    "    mov dword ptr [{si} + {si_memmap}], {memmap}",
    "    mov dword ptr [{si} + {si_memmap} + 4], 0",
    "    mov edi, {memmap}",
    "    imul ecx, ecx, {entry_size} / 4",
    "    rep movsd",
    ".Lpvh_cmdline:",
    "    mov esi, [{si} + {si_cmdline}]",
    "    test esi, esi",
    "    jz .Lpvh_tables",
    "    mov dword ptr [{si} + {si_cmdline}], {cmdline}",
    "    mov dword ptr [{si} + {si_cmdline} + 4], 0",
    "    mov edi, {cmdline}",
    "    mov ecx, {cmdline_max} - 1",
    ".Lpvh_cmdline_byte:",
    "    lodsb",
    "    test al, al",
    "    jz .Lpvh_cmdline_end",
    "    stosb",
    "    loop .Lpvh_cmdline_byte",
    ".Lpvh_cmdline_end:",
    "    mov byte ptr [edi], 0",
    ".Lpvh_tables:",
    // TSS and I/O bitmap: zeroed, bitmap offset, terminating 0xFF.
    "    xor eax, eax",
    "    mov edi, {tss}",
    "    mov ecx, {tss_limit} / 4",
    "    rep stosd",
    "    mov byte ptr [{tss} + {tss_limit}], 0xff",
    "    mov word ptr [{tss} + 0x66], {io_bitmap}",
    // GDT from the template below.
    "    mov esi, offset .Lpvh_gdt",
    "    mov edi, {gdt}",
    "    mov ecx, {gdt_entries} * 2",
    "    rep movsd",
    // PML4 and PDPT: zeroed, then one PML4 entry and one PDPT entry per mapped GiB.
    "    mov edi, {pml4}",
    "    mov ecx, 2 * 4096 / 4",
    "    rep stosd",
    "    mov dword ptr [{pml4}], {pdpt} + {pte}",
    "    mov edi, {pdpt}",
    "    mov eax, {pd} + {pte}",
    "    mov ecx, {gib}",
    "1:  mov [edi], eax",
    "    add edi, 8",
    "    add eax, 4096",
    "    loop 1b",
    // Page directories: 2 MiB pages, cache disabled from the MMIO hole on. EDX stays 0 (the
    // high halves); the second pass over the hole starts where the first stopped.
    "    xor edx, edx",
    "    mov edi, {pd}",
    "    mov eax, {pte} + {ps}",
    // Eight entries per turn: each instruction costs here, the loop's own ones too.
    "    mov ecx, {hole_gib} * 512 / 8",
    "2:",
    ".irp i, 0, 8, 16, 24, 32, 40, 48, 56",
    "    mov [edi + \\i], eax",
    "    mov [edi + \\i + 4], edx",
    "    add eax, 0x200000",
    ".endr",
    "    add edi, 64",
    "    loop 2b",
    "    test eax, {pcd}",
    "    jnz 3f",
    "    or eax, {pcd}",
    "    mov ecx, ({gib} - {hole_gib}) * 512 / 8",
    "    jmp 2b",
    // Long mode: PAE, tables, EFER.LME, then paging; the far jump leaves compatibility mode.
    "3:  mov eax, {cr4}",
    "    mov cr4, eax",
    "    mov eax, {pml4}",
    "    mov cr3, eax",
    "    mov ecx, {efer}",
    "    rdmsr",
    "    or eax, {lme}",
    "    wrmsr",
    "    lgdt [.Lpvh_gdtr]",
    // The IDT, every gate absent (the probe installs its own), and no PIC or LINT interrupt.
    "    mov edi, {idt}",
    "    xor eax, eax",
    "    mov ecx, {idt_size} / 4",
    "    rep stosd",
    "    lidt [.Lpvh_idtr]",
    "    mov al, 0xff",
    "    out {pic1}, al",
    "    out {pic2}, al",
    "    or dword ptr [{lvt0}], {lvt_masked}",
    "    or dword ptr [{lvt1}], {lvt_masked}",
    "    mov eax, {cr0}",
    "    mov cr0, eax",
    "    ljmp {kernel_cs}, offset .Lpvh64",
    ".code64",
    ".Lpvh64:",
    "    mov ax, {tss_sel}",
    "    ltr ax",
    "    mov esp, {stack_top}",
    "    mov esi, ebp",
    "    xor edi, edi",
    "    push {user_ds}",
    "    push {stack_top} - 8",
    "    push {rflags}",
    "    push {user_cs}",
    "    push offset _start",
    "    iretq",
    // The GDT (vmm/src/boot/gdt.rs has the same): null, kernel code and data, user code and
    // data, then the 16-byte descriptor of an available 64-bit TSS (ltr marks it busy).
    ".balign 8",
    ".Lpvh_gdt:",
    "    .quad 0",
    "    .quad 0x00af9b000000ffff",
    "    .quad 0x00cf93000000ffff",
    "    .quad 0x00affb000000ffff",
    "    .quad 0x00cff3000000ffff",
    "    .quad {tss_limit} | (({tss} & 0xffffff) << 16) | (0x89 << 40) | ((({tss} >> 24) & 0xff) << 56)",
    "    .quad {tss} >> 32",
    ".Lpvh_gdtr:",
    "    .word {gdt_entries} * 8 - 1",
    "    .quad {gdt}",
    ".Lpvh_idtr:",
    "    .word {idt_size} - 1",
    "    .quad {idt}",
    // The entry point for PVH loaders: namesz, descsz, type, "Xen\0", 32-bit address.
    ".pushsection .note.Xen, \"a\", @note",
    ".balign 4",
    "    .long 4",
    "    .long 4",
    "    .long 18",
    "    .asciz \"Xen\"",
    "    .balign 4",
    "    .long pvh_start32",
    "    .balign 4",
    ".popsection",
    si = const START_INFO,
    si_size = const START_INFO_SIZE,
    si_version = const SI_VERSION,
    si_cmdline = const SI_CMDLINE,
    si_memmap = const SI_MEMMAP,
    si_entries = const SI_MEMMAP_ENTRIES,
    memmap = const MEMMAP,
    max_entries = const MAX_MEMMAP_ENTRIES,
    entry_size = const MEMMAP_ENTRY_SIZE,
    cmdline = const CMDLINE,
    cmdline_max = const CMDLINE_MAX,
    gdt = const GDT,
    gdt_entries = const GDT_ENTRIES,
    tss = const TSS,
    tss_limit = const TSS_LIMIT,
    io_bitmap = const IO_BITMAP,
    pml4 = const PML4,
    pdpt = const PDPT,
    pd = const PD,
    pte = const PTE,
    ps = const PS,
    pcd = const PCD,
    gib = const MAPPED_GIB,
    hole_gib = const HOLE_GIB,
    cr0 = const CR0,
    cr4 = const CR4,
    efer = const EFER_MSR,
    lme = const EFER_LME,
    kernel_cs = const KERNEL_CS,
    tss_sel = const TSS_SEL,
    user_cs = const USER_CS,
    user_ds = const USER_DS,
    rflags = const USER_RFLAGS,
    idt = const IDT,
    idt_size = const IDT_SIZE,
    pic1 = const PIC1_DATA,
    pic2 = const PIC2_DATA,
    lvt0 = const crate::irq::LAPIC_LVT0,
    lvt1 = const crate::irq::LAPIC_LVT1,
    lvt_masked = const crate::irq::LVT_MASKED,
    stack_top = const STACKS + STACK_SIZE,
);
