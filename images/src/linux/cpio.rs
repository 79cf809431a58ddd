//! The initramfs: a newc cpio archive (entries sorted by path, owner 0:0, every time the
//! fixed epoch, inode numbers in order) compressed with gzip (miniz_oxide at level 9, no name,
//! mtime 0), so the same tree gives the same bytes.

use std::collections::BTreeMap;

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// The archive's tree, by path without a leading `/` (sorted by the map).
#[derive(Default)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

impl Tree {
    /// Adds `node` at `path` and every missing parent directory.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Node::Dir);
        }
        self.entries.insert(path, node);
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// The newc archive, with `mtime` on every entry.
    pub fn to_cpio(&self, mtime: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ino = 0u32;
        for (path, node) in &self.entries {
            ino += 1;
            let (mode, data, (major, minor)): (u32, &[u8], _) = match node {
                Node::Dir => (0o040755, &[], (0, 0)),
                Node::File { data, executable } => {
                    (if *executable { 0o100755 } else { 0o100644 }, data, (0, 0))
                }
                Node::Symlink(target) => (0o120777, target.as_bytes(), (0, 0)),
                Node::CharDev { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            header(
                &mut out,
                ino,
                mode,
                nlink,
                mtime,
                data.len(),
                (major, minor),
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        header(&mut out, 0, 0, 1, 0, 0, (0, 0), "TRAILER!!!");
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime,
        size as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// gzip (RFC 1952) around miniz_oxide's deflate at level 9: no file name, mtime 0, OS 255
/// (unknown), so only the input decides the bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 9));
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses).
fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, t) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn parents_are_added_and_entries_sorted() {
        let mut t = Tree::default();
        t.insert("/b/c/file", Node::Symlink("x".into()));
        t.insert("/a", Node::Dir);
        let keys: Vec<_> = t.entries.keys().cloned().collect();
        assert_eq!(keys, ["a", "b", "b/c", "b/c/file"]);
        let c = t.to_cpio(946_684_800);
        assert!(c.starts_with(b"070701"));
        assert_eq!(c.len() % 4, 0);
    }
}
