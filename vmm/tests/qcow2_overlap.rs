//! The metadata-overlap check (issue 15, item 3): a qcow2 image whose L1 size was nudged by a
//! few entries maps guest data onto its own tables. QEMU refuses such a write and marks the
//! image corrupt; so must we, writing nothing else.

mod qcow2_support;

use qcow2_support::*;
use vmm::backend::block::open_disk;

/// A 1 MiB image with 512-byte clusters and one written cluster: header at 0, refcount table
/// at 0x200, refcount block at 0x400, L1 (32 entries) at 0x600, the L2 table at 0x800 and the
/// data cluster at 0xa00. Then the L1 size goes from 32 to 67 entries: the L1 table now runs
/// into the L2 table, and its entry 64 (the L2 table's first entry) makes the data cluster an
/// "L2 table" too.
fn nudged_image(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let img = dir.join(name);
    qcreate(&img, MIB, "cluster_size=512");
    qemu_io(&img, &["write -q -P 0xaa 0 512"]);
    let mut bytes = std::fs::read(&img).unwrap();
    assert_eq!(
        &bytes[36..40],
        &32u32.to_be_bytes(),
        "the layout qemu-img made changed"
    );
    assert_eq!(&bytes[40..48], &0x600u64.to_be_bytes());
    bytes[36..40].copy_from_slice(&67u32.to_be_bytes());
    std::fs::write(&img, bytes).unwrap();
    img
}

fn info_corrupt(img: &std::path::Path) -> bool {
    let out = run("qemu-img", &["info", "--output=json", s(img)]);
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "qemu-img info {img:?}: {info}");
    info.contains("\"corrupt\": true")
}

#[test]
fn a_data_write_onto_metadata_is_refused_and_the_image_marked_corrupt_as_qemu_does() {
    let d = tmp();
    let ours_img = nudged_image(d.path(), "ours.qcow2");
    let theirs_img = nudged_image(d.path(), "theirs.qcow2");
    let before = std::fs::read(&ours_img).unwrap();

    let mut q = open_disk(&ours_img, rw()).unwrap();
    let write = q.write_at(0, &[0x55; 512]);
    let again = q.write_at(64 * 1024, &[0x55; 512]);
    let flush = q.flush();
    drop(q);
    let qemu = run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x55 0 512", s(&theirs_img)],
    );

    let err = write.expect_err("the write must fail");
    assert!(format!("{:?}", err).contains("MetadataOverlap"), "{err:?}");
    assert!(again.is_err(), "a corrupt image takes no more writes");
    assert!(flush.is_err(), "nor writes its metadata back");
    let qemu_says =
        String::from_utf8_lossy(&qemu.stderr).to_string() + &String::from_utf8_lossy(&qemu.stdout);
    assert!(
        qemu_says.contains("Preventing invalid write on metadata"),
        "qemu-io: {qemu_says}"
    );
    // Nothing written but the corrupt bit (incompatible features, bytes 72..80, bit 1).
    let after = std::fs::read(&ours_img).unwrap();
    assert_eq!(after.len(), before.len());
    let differ: Vec<usize> = (0..after.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    assert_eq!(differ, vec![79], "only the corrupt bit changes");
    assert_eq!(after[79] & 2, 2);
    // qemu-img agrees: both images are marked corrupt, and byte for byte the same.
    assert!(info_corrupt(&ours_img));
    assert!(info_corrupt(&theirs_img));
    assert_eq!(after, std::fs::read(&theirs_img).unwrap());
    // And we refuse to open it for writing again, like QEMU.
    let reopened = open_disk(&ours_img, rw())
        .err()
        .expect("corrupt image opened rw");
    assert!(format!("{reopened:?}").contains("corrupt"), "{reopened:?}");
}

#[test]
fn writes_to_clean_data_clusters_pass_the_check() {
    let d = tmp();
    let img = d.path().join("clean.qcow2");
    qcreate(&img, 4 * MIB, "cluster_size=512");
    let mut model = vec![0u8; 4 * MIB as usize];

    {
        let mut q = open_disk(&img, rw()).unwrap();
        workload(q.as_mut(), &mut model);
        q.flush().unwrap();
    }

    check_clean(&img);
    assert!(!info_corrupt(&img));
    assert_holds(d.path(), &img, &model);
}

/// The same refusal on the path that writes guest memory straight to the file (virtio-blk's
/// `write_vectored_at`): the check covers every run it writes in place.
#[test]
fn a_vectored_write_onto_metadata_is_refused_the_same_way() {
    let d = tmp();
    let img = nudged_image(d.path(), "vectored.qcow2");
    let before = std::fs::read(&img).unwrap();

    let mut q = open_disk(&img, rw()).unwrap();
    let write = Guest::new().write(q.as_mut(), 0, &[0x55; 512]);
    drop(q);

    let err = write.expect_err("the write must fail");
    assert!(format!("{:?}", err).contains("MetadataOverlap"), "{err:?}");
    let after = std::fs::read(&img).unwrap();
    let differ: Vec<usize> = (0..after.len())
        .filter(|&i| after[i] != before[i])
        .collect();
    assert_eq!(differ, vec![79], "only the corrupt bit changes");
    assert!(info_corrupt(&img));
}
