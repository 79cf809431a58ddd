//! Back-ends: where a device's bytes really go. Block devices (virtio-blk, IDE) share
//! [`block::BlockBackend`] (a [`block::raw`] file or a [`block::qcow2`] image); network devices
//! (virtio-net, e1000) share [`net::NetBackend`]: the in-process [`net::peer`] (default) or a
//! [`net::tap`] in a network namespace of our own ([`net::netns`]).

pub mod block;
pub mod net;
