//! Back-ends: where a device's bytes really go. Block devices (virtio-blk, IDE) share
//! [`block::BlockBackend`]; network devices (virtio-net, e1000) share [`net::NetBackend`]:
//! the in-process [`peer`] (default) or a [`tap`] in a namespace of our own ([`netns`]).

pub mod block;
pub mod gso;
pub mod host_services;
pub mod net;
pub mod net_util;
pub mod netns;
pub mod peer;
pub mod raw;
pub mod services;
pub mod tap;
