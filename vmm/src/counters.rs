//! Operation counters that devices and back-ends keep for the harness (requests, frames,
//! bytes, kicks). At the bottom of the crate: every layer implements it, none imports upward.

/// Counters read at any time from any thread, by name.
pub trait Counters: Send + Sync {
    fn snapshot(&self) -> Vec<(&'static str, u64)>;
}
