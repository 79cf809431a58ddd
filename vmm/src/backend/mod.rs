//! Back-ends: where a device's bytes really go. Block devices (virtio-blk, IDE) share
//! [`block::BlockBackend`]; network devices (virtio-net, e1000) share [`net::NetBackend`].

pub mod block;
pub mod net;
pub mod raw;
