//! Building datasets out of datasets: in memory, subset, concatenation, mapping.
//!
//! Each is a Burn [`Dataset`] with kiln's [`DataError`], so a bad index is an error naming the
//! index and the length (Burn's own wrappers panic), and a failing map names the sample.
//!
//! ```
//! # fn main() -> Result<(), kiln_data::DataError> {
//! use burn::data::dataset::Dataset;
//! use kiln_data::ops::{Concat, InMemory, Mapped, Subset};
//!
//! let a = InMemory::new(vec![1, 2, 3]);
//! let b = InMemory::new(vec![10, 20]);
//! let both = Concat::new(vec![a, b]);
//! let odd = Subset::new(both, vec![1, 3])?; // items 2 and 10
//! let doubled = Mapped::new(odd, |x: i32| Ok(x * 2));
//! assert_eq!((doubled.get(0)?, doubled.get(1)?), (4, 20));
//! assert!(doubled.get(2).is_err()); // an error, not a panic
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

use burn::data::dataset::Dataset;

use crate::DataError;
use crate::batch::SplitMix64;

/// A dataset held in a `Vec`; `get` clones the item.
#[derive(Debug, Clone, PartialEq)]
pub struct InMemory<I> {
    items: Vec<I>,
}

impl<I> InMemory<I> {
    /// Wraps `items`.
    pub fn new(items: Vec<I>) -> Self {
        Self { items }
    }

    /// The items.
    pub fn items(&self) -> &[I] {
        &self.items
    }
}

impl<I: Clone + Send + Sync> Dataset<I, DataError> for InMemory<I> {
    fn get(&self, index: usize) -> Result<I, DataError> {
        self.items.get(index).cloned().ok_or(DataError::IndexOutOfRange {
            index,
            len: self.items.len(),
        })
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// The samples of `dataset` at `indices`, in that order (repeats allowed).
#[derive(Debug, Clone)]
pub struct Subset<D> {
    dataset: D,
    indices: Vec<usize>,
}

impl<D> Subset<D> {
    /// Checks every index against `dataset.len()` up front.
    ///
    /// # Errors
    ///
    /// [`DataError::IndexOutOfRange`] naming the first bad index.
    pub fn new<I>(dataset: D, indices: Vec<usize>) -> Result<Self, DataError>
    where
        D: Dataset<I, DataError>,
    {
        let len = dataset.len();
        if let Some(&index) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        Ok(Self { dataset, indices })
    }

    /// The wrapped dataset's indices, in subset order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The wrapped dataset.
    pub fn inner(&self) -> &D {
        &self.dataset
    }
}

impl<D: Dataset<I, DataError>, I> Dataset<I, DataError> for Subset<D> {
    fn get(&self, index: usize) -> Result<I, DataError> {
        let inner = *self.indices.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.indices.len(),
        })?;
        self.dataset.get(inner)
    }

    fn len(&self) -> usize {
        self.indices.len()
    }
}

/// Datasets one after the other (e.g. CIFAR train + extra data). Use `Box<dyn Dataset<I, DataError>>`
/// to concatenate datasets of different types with the same item.
#[derive(Debug, Clone)]
pub struct Concat<D> {
    parts: Vec<D>,
}

impl<D> Concat<D> {
    /// The parts, in order.
    pub fn new(parts: Vec<D>) -> Self {
        Self { parts }
    }
}

impl<D: Dataset<I, DataError>, I> Dataset<I, DataError> for Concat<D> {
    fn get(&self, index: usize) -> Result<I, DataError> {
        let mut rest = index;
        for part in &self.parts {
            let n = part.len();
            if rest < n {
                return part.get(rest);
            }
            rest -= n;
        }
        Err(DataError::IndexOutOfRange {
            index,
            len: self.len(),
        })
    }

    fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }
}

/// `dataset` with `f` applied to every item on `get` (lazily; a failure names the sample).
pub struct Mapped<D, F, I> {
    dataset: D,
    f: F,
    _item: PhantomData<fn(I)>,
}

impl<D, F, I> Mapped<D, F, I> {
    /// Maps `f` over `dataset`.
    pub fn new(dataset: D, f: F) -> Self {
        Self {
            dataset,
            f,
            _item: PhantomData,
        }
    }
}

