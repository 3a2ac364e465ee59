//! Seeded train/validation splits.

use crate::batch::SplitMix64;

/// Splits `0..len` into `(train, val)` index lists: a seeded random `val_fraction` of the samples
/// goes to validation (rounded to the nearest sample), the rest to training; both lists are sorted.
///
/// `val_fraction` is clamped to `0..=1`; a fraction that rounds to zero samples gives an empty
/// validation list.
pub fn random_split(len: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n_val = ((len as f64) * val_fraction.clamp(0.0, 1.0)).round() as usize;
    let mut order: Vec<usize> = (0..len).collect();
    SplitMix64::new(seed ^ 0x5EED_5EED_5EED_5EED).shuffle(&mut order);
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_a_seeded_partition() {
        let (train, val) = random_split(1000, 0.1, 3);
        assert_eq!((train.len(), val.len()), (900, 100));
        let mut all = [train.clone(), val.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        assert_eq!(random_split(1000, 0.1, 3), (train, val.clone()));
        assert_ne!(random_split(1000, 0.1, 4).1, val);
        // Not simply the tail: the validation indices are spread over the dataset.
        assert!(val.iter().any(|&i| i < 500) && val.iter().any(|&i| i >= 500));
        assert!(random_split(10, 0.0, 1).1.is_empty());
    }
}
