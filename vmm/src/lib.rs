//! vmbench's embedded KVM VMM: guest memory, vCPUs, buses, devices, and the probe loader.

pub mod backend;
pub mod boot;
pub mod bus;
pub mod counters;
pub mod devices;
pub mod event;
pub mod exits;
pub mod interrupt;
pub mod kinds;
pub mod kvm;
pub mod machine;
pub mod memory_map;
pub mod pci;
pub mod process;
pub mod sys;
pub mod virtio;
pub mod worker;

pub use event::Event;
pub use machine::{Machine, MachineConfig};
