//! PIO data-in and data-out: READ/WRITE SECTORS (EXT), READ/WRITE MULTIPLE (EXT), DRQ
//! blocks and the interrupts ATA/ATAPI-6 9.7-9.8 prescribe, sector counts of 0.

use super::*;

/// Reads a data-in command's blocks as libata's PIO path does: Status (acknowledging the
/// interrupt), then the block. Returns the data and the status seen before each block.
fn read_blocks(f: &mut Fx, block_sectors: &[usize]) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::new();
    let mut seen = Vec::new();
    for &n in block_sectors {
        assert!(f.irq(), "an interrupt announces every data-in block");
        seen.push(f.status());
        data.extend(f.read_words(n * SECTOR / 2));
    }
    (data, seen)
}

#[test]
fn read_sectors_lba28_gives_one_interrupt_per_sector() {
    // Above 2^24 sectors, so the device register's low nibble carries LBA bits 27:24.
    let mut f = Fx::with(Opts {
        sectors: 0x0300_0000,
        ..Default::default()
    });
    f.lba28(0x0212_3456, 3);
    f.cmd(op::READ_SECTORS);

    let (data, seen) = read_blocks(&mut f, &[1, 1, 1]);

    assert_eq!(data, pattern_range(0x0212_3456 * 512, 3 * 512));
    assert_eq!(seen, [0x58; 3]);
    assert_eq!(f.alt(), 0x50);
    assert_eq!(f.edges(), 3);
    assert!(!f.irq());
    assert_eq!(f.counter("sectors_read"), 3);
    assert_eq!(f.counter("pio_words"), 768);
}

#[test]
fn read_sectors_ext_reaches_high_lba48_addresses() {
    let lba = 0x12_3456_789a;
    let mut f = Fx::with(Opts {
        sectors: lba + 10,
        ..Default::default()
    });
    f.lba48(lba, 2);
    f.cmd(op::READ_SECTORS_EXT);

    let (data, _) = read_blocks(&mut f, &[1, 1]);

    assert_eq!(data, pattern_range(lba * 512, 1024));
    assert_eq!(f.alt(), 0x50);
}

#[test]
fn write_sectors_ext_takes_the_first_block_without_interrupt() {
    let lba = 0x01_0000_0010;
    let mut f = Fx::with(Opts {
        sectors: lba + 10,
        ..Default::default()
    });
    let payload: Vec<u8> = (0..1024).map(|i| (i * 3 + 1) as u8).collect();
    f.lba48(lba, 2);
    f.cmd(op::WRITE_SECTORS_EXT);

    let first = (f.alt(), f.irq());
    f.write_words(&payload[..512]);
    let second = (f.irq(), f.status());
    f.write_words(&payload[512..]);
    let done = (f.irq(), f.status());

    assert_eq!(first, (0x58, false));
    assert_eq!(second, (true, 0x58));
    assert_eq!(done, (true, 0x50));
    assert_eq!(f.disk.lock().unwrap().bytes(lba * 512, 1024), payload);
    assert_eq!(f.counter("sectors_written"), 2);
}

#[test]
fn read_multiple_moves_blocks_of_the_multiple_setting() {
    let mut f = Fx::new();
    f.outb(P_COUNT, 4);
    f.cmd(op::SET_MULTIPLE_MODE);
    assert_eq!(f.status(), 0x50);
    let w59 = f.identify()[59];

    f.lba28(100, 10);
    f.cmd(op::READ_MULTIPLE);
    let (data, seen) = read_blocks(&mut f, &[4, 4, 2]);

    assert_eq!(w59, 0x0104);
    assert_eq!(data, pattern_range(100 * 512, 10 * 512));
    assert_eq!(seen, [0x58; 3]);
    assert_eq!(f.alt(), 0x50);
}

#[test]
fn write_multiple_ext_interrupts_per_block_and_at_completion() {
    let mut f = Fx::new();
    f.outb(P_COUNT, 2);
    f.cmd(op::SET_MULTIPLE_MODE);
    f.status();
    let payload: Vec<u8> = (0..5 * 512).map(|i| (i % 253) as u8).collect();

    f.lba48(7, 5);
    f.cmd(op::WRITE_MULTIPLE_EXT);
    let mut irqs = vec![f.irq()];
    for block in [&payload[..1024], &payload[1024..2048], &payload[2048..]] {
        f.write_words(block);
        irqs.push(f.irq());
        f.status();
    }

    assert_eq!(irqs, [false, true, true, true]);
    assert_eq!(f.disk.lock().unwrap().bytes(7 * 512, 5 * 512), payload);
}

