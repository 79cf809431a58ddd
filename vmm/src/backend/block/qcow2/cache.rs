//! A write-back LRU cache of one-cluster tables (L2 tables, refcount blocks), keyed by their
//! host offset. Dirty tables stay until the engine writes them back; the cache never writes by
//! itself, so the engine keeps control of the order metadata reaches the disk.

use std::collections::{BTreeMap, HashMap};

struct Slot<T> {
    table: T,
    dirty: bool,
    stamp: u64,
}

pub struct TableCache<T> {
    slots: HashMap<u64, Slot<T>>,
    /// Use order: stamp → key; the first entry is the least recently used.
    order: BTreeMap<u64, u64>,
    clock: u64,
    capacity: usize,
}

impl<T> TableCache<T> {
    pub fn new(capacity: usize) -> Self {
        TableCache {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the capacity (tests use tiny caches to exercise write-back on eviction).
    #[cfg(test)]
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.slots.contains_key(&key)
    }

    /// True when inserting a new table would evict one.
    pub fn is_full(&self) -> bool {
        self.slots.len() >= self.capacity
    }

    fn touch(&mut self, key: u64) {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(s) = self.slots.get_mut(&key) {
            self.order.remove(&s.stamp);
            s.stamp = stamp;
            self.order.insert(stamp, key);
        }
    }

    pub fn get(&mut self, key: u64) -> Option<&T> {
        self.touch(key);
        self.slots.get(&key).map(|s| &s.table)
    }

    /// The table for writing; marks it dirty.
    pub fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        self.touch(key);
        self.slots.get_mut(&key).map(|s| {
            s.dirty = true;
            &mut s.table
        })
    }

    /// Inserts a table. A full cache evicts its least recently used clean table; dirty tables
    /// are never dropped, so a cache whose tables are all dirty grows past its capacity until
    /// the engine writes them back (see [`Self::over_capacity`]).
    pub fn insert(&mut self, key: u64, table: T, dirty: bool) {
        if let Some(s) = self.slots.remove(&key) {
            self.order.remove(&s.stamp);
        }
        if self.is_full() {
            let victim = self
                .order
                .iter()
                .find(|(_, k)| self.slots.get(k).is_some_and(|s| !s.dirty))
                .map(|(stamp, k)| (*stamp, *k));
            if let Some((stamp, k)) = victim {
                self.order.remove(&stamp);
                self.slots.remove(&k);
            }
        }
        self.clock += 1;
        self.order.insert(self.clock, key);
        self.slots.insert(
            key,
            Slot {
                table,
                dirty,
                stamp: self.clock,
            },
        );
    }

    /// True when dirty tables have pushed the cache past its capacity: time to write back.
    pub fn over_capacity(&self) -> bool {
        self.slots.len() > self.capacity
    }

    pub fn remove(&mut self, key: u64) -> Option<T> {
        let s = self.slots.remove(&key)?;
        self.order.remove(&s.stamp);
        Some(s.table)
    }

    /// Keys of the dirty tables, in host offset order (sequential writes).
    pub fn dirty_keys(&self) -> Vec<u64> {
        let mut k: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dirty)
            .map(|(k, _)| *k)
            .collect();
        k.sort_unstable();
        k
    }

    /// A dirty table's contents for writing back, without touching its use order.
    pub fn peek(&self, key: u64) -> Option<&T> {
        self.slots.get(&key).map(|s| &s.table)
    }

    pub fn mark_clean(&mut self, key: u64) {
        if let Some(s) = self.slots.get_mut(&key) {
            s.dirty = false;
        }
    }

    pub fn has_dirty(&self) -> bool {
        self.slots.values().any(|s| s.dirty)
    }
}
