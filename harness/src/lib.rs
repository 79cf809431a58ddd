//! vmbench's harness: the CLI commands, the scenario model, the engine seam (a `GuestSpec`
//! booted by vmbench's VMM or by QEMU), the guest sessions they run, and the records guests
//! send back. docs/architecture.md walks through it.

pub mod cli;
pub mod emulated;
pub mod engine;
pub mod exitcode;
pub mod gate;
pub mod input;
pub mod merge;
pub mod record;
pub mod results;
pub mod scenario;
pub mod session;
pub mod stats;
