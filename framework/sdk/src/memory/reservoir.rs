//! Reservoir sampling (Vitter 1985, Algorithm R): [`reservoir_slot`] and [`Reservoir`].

use serde::{Deserialize, Serialize};

use super::store::{Row, SampleStore};
use crate::Result;

/// Where Algorithm R puts the next item of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The memory is not full yet: append the item.
    Append,
    /// Replace the item in this slot.
    Replace(usize),
    /// Drop the item.
    Skip,
}

/// Algorithm R's decision for the item with 0-based stream index `seen` in a memory of
/// `capacity` slots: the first `capacity` items are kept; item `n ≥ capacity` draws
/// `j = below(n + 1)` uniformly in `0..=n` and replaces slot `j` if `j < capacity`. After any
/// number `N ≥ capacity` of items, every item of the stream is in the memory with probability
/// `capacity / N` (Vitter 1985).
pub fn reservoir_slot(seen: u64, capacity: usize, below: impl FnOnce(usize) -> usize) -> Slot {
    match usize::try_from(seen) {
        Ok(n) if n < capacity => Slot::Append,
        _ if capacity == 0 => Slot::Skip,
        _ => {
            let range = usize::try_from(seen.saturating_add(1)).unwrap_or(usize::MAX);
            let j = below(range);
            if j < capacity {
                Slot::Replace(j)
            } else {
                Slot::Skip
            }
        }
    }
}

/// A [`SampleStore`] of at most `capacity` rows filled by reservoir sampling: at any time,
/// every sample offered so far is held with probability `capacity / seen`, whatever its task
/// (the memory of ER, DER/DER++, ER-ACE).
///
/// Serialisable; deserialising checks the store (see [`SampleStore`]) and that its counters
/// agree with Algorithm R (every offered sample kept until the memory is full).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawReservoir")]
pub struct Reservoir {
    capacity: usize,
    /// Items offered so far (the reservoir counter).
    seen: u64,
    store: SampleStore,
}

/// A [`Reservoir`] as read from a checkpoint, before its checks.
#[derive(Deserialize)]
struct RawReservoir {
    capacity: usize,
    seen: u64,
    store: SampleStore,
}

impl TryFrom<RawReservoir> for Reservoir {
    type Error = String;

    fn try_from(r: RawReservoir) -> std::result::Result<Self, String> {
        let len = r.store.len();
        if len > r.capacity {
            return Err(format!(
                "reservoir memory: {len} samples in a memory of {}",
                r.capacity
            ));
        }
        if r.seen < len as u64 || (len != r.capacity && r.seen != len as u64) {
            return Err(format!(
                "reservoir memory: {len} samples held after {} offered (capacity {})",
                r.seen, r.capacity
            ));
        }
        Ok(Self {
            capacity: r.capacity,
            seen: r.seen,
            store: r.store,
        })
    }
}

impl Reservoir {
    /// An empty memory of `capacity` samples of `dim` inputs and `width` payload values.
    pub fn new(capacity: usize, dim: usize, width: usize) -> Self {
        Self {
            capacity,
            seen: 0,
            store: SampleStore::new(dim, width),
        }
    }

    /// Maximum number of samples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether the memory holds no sample.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The rows held (read-only: rows change only through [`Reservoir::offer`]).
    pub fn store(&self) -> &SampleStore {
        &self.store
    }

    /// Writable payload of row `i` (e.g. to refresh stored logits).
    pub fn payload_mut(&mut self, i: usize) -> &mut [f32] {
        self.store.payload_mut(i)
    }

    /// Offers the next sample of the stream (`below(n)`: uniform in `0..n`; called at most
    /// once, and only once the memory is full). Returns where it went. A row whose widths are
    /// not the memory's is an error, before any draw.
    pub fn offer(&mut self, row: Row<'_>, below: impl FnOnce(usize) -> usize) -> Result<Slot> {
        self.store.check(&row)?;
        let slot = reservoir_slot(self.seen, self.capacity, below);
        match slot {
            Slot::Append => self.store.push(row)?,
            Slot::Replace(j) => self.store.set(j, row)?,
            Slot::Skip => {}
        }
        self.seen += 1;
        Ok(slot)
    }
}
