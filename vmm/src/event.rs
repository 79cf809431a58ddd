//! What a running machine tells its owner, in the order it happened.

use std::time::Instant;

use crate::exits::ExitSnapshot;

#[derive(Debug, Clone)]
pub enum Event {
    /// A line the guest wrote to its serial console (records included, when the guest uses
    /// the serial path).
    Console { line: String, at: Instant },
    /// A record delivered through vCPU `vcpu`'s mailbox, with all exit counters as they were
    /// at the doorbell (exact for that vCPU).
    Record {
        vcpu: usize,
        text: String,
        at: Instant,
        exits: ExitSnapshot,
    },
    /// vCPU `vcpu` executed its first instruction (its write to the entry-mark port).
    Entry { vcpu: usize, at: Instant },
    /// The guest asked to end through the debug-exit port.
    Exit { code: u32, at: Instant },
    /// A vCPU crashed or could not run.
    Crash {
        vcpu: usize,
        reason: String,
        rip: u64,
        registers: String,
        at: Instant,
    },
}
