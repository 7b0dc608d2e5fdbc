//! GDumb's greedy class-balanced sampler (Prabhu, Torr and Dokania 2020, "GDumb: A simple
//! approach that questions our progress in continual learning", Algorithm 1): [`ClassBalanced`].

use serde::{Deserialize, Serialize};

use super::reservoir::Slot;
use super::store::{Row, SampleStore};
use crate::Result;

/// A [`SampleStore`] of at most `capacity` rows kept balanced over the classes seen so far:
///
/// * while the memory is not full, every offered sample is added;
/// * once full, a sample of class `y` is added only if `y` holds fewer than
///   `capacity / |Y|` samples (`Y`: every class offered so far, `y` included); it then
///   replaces a uniformly drawn sample (one `below(n)` draw over that class's `n` rows, in row
///   order) of the class holding the most samples (the smallest class id among ties);
///   otherwise it is dropped.
///
/// Once every class has been offered often enough, the class counts differ by at most one.
/// Serialisable; deserialising checks the store, the capacity and that the classes agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawBalanced")]
pub struct ClassBalanced {
    capacity: usize,
    /// Every class offered so far, ascending.
    classes: Vec<usize>,
    store: SampleStore,
}

/// A [`ClassBalanced`] as read from a checkpoint, before its checks.
#[derive(Deserialize)]
struct RawBalanced {
    capacity: usize,
    classes: Vec<usize>,
    store: SampleStore,
}

impl TryFrom<RawBalanced> for ClassBalanced {
    type Error = String;

    fn try_from(r: RawBalanced) -> std::result::Result<Self, String> {
        if r.store.len() > r.capacity {
            return Err(format!(
                "class-balanced memory: {} samples in a memory of {}",
                r.store.len(),
                r.capacity
            ));
        }
        if r.classes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "class-balanced memory: the seen classes {:?} are not ascending and distinct",
                r.classes
            ));
        }
        if let Some(t) = r
            .store
            .targets()
            .iter()
            .find(|t| r.classes.binary_search(t).is_err())
        {
            return Err(format!(
                "class-balanced memory: a sample of class {t}, which is not among the seen \
                 classes {:?}",
                r.classes
            ));
        }
        Ok(Self {
            capacity: r.capacity,
            classes: r.classes,
            store: r.store,
        })
    }
}

impl ClassBalanced {
    /// An empty memory of `capacity` samples of `dim` inputs and `width` payload values.
    pub fn new(capacity: usize, dim: usize, width: usize) -> Self {
        Self {
            capacity,
            classes: Vec::new(),
            store: SampleStore::new(dim, width),
        }
    }

    /// Maximum number of samples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every class offered so far, ascending.
    pub fn classes(&self) -> &[usize] {
        &self.classes
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether the memory holds no sample.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// The rows held (read-only: rows change only through [`ClassBalanced::offer`]).
    pub fn store(&self) -> &SampleStore {
        &self.store
    }

    /// Offers a sample (`below(n)`: uniform in `0..n`, called only when the sample replaces
    /// another). Returns where it went. A row whose widths are not the memory's is an error,
    /// before anything changes.
    pub fn offer(&mut self, row: Row<'_>, below: impl FnOnce(usize) -> usize) -> Result<Slot> {
        self.store.check(&row)?;
        if let Err(at) = self.classes.binary_search(&row.target) {
            self.classes.insert(at, row.target);
        }
        if self.store.len() < self.capacity {
            self.store.push(row)?;
            return Ok(Slot::Append);
        }
        let counts = self.store.per_class();
        let count = |c: usize| counts.get(c).copied().unwrap_or(0);
        // `count(y) < capacity / |Y|`, in integers.
        let below_share = count(row.target)
            .checked_mul(self.classes.len())
            .is_some_and(|n| n < self.capacity);
        if !below_share {
            return Ok(Slot::Skip);
        }
        // The largest class (first maximum: the smallest id). It is not `y`: the memory is
        // full, so the mean count over `Y` is `capacity / |Y|` > count(y).
        let mut largest = 0;
        for (c, &n) in counts.iter().enumerate() {
            if n > counts[largest] {
                largest = c;
            }
        }
        let r = below(counts[largest]);
        let slot = self
            .store
            .targets()
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == largest)
            .nth(r)
            .map(|(i, _)| i)
            .ok_or_else(|| {
                crate::Error::msg(format!(
                    "class-balanced memory: draw {r} outside the {} samples of class {largest}",
                    counts[largest]
                ))
            })?;
        self.store.set(slot, row)?;
        Ok(Slot::Replace(slot))
    }
}
