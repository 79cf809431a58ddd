//! What an untrusted guest can throw at the function: PRD entries and tables outside guest
//! RAM, tables without an end-of-table bit, addresses past the disk, data port cycles without
//! DRQ, Start without a command, unknown commands. The guest gets what the real controller and
//! drive give; guest memory outside the PRD regions is never touched.

use super::*;

const TABLE: u32 = 0x1000;
const MEM: usize = 8 << 20;

fn start_read_dma(f: &mut Fx, lba: u32, count: u8) {
    f.bm_setup(TABLE, true);
    f.lba28(lba, count);
    f.cmd(op::READ_DMA);
    f.bm_start();
}

fn master_abort_bit(f: &Fx) -> bool {
    f.piix.config_read(1) & (1 << 29) != 0
}

#[test]
fn a_prd_entry_past_guest_memory_is_a_master_abort() {
    let mut f = Fx::new();
    f.prd(u64::from(TABLE), &[(0xf000_0000, 512, true)]);

    start_read_dma(&mut f, 0, 1);

    // Error set, Active cleared, no interrupt; the drive still waits in its data phase.
    assert_eq!(f.bm_status(), 0x02);
    assert_eq!((f.alt(), f.irq()), (0x58, false));
    assert!(master_abort_bit(&f));
    assert_eq!(f.counter("bm_errors"), 1);
    // Software clears the error bits and resets the drive.
    f.outb(BM + 2, 0x02);
    f.piix.config_write(1, 2, &[0x00, 0x20]);
    f.outb(P_CTL, 0x04);
    f.outb(P_CTL, 0x00);
    assert_eq!((f.bm_status(), f.status()), (0x00, 0x50));
    assert!(!master_abort_bit(&f));
}

#[test]
fn a_region_running_off_the_end_of_ram_aborts_without_leaving_it() {
    let mut f = Fx::new();
    f.prd(u64::from(TABLE), &[(MEM as u32 - 256, 512, true)]);
    start_read_dma(&mut f, 0, 1);
    assert_eq!(f.bm_status() & 0x03, 0x02);
    assert!(master_abort_bit(&f));
}

#[test]
fn a_prd_table_outside_guest_memory_is_a_master_abort() {
    let mut f = Fx::new();
    f.bm_setup(0xffff_fff8, true);
    f.lba28(0, 1);
    f.cmd(op::READ_DMA);
    f.bm_start();
    assert_eq!(f.bm_status(), 0x02);
    assert!(master_abort_bit(&f));
}

#[test]
fn a_dma_write_from_outside_guest_memory_writes_nothing() {
    let mut f = Fx::new();
    f.prd(u64::from(TABLE), &[(0x8000_0000, 1024, true)]);
    f.bm_setup(TABLE, false);
    f.lba28(0, 2);
    f.cmd(op::WRITE_DMA);
    f.bm_start();
    assert_eq!(f.bm_status(), 0x02);
    assert_eq!(f.disk.lock().unwrap().writes, 0);
}

#[test]
fn a_table_without_end_of_table_stops_after_8192_entries() {
    let mut f = Fx::new();
    // 8192 two-byte regions cover 16 KiB; the command wants 32 KiB.
    let entries: Vec<(u32, u32, bool)> = (0..PRD_MAX_ENTRIES)
        .map(|_| (0x20_0000, 2, false))
        .collect();
    f.prd(u64::from(TABLE), &entries);
    f.prd(
        u64::from(TABLE) + 8 * u64::from(PRD_MAX_ENTRIES),
        &[(0x30_0000, 0, true)],
    );

    start_read_dma(&mut f, 0, 64);

    assert_eq!(f.bm_status(), 0x02);
    assert_eq!(f.alt(), 0x58);
    assert_eq!(
        f.guest(0x30_0000, 16),
        [0; 16],
        "nothing past the 8192nd entry"
    );
    assert!(!master_abort_bit(&f));
}

#[test]
fn a_table_without_end_of_table_is_fine_when_the_transfer_ends_first() {
    let mut f = Fx::new();
    f.prd(
        u64::from(TABLE),
        &[(0x20_0000, 256, false), (0x20_0100, 256, false)],
    );
    start_read_dma(&mut f, 0, 1);
    assert_eq!((f.bm_status(), f.status()), (0x05, 0x50));
}

