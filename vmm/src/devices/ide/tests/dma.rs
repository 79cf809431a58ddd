//! Bus-master DMA: PRD tables of several entries, 64 KiB entries, tables longer and shorter
//! than the transfer, the order of Start and command, bus-master enable and direction.

use super::*;

const TABLE: u32 = 0x1000;

/// READ DMA as libata issues it: set up the bus master, write the taskfile and the command,
/// then Start.
fn read_dma(f: &mut Fx, lba: u32, count: u8, entries: &[(u32, u32, bool)]) {
    f.prd(u64::from(TABLE), entries);
    f.bm_setup(TABLE, true);
    f.lba28(lba, count);
    f.cmd(op::READ_DMA);
    f.bm_start();
}

#[test]
fn read_dma_scatters_through_several_entries() {
    let mut f = Fx::new();
    let entries = [
        (0x10_0000, 1024, false),
        (0x20_0000, 2048, false),
        (0x30_0000, 1024, true),
    ];

    f.prd(u64::from(TABLE), &entries);
    f.bm_setup(TABLE, true);
    f.lba28(10, 8);
    f.cmd(op::READ_DMA);
    let before_start = (f.alt(), f.irq());
    f.bm_start();

    let want = pattern_range(10 * 512, 4096);
    assert_eq!(before_start, (0x58, false));
    assert_eq!(f.guest(0x10_0000, 1024), want[..1024]);
    assert_eq!(f.guest(0x20_0000, 2048), want[1024..3072]);
    assert_eq!(f.guest(0x30_0000, 1024), want[3072..]);
    // Table exactly as long as the transfer: Active clear, Interrupt set.
    assert_eq!(f.bm_status(), 0x04);
    assert!(f.irq());
    assert_eq!(f.status(), 0x50);
    f.bm_stop();
    assert_eq!(f.counter("dma_bytes"), 4096);
    assert_eq!(f.counter("cmd_dma_read"), 1);
}

#[test]
fn write_dma_ext_gathers_64k_entries_given_as_count_zero() {
    let mut f = Fx::new();
    let payload: Vec<u8> = (0..128 * 1024).map(|i| (i * 7 / 3) as u8).collect();
    f.mem
        .write_slice(&payload[..65536], GuestAddress(0x40_0000))
        .unwrap();
    f.mem
        .write_slice(&payload[65536..], GuestAddress(0x60_0000))
        .unwrap();
    f.prd(
        u64::from(TABLE),
        &[(0x40_0000, 0, false), (0x60_0000, 0, true)],
    );

    f.bm_setup(TABLE, false);
    f.lba48(0x8000, 256);
    f.cmd(op::WRITE_DMA_EXT);
    f.bm_start();

    assert_eq!((f.bm_status(), f.status()), (0x04, 0x50));
    assert_eq!(
        f.disk.lock().unwrap().bytes(0x8000 * 512, payload.len()),
        payload
    );
    assert_eq!(f.counter("sectors_written"), 256);
}

#[test]
fn a_longer_table_leaves_active_set_until_stop() {
    let mut f = Fx::new();
    read_dma(&mut f, 0, 1, &[(0x10_0000, 4096, true)]);

    let done = (f.bm_status(), f.status());
    f.bm_stop();

    assert_eq!(done, (0x05, 0x50)); // Active and Interrupt: the device finished first
    assert_eq!(f.bm_status(), 0x04);
    assert_eq!(f.guest(0x10_0000, 512), pattern_range(0, 512));
}

#[test]
fn a_shorter_table_stops_the_controller_and_leaves_the_drive_waiting() {
    let mut f = Fx::new();
    read_dma(&mut f, 20, 4, &[(0x10_0000, 1024, true)]);

    let stalled = (f.bm_status(), f.alt(), f.irq());
    // The drive still holds the rest: a new table and Start finish the command.
    f.bm_stop();
    f.prd(0x2000, &[(0x11_0000, 1024, true)]);
    f.outl(BM + 4, 0x2000);
    f.bm_start();

    assert_eq!(stalled, (0x00, 0x58, false)); // Active 0, Interrupt 0: PRDs too short
    assert_eq!(f.bm_status(), 0x04);
    assert_eq!(f.status(), 0x50);
    let want = pattern_range(20 * 512, 2048);
    assert_eq!(f.guest(0x10_0000, 1024), want[..1024]);
    assert_eq!(f.guest(0x11_0000, 1024), want[1024..]);
}

