//! Back-ends: where a device's bytes really go. Block devices (virtio-blk, IDE) share
//! [`block::BlockBackend`]; network devices (virtio-net, e1000) share [`net::NetBackend`]:
//! the in-process [`peer`] (default) or a [`tap`] in a namespace of our own ([`netns`]).

pub mod block;
pub mod format;
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

use std::path::Path;

use block::{BlockBackend, ImageFormat, OpenOptions};

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
    #[error(transparent)]
    Format(#[from] format::Error),
    #[error("cannot open qcow2 image {path}")]
    Qcow2 {
        path: String,
        #[source]
        source: qcow2::Error,
    },
}

/// Opens a disk image in the format `opts` states or, if it states none, the format its
/// contents show ([`format::detect_format`]; never the file's name). Formats vmbench does not
/// serve are refused.
pub fn open_disk(path: &Path, opts: OpenOptions) -> Result<Box<dyn BlockBackend>, DiskError> {
    let format = match opts.format {
        Some(f) => f,
        None => format::detect_format(path)?,
    };
    if format == ImageFormat::Qcow2 {
        let q = qcow2::Qcow2::open(path, opts).map_err(|source| DiskError::Qcow2 {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Box::new(q))
    } else {
        Ok(Box::new(raw::RawFile::open(path, opts)?))
    }
}
