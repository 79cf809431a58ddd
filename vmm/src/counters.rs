//! Operation counters that devices and back-ends keep for the harness (requests, frames,
//! bytes, kicks). At the bottom of the crate: every layer implements it, none imports upward.

/// Counters read at any time from any thread, by name.
pub trait Counters: Send + Sync {
    fn snapshot(&self) -> Vec<(&'static str, u64)>;
}

/// Every device's counters under its name, as the machine keeps them.
pub type CounterList = Vec<(String, std::sync::Arc<dyn Counters>)>;

/// The counters for a reader created before the devices exist (the mailbox), set once they do.
pub type LateCounters = std::sync::Arc<std::sync::OnceLock<CounterList>>;

/// Every device's counters, by device (or back-end) name then counter name.
pub type DeviceCounters =
    std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>;

/// Reads `all` now, into the shape results and records carry.
pub fn snapshot_all(all: &[(String, std::sync::Arc<dyn Counters>)]) -> DeviceCounters {
    all.iter()
        .map(|(name, c)| {
            (
                name.clone(),
                c.snapshot()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        })
        .collect()
}
