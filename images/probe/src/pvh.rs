//! The PVH entry, so that other VMMs (QEMU `-kernel probe.elf`) can start the probe: a 32-bit
//! stub that builds what vmbench's VMM otherwise provides (GDT, TSS with an all-ports I/O
//! bitmap, identity page tables) and drops to `_start` at CPL3.
//!
//! References: the Xen x86/HVM direct boot ABI (xen/docs/misc/pvh.pandoc: entered in 32-bit
//! protected mode, paging off, flat CS/DS, EBX = physical address of `hvm_start_info`,
//! xen/include/public/arch-x86/hvm/start_info.h) and its entry-point ELF note
//! (`XEN_ELFNOTE_PHYS32_ENTRY` = 18, xen/include/public/elfnote.h). Long-mode set-up: Intel
//! SDM vol. 3A, 10.8.5 (Initializing IA-32e Mode).
//!
//! Every instruction here runs at CPL0, which KVM-PVM emulates one by one, so the stub does
//! the least it can: a handful of string stores and one loop over the page directories.

use core::arch::global_asm;

use probe_abi::layout::{GDT, PD, PDPT, PML4, STACKS, STACK_SIZE, TSS};

/// The I/O permission bitmap starts right after the 104-byte 64-bit TSS and covers all 65536
/// ports (0x2000 bytes, all clear: every port allowed); the byte after it must be 0xFF.
const IO_BITMAP: u64 = 0x68;
const TSS_LIMIT: u64 = IO_BITMAP + 0x2000;
/// GiB of identity map: RAM up to the 32-bit MMIO hole, and the hole (uncached).
const MAPPED_GIB: u64 = 4;
const HOLE_GIB: u64 = 3;

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
const USER_CS: u64 = 0x18 | 3;
const USER_DS: u64 = 0x20 | 3;
const TSS_SEL: u64 = 0x28;
/// IOPL = 3, interrupts off, reserved bit 1.
const USER_RFLAGS: u64 = 0x3002;

global_asm!(
    ".section .text.pvh, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "    cld",
    "    mov ebp, ebx",
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
    // PML4 and PDPT: zeroed, one entry each per level in use.
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
    "    mov ecx, {hole_gib} * 512",
    "2:  mov [edi], eax",
    "    mov [edi + 4], edx",
    "    add edi, 8",
    "    add eax, 0x200000",
    "    loop 2b",
    "    test eax, {pcd}",
    "    jnz 3f",
    "    or eax, {pcd}",
    "    mov ecx, ({gib} - {hole_gib}) * 512",
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
    stack_top = const STACKS + STACK_SIZE,
);