impl<D, F, I, O> Dataset<O, DataError> for Mapped<D, F, I>
where
    D: Dataset<I, DataError>,
    F: Fn(I) -> Result<O, DataError> + Send + Sync,
{
    fn get(&self, index: usize) -> Result<O, DataError> {
        let item = self.dataset.get(index)?;
        (self.f)(item).map_err(|e| match e {
            e @ DataError::Sample { .. } => e,
            e => DataError::Sample {
                index,
                source: Box::new(e),
            },
        })
    }

    fn len(&self) -> usize {
        self.dataset.len()
    }
}

/// Splits sample indices into `(train, val)` keeping each class's share: for every class, a seeded
/// random `val_fraction` of its samples (rounded to the nearest sample) goes to validation.
/// Both lists are sorted. `labels[i]` is sample `i`'s class (`targets()` on the datasets).
pub fn stratified_split(labels: &[u32], val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let frac = val_fraction.clamp(0.0, 1.0);
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (class, mut members) in by_class {
        SplitMix64::new(seed ^ 0x57A7_1F1E_D000_0000 ^ u64::from(class)).shuffle(&mut members);
        let n_val = ((members.len() as f64) * frac).round() as usize;
        val.extend_from_slice(&members[..n_val]);
        train.extend_from_slice(&members[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_checks_indices_up_front_and_on_get() {
        let ds = InMemory::new(vec!['a', 'b', 'c']);
        assert!(matches!(
            Subset::new(ds.clone(), vec![0, 3]),
            Err(DataError::IndexOutOfRange { index: 3, len: 3 })
        ));
        let sub = Subset::new(ds, vec![2, 2, 0]).unwrap();
        assert_eq!(
            (sub.len(), sub.get(1).unwrap(), sub.get(2).unwrap()),
            (3, 'c', 'a')
        );
        assert!(matches!(
            sub.get(3),
            Err(DataError::IndexOutOfRange { index: 3, len: 3 })
        ));
    }

    #[test]
    fn concat_indexes_across_parts() {
        let c = Concat::new(vec![
            InMemory::new(vec![0, 1]),
            InMemory::new(vec![]),
            InMemory::new(vec![2]),
        ]);
        assert_eq!(c.len(), 3);
        assert_eq!(
            (0..3).map(|i| c.get(i).unwrap()).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(matches!(
            c.get(3),
            Err(DataError::IndexOutOfRange { index: 3, len: 3 })
        ));
        // Different dataset types with one item type, through trait objects.
        let boxed: Vec<Box<dyn Dataset<i32, DataError>>> = vec![
            Box::new(InMemory::new(vec![5])),
            Box::new(Subset::new(InMemory::new(vec![7, 8]), vec![1]).unwrap()),
        ];
        let c = Concat::new(boxed);
        assert_eq!((c.get(0).unwrap(), c.get(1).unwrap()), (5, 8));
    }

    #[test]
    fn map_errors_name_the_sample() {
        let m = Mapped::new(InMemory::new(vec![1, 0, 3]), |x: i32| {
            if x == 0 {
                Err(DataError::Custom("zero is not allowed".into()))
            } else {
                Ok(10 / x)
            }
        });
        assert_eq!(m.get(0).unwrap(), 10);
        assert_eq!(m.get(1).unwrap_err().to_string(), "sample 1: zero is not allowed");
    }

    #[test]
    fn stratified_split_keeps_class_shares() {
        // 90 samples of class 0, 10 of class 1: a random 10% split may miss class 1 entirely.
        let labels: Vec<u32> = (0..100).map(|i| u32::from(i % 10 == 0)).collect();
        let (train, val) = stratified_split(&labels, 0.2, 7);
        assert_eq!((train.len(), val.len()), (80, 20));
        assert_eq!(
            val.iter().filter(|&&i| labels[i] == 1).count(),
            2,
            "20% of class 1"
        );
        assert_eq!(
            val.iter().filter(|&&i| labels[i] == 0).count(),
            18,
            "20% of class 0"
        );
        let mut all = [train.clone(), val.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(stratified_split(&labels, 0.2, 7), (train, val.clone()));
        assert_ne!(stratified_split(&labels, 0.2, 8).1, val);
    }
}