#[test]
fn multiple_commands_abort_while_multiple_mode_is_off() {
    let mut f = Fx::new();
    f.lba28(0, 1);
    f.cmd(op::READ_MULTIPLE);
    assert_eq!((f.status(), f.error()), (0x41, 0x04));

    f.outb(P_COUNT, 3); // not a power of two
    f.cmd(op::SET_MULTIPLE_MODE);
    assert_eq!((f.status(), f.error()), (0x41, 0x04));
}

#[test]
fn lba28_count_zero_means_256_sectors() {
    let sectors = 1000;
    let mut f = Fx::with(Opts {
        sectors,
        ..Default::default()
    });

    // 256 sectors fit at capacity - 256, but not one further.
    f.lba28((sectors - 255) as u32, 0);
    f.cmd(op::READ_SECTORS);
    let short = (f.status(), f.error());
    f.lba28(0, 0);
    f.cmd(op::READ_SECTORS);
    let mut blocks = 0;
    while f.status() & 0x08 != 0 {
        f.read_words(256);
        blocks += 1;
    }

    assert_eq!(short, (0x41, 0x10));
    assert_eq!(blocks, 256);
    assert_eq!(f.counter("sectors_read"), 256);
}

#[test]
fn lba48_count_zero_means_65536_sectors() {
    let sectors = 100_000;
    let mut f = Fx::with(Opts {
        sectors,
        ..Default::default()
    });

    f.lba48(sectors - 65535, 0);
    f.cmd(op::READ_SECTORS_EXT);
    let short = (f.status(), f.error());
    f.lba48(sectors - 65536, 0);
    f.cmd(op::READ_SECTORS_EXT);
    let fits = f.status();

    assert_eq!(short, (0x41, 0x10));
    assert_eq!(fits, 0x58);
}

#[test]
fn dword_accesses_move_two_words() {
    let mut f = Fx::new();
    f.lba28(3, 1);
    f.cmd(op::READ_SECTORS);
    f.status();

    let data: Vec<u8> = (0..128).flat_map(|_| f.inl(P_DATA).to_le_bytes()).collect();

    assert_eq!(data, pattern_range(3 * 512, 512));
    assert_eq!(f.alt(), 0x50);
}

#[test]
fn dword_writes_fill_a_sector() {
    let mut f = Fx::new();
    f.lba28(9, 1);
    f.cmd(op::WRITE_SECTORS);
    for i in 0..128u32 {
        f.outl(P_DATA, i * 0x0101_0101);
    }
    let want: Vec<u8> = (0..128u32)
        .flat_map(|i| (i * 0x0101_0101).to_le_bytes())
        .collect();
    assert_eq!(f.status(), 0x50);
    assert_eq!(f.disk.lock().unwrap().bytes(9 * 512, 512), want);
}

#[test]
fn chs_addressing_uses_the_default_translation() {
    let mut f = Fx::new();
    f.outb(P_COUNT, 1);
    f.outb(P_LBAL, 7); // sector 7
    f.outb(P_LBAM, 2); // cylinder 2
    f.outb(P_LBAH, 0);
    f.outb(P_DEV, 0xa3); // CHS, head 3
    f.cmd(op::READ_SECTORS);
    f.status();
    let lba = (2 * 16 + 3) * 63 + 6;
    assert_eq!(f.read_words(256), pattern_range(lba * 512, 512));
}

#[test]
fn a_read_error_reports_unc_at_the_failing_sector() {
    let mut f = Fx::new();
    f.lba28(40, 2);
    f.disk.lock().unwrap().fail_reads = true;
    f.cmd(op::READ_SECTORS);
    assert_eq!((f.status(), f.error(), f.inb(P_LBAL)), (0x41, 0x40, 40));
}

#[test]
fn writes_to_a_read_only_disk_abort_before_any_data() {
    let mut f = Fx::with(Opts {
        read_only: true,
        ..Default::default()
    });
    f.lba28(0, 1);
    f.cmd(op::WRITE_SECTORS);
    assert_eq!((f.status(), f.error()), (0x41, 0x04));
    assert_eq!(f.disk.lock().unwrap().writes, 0);
}

#[test]
fn write_cache_off_flushes_every_write() {
    let mut f = Fx::new();
    f.set_features(0x82, 0);
    f.lba28(1, 1);
    f.cmd(op::WRITE_SECTORS);
    f.write_words(&[0u8; 512]);
    assert_eq!(f.status(), 0x50);
    assert_eq!(f.disk.lock().unwrap().flushes, 1);
}
