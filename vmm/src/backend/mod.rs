//! Back-ends: where a device's bytes really go. Block devices (virtio-blk, IDE) share
//! [`block::BlockBackend`]; network devices (virtio-net, e1000) share [`net::NetBackend`]:
//! the in-process [`peer`] (default) or a [`tap`] in a namespace of our own ([`netns`]).

pub mod block;
pub mod gso;
pub mod host_services;
pub mod lock;
pub mod net;
pub mod net_util;
pub mod netns;
pub mod peer;
pub mod qcow2;
pub mod raw;
pub mod services;
pub mod tap;

use std::fs::File;
use std::path::Path;

use block::{BlockBackend, OpenOptions};

/// Why a disk image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open disk image {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Raw(#[from] raw::Error),
    #[error("cannot open qcow2 image {path}")]
    Qcow2 {
        path: String,
        #[source]
        source: qcow2::Error,
    },
}

/// Opens a disk image as qcow2 if it starts with the qcow2 magic, else as a raw file. The
/// format comes from the file's contents, never from its name.
pub fn open_disk(path: &Path, opts: OpenOptions) -> Result<Box<dyn BlockBackend>, DiskError> {
    let open_err = |source| DiskError::Open {
        path: path.display().to_string(),
        source,
    };
    let is_qcow2 = qcow2::has_magic(&File::open(path).map_err(open_err)?).map_err(open_err)?;
    if is_qcow2 {
        let q = qcow2::Qcow2::open(path, opts).map_err(|source| DiskError::Qcow2 {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Box::new(q))
    } else {
        Ok(Box::new(raw::RawFile::open(path, opts)?))
    }
}