#[test]
fn start_before_the_command_runs_when_the_command_arrives() {
    let mut f = Fx::new();
    f.prd(u64::from(TABLE), &[(0x10_0000, 512, true)]);
    f.bm_setup(TABLE, true);
    f.bm_start();
    let idle = f.bm_status();

    f.lba28(5, 1);
    f.cmd(op::READ_DMA);

    assert_eq!(idle, 0x01);
    assert_eq!((f.bm_status(), f.status()), (0x04, 0x50));
    assert_eq!(f.guest(0x10_0000, 512), pattern_range(5 * 512, 512));
}

#[test]
fn nothing_moves_until_bus_mastering_is_enabled() {
    let mut f = Fx::new();
    f.piix.config_write(1, 0, &u32::from(CMD_IO).to_le_bytes());
    read_dma(&mut f, 1, 1, &[(0x10_0000, 512, true)]);
    let waiting = (f.bm_status(), f.alt());

    f.piix
        .config_write(1, 0, &u32::from(CMD_IO | CMD_BUS_MASTER).to_le_bytes());

    assert_eq!(waiting, (0x01, 0x58));
    assert_eq!((f.bm_status(), f.status()), (0x04, 0x50));
    assert_eq!(f.guest(0x10_0000, 512), pattern_range(512, 512));
}

#[test]
fn a_direction_bit_against_the_command_moves_nothing() {
    let mut f = Fx::new();
    f.mem
        .write_slice(&[0xee; 512], GuestAddress(0x10_0000))
        .unwrap();
    f.prd(u64::from(TABLE), &[(0x10_0000, 512, true)]);
    f.bm_setup(TABLE, false); // memory read, but READ DMA wants memory writes
    f.lba28(1, 1);
    f.cmd(op::READ_DMA);
    f.bm_start();

    assert_eq!((f.bm_status(), f.alt()), (0x01, 0x58));
    assert_eq!(f.guest(0x10_0000, 512), [0xee; 512]);
    // A software reset gets the drive back.
    f.outb(P_CTL, 0x04);
    f.outb(P_CTL, 0x00);
    assert_eq!(f.status(), 0x50);
}

#[test]
fn lba48_dma_count_zero_moves_65536_sectors() {
    let mut f = Fx::with(Opts {
        sectors: 70_000,
        mem: 40 << 20,
        ..Default::default()
    });
    let base = 0x10_0000u32;
    let entries: Vec<(u32, u32, bool)> = (0..512)
        .map(|i| (base + i * 0x1_0000, 0, i == 511))
        .collect();

    f.prd(u64::from(TABLE), &entries);
    f.bm_setup(TABLE, true);
    f.lba48(100, 0);
    f.cmd(op::READ_DMA_EXT);
    f.bm_start();

    assert_eq!((f.bm_status(), f.status()), (0x04, 0x50));
    assert_eq!(f.counter("dma_bytes"), 32 << 20);
    for s in [0u64, 1, 4095, 65535] {
        let got = f.guest(u64::from(base) + s * 512, 512);
        assert_eq!(got, pattern_range((100 + s) * 512, 512), "sector {s}");
    }
}

#[test]
fn lba28_dma_count_zero_moves_256_sectors() {
    let mut f = Fx::new();
    read_dma(&mut f, 0, 0, &[(0x10_0000, 0, false), (0x20_0000, 0, true)]);
    assert_eq!((f.bm_status(), f.status()), (0x04, 0x50));
    assert_eq!(f.guest(0x20_0000, 65536), pattern_range(65536, 65536));
}

#[test]
fn nien_leaves_the_interrupt_bit_clear_and_polling_sees_completion() {
    let mut f = Fx::new();
    f.outb(P_CTL, 0x02);
    read_dma(&mut f, 2, 1, &[(0x10_0000, 512, true)]);
    assert_eq!((f.bm_status(), f.alt(), f.irq()), (0x00, 0x50, false));
}

#[test]
fn flush_and_completion_counters_after_dma_writes() {
    let mut f = Fx::new();
    f.prd(u64::from(TABLE), &[(0x10_0000, 512, true)]);
    f.bm_setup(TABLE, false);
    f.lba28(3, 1);
    f.cmd(op::WRITE_DMA);
    f.bm_start();
    f.status();
    f.bm_stop();
    f.cmd(op::FLUSH_CACHE);

    assert_eq!(f.status(), 0x50);
    assert_eq!(f.disk.lock().unwrap().flushes, 1);
    assert_eq!(f.counter("cmd_dma_write"), 1);
    assert_eq!(f.counter("cmd_flush"), 1);
    assert_eq!(f.counter("interrupts"), 2);
}
