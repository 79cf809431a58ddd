//! Devices on the port-I/O and MMIO buses.

pub mod debug_exit;
pub mod e1000;
pub mod i8042;
pub mod ide;
pub mod platform;
pub mod serial;
