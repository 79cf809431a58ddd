//! The kinds a guest's devices are made of, one enum each: the NIC, the disk controller, the
//! network back-end and the disk image format. Scenario files, the `boot` command line,
//! results.json, the VMM's machine config and the QEMU engine all use these, so a new kind is
//! a compile error at every `match` that must handle it. The strings are part of the results
//! schema (v1) and of the scenario format: never rename one.

use std::fmt;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What every kind offers besides its variants: its names as written in files and flags.
pub trait Kind: Copy + Eq + fmt::Debug + fmt::Display + 'static {
    /// Every variant, in declaration order.
    const VALUES: &'static [Self];
    /// Every name, in the same order.
    const NAMES: &'static [&'static str];
    fn as_str(self) -> &'static str;
    fn from_name(name: &str) -> Option<Self> {
        Self::VALUES.iter().copied().find(|v| v.as_str() == name)
    }
}

/// Defines a kind: serde names, clap names (feature `clap`), [`Kind`] and `Display`.
macro_rules! kind {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] #[cfg_attr(feature = "clap", value(name = $s))] $var),+
        }

        impl Kind for $name {
            const VALUES: &'static [Self] = &[$(Self::$var),+];
            const NAMES: &'static [&'static str] = &[$($s),+];
            fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $s),+
                }
            }
        }

        impl $name {
            /// The name as written in scenario files, flags and results.
            pub fn as_str(self) -> &'static str {
                Kind::as_str(self)
            }

            pub fn from_name(name: &str) -> Option<Self> {
                <Self as Kind>::from_name(name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Kind::as_str(*self))
            }
        }
    };
}

kind!(
    /// The network card.
    NicKind {
        /// Intel 82540EM, emulated register by register.
        E1000 = "e1000",
        /// virtio-net over virtio-pci (modern).
        Virtio = "virtio",
    }
);

kind!(
    /// The disk controller.
    DiskKind {
        /// PIIX3 IDE, primary master, emulated, one command in flight.
        Ide = "ide",
        /// virtio-blk over virtio-pci (modern).
        Virtio = "virtio",
    }
);

kind!(
    /// Where the NIC's frames go on the host.
    NetBackendKind {
        /// vmbench's in-process peer (Ethernet/IP/UDP at 10.0.2.2): needs nothing.
        Peer = "peer",
        /// A TAP device in a network namespace vmbench creates, with its services there
        /// (needs root).
        Tap = "tap",
    }
);

kind!(
    /// The disk image format.
    DiskFormat {
        Raw = "raw",
        Qcow2 = "qcow2",
    }
);

impl NicKind {
    /// The name the device's counters (and exits) go under.
    pub fn device_name(self) -> &'static str {
        match self {
            NicKind::E1000 => "e1000",
            NicKind::Virtio => "virtio-net",
        }
    }
}

impl DiskKind {
    /// The name the device's counters (and exits) go under.
    pub fn device_name(self) -> &'static str {
        match self {
            DiskKind::Ide => "ide",
            DiskKind::Virtio => "virtio-blk",
        }
    }

    /// Commands the controller takes at once, where the hardware fixes it (`None`: as many as
    /// its queue holds).
    pub fn commands_in_flight(self) -> Option<u32> {
        match self {
            DiskKind::Ide => Some(1),
            DiskKind::Virtio => None,
        }
    }
}

impl NetBackendKind {
    /// Whether vmbench needs root (CAP_NET_ADMIN) to set it up.
    pub fn needs_root(self) -> bool {
        match self {
            NetBackendKind::Peer => false,
            NetBackendKind::Tap => true,
        }
    }
}

impl DiskFormat {
    /// The format the image at `path` announces: qcow2 by its magic, anything else raw. The
    /// file's name plays no part. Both engines use this (the VMM's block back-end through
    /// [`crate::backend::block::qcow2::has_magic`], which this calls), so they never disagree.
    pub fn detect(path: &Path) -> io::Result<DiskFormat> {
        crate::backend::block::detect_format(path).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_schema_strings() {
        assert_eq!(NicKind::NAMES, ["e1000", "virtio"]);
        assert_eq!(DiskKind::NAMES, ["ide", "virtio"]);
        assert_eq!(NetBackendKind::NAMES, ["peer", "tap"]);
        assert_eq!(DiskFormat::NAMES, ["raw", "qcow2"]);
        for k in NicKind::VALUES {
            assert_eq!(NicKind::from_name(k.as_str()), Some(*k));
        }
        assert_eq!(NicKind::from_name("none"), None);
        assert_eq!(DiskKind::Ide.to_string(), "ide");
    }

    #[test]
    fn format_comes_from_the_magic_not_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], DiskFormat); 5] = [
            (
                "looks-raw.img",
                b"QFI\xfb\0\0\0\x03rest of a header",
                DiskFormat::Qcow2,
            ),
            ("looks.qcow2", &[0; 512], DiskFormat::Raw),
            ("near.qcow2", b"QFI\xfa", DiskFormat::Raw),
            ("short.qcow2", b"QF", DiskFormat::Raw),
            ("empty.qcow2", b"", DiskFormat::Raw),
        ];
        for (name, bytes, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();

            assert_eq!(DiskFormat::detect(&p).unwrap(), want, "{name}");
        }
        assert!(DiskFormat::detect(&dir.path().join("absent")).is_err());
    }
}