#[test]
fn lba_past_the_end_is_idnf_for_every_protocol() {
    let sectors = 4096;
    let mut f = Fx::with(Opts {
        sectors,
        ..Default::default()
    });
    for (opcode, ext) in [
        (op::READ_SECTORS, false),
        (op::WRITE_SECTORS, false),
        (op::READ_DMA, false),
        (op::WRITE_DMA_EXT, true),
        (op::READ_SECTORS_EXT, true),
    ] {
        if ext {
            f.lba48(sectors - 1, 2); // runs one sector past the end
        } else {
            f.lba28(sectors as u32, 1);
        }
        f.cmd(opcode);
        let raised = f.irq();
        assert_eq!(
            (f.status(), f.error(), raised),
            (0x41, 0x10, true),
            "{opcode:#x}"
        );
    }
    assert_eq!(f.counter("cmd_errors"), 5);
    assert_eq!(f.disk.lock().unwrap().writes, 0);
}

#[test]
fn data_port_cycles_without_drq_are_ignored() {
    let mut f = Fx::new();
    let idle = (f.inw(P_DATA), f.inl(P_DATA));
    f.outw(P_DATA, 0x1234);
    // During data-out, reads do not consume the buffer; during data-in, writes do nothing.
    f.lba28(2, 1);
    f.cmd(op::WRITE_SECTORS);
    let during_out = f.inw(P_DATA);
    f.write_words(&[0x5a; 512]);
    f.lba28(2, 1);
    f.cmd(op::READ_SECTORS);
    f.outw(P_DATA, 0xffff);
    let back = f.read_words(256);

    assert_eq!(idle, (0xff7f, 0xff7f_ff7f));
    assert_eq!(during_out, 0xff7f);
    assert_eq!(back, [0x5a; 512]);
    assert_eq!(f.counter("pio_words"), 512);
}

#[test]
fn byte_accesses_to_the_data_port_run_no_cycle() {
    let mut f = Fx::new();
    f.lba28(0, 1);
    f.cmd(op::READ_SECTORS);
    let b = f.inb(P_DATA);
    f.outb(P_DATA, 0x11);
    assert_eq!(b, 0xff);
    assert_eq!(f.read_words(256), pattern_range(0, 512));
}

#[test]
fn start_without_a_command_only_sets_active() {
    let mut f = Fx::new();
    f.prd(u64::from(TABLE), &[(0x10_0000, 512, true)]);
    f.mem
        .write_slice(&[0xcc; 512], GuestAddress(0x10_0000))
        .unwrap();
    f.bm_setup(TABLE, true);
    f.bm_start();
    let started = (f.bm_status(), f.alt());
    f.bm_stop();
    assert_eq!(started, (0x01, 0x50));
    assert_eq!(f.bm_status(), 0x00);
    assert_eq!(f.guest(0x10_0000, 512), [0xcc; 512]);
    // The secondary channel has no drive: Start does nothing there either.
    f.outb(BM + 8, CMD_START);
    assert_eq!(f.inb(BM + 10), 0x01);
}

#[test]
fn unknown_and_packet_commands_abort() {
    let mut f = Fx::new();
    for opcode in [
        0x00, 0x08, 0x10, 0x27, 0x40, 0x91, 0xa0, 0xa1, 0xb0, 0xf8, 0xff,
    ] {
        f.cmd(opcode);
        let raised = f.irq();
        assert_eq!(
            (f.status(), f.error(), raised),
            (0x41, 0x04, true),
            "{opcode:#x}"
        );
    }
}

#[test]
fn a_command_during_drq_is_ignored() {
    let mut f = Fx::new();
    f.lba28(1, 1);
    f.cmd(op::READ_SECTORS);
    f.status();
    let first = f.read_words(8);
    f.cmd(op::IDENTIFY_DEVICE);
    let rest = f.read_words(248);
    assert_eq!([first, rest].concat(), pattern_range(512, 512));
    assert_eq!(f.counter("cmd_identify"), 0);
}

#[test]
fn wide_and_straddling_register_accesses_stay_in_range() {
    let mut f = Fx::new();
    // A dword read at the status port covers 0x1f7-0x1fa; only 0x1f7 is ours.
    let v = f.inl(P_CMD);
    let ctl = f.inw(P_CTL);
    f.outl(P_LBAL, 0x0403_0201);
    assert_eq!(v, 0xffff_ff50);
    assert_eq!(ctl, 0xff50);
    assert_eq!(
        (f.inb(P_LBAL), f.inb(P_LBAM), f.inb(P_LBAH), f.inb(P_DEV)),
        (1, 2, 3, 4)
    );
    // Bus-master block: a dword at +12 reaches the secondary PRD pointer only.
    f.outl(BM + 12, 0xffff_ffff);
    assert_eq!(f.inl(BM + 12), 0xffff_fffc);
    assert_eq!(f.inl(BM + 14), 0xffff_ffff); // two bytes of pointer, two unclaimed
}
