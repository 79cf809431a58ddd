//! vmbench's embedded KVM VMM: guest memory, vCPUs, buses, devices, and the probe loader.

pub mod backend;
pub mod boot;
pub mod bus;
pub mod devices;
pub mod event;
pub mod exits;
pub mod interrupt;
pub mod kvm;
pub mod machine;
pub mod pci;
pub mod process;
pub mod virtio;

pub use event::Event;
pub use machine::{Machine, MachineConfig};
