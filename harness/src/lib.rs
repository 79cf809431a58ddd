//! vmbench's harness: the CLI commands, the guest sessions they run, and the records guests
//! send back.

pub mod bench;
pub mod boot;
pub mod exitcode;
pub mod gate;
pub mod merge;
pub mod qemu;
pub mod qemu_peer;
pub mod record;
pub mod results;
pub mod scenario;
pub mod session;
pub mod stats;
