//! Collate (PyTorch's `collate_fn`) and a deterministic batch order.

use crate::DataError;
use crate::image::{ColorOrder, Hwc, Image};

/// A batch of same-sized HWC u8 images with their integer labels, sample-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBatch<C: ColorOrder> {
    /// `[height, width, channels]` shared by every image.
    pub shape: [usize; 3],
    /// `N × H × W × C` bytes.
    pub pixels: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u32>,
    _order: std::marker::PhantomData<C>,
}

impl<C: ColorOrder> ImageBatch<C> {
    /// Builds a batch from raw parts.
    ///
    /// # Errors
    ///
    /// [`DataError::ImageSize`] when `pixels` is not `labels.len() × H × W × C` bytes, and
    /// [`DataError::EmptyBatch`] for no labels.
    pub fn from_parts(shape: [usize; 3], pixels: Vec<u8>, labels: Vec<u32>) -> Result<Self, DataError> {
        if labels.is_empty() {
            return Err(DataError::EmptyBatch);
        }
        let per = shape[0] * shape[1] * shape[2];
        if shape[2] != C::CHANNELS || pixels.len() != per * labels.len() {
            return Err(DataError::ImageSize {
                height: shape[0],
                width: shape[1],
                channels: C::CHANNELS,
                expected: shape[0] * shape[1] * C::CHANNELS * labels.len(),
                found: pixels.len(),
            });
        }
        Ok(Self {
            shape,
            pixels,
            labels,
            _order: std::marker::PhantomData,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Always false: empty batches cannot be built.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Stacks `(image, label)` pairs into one batch; every image must have the first one's shape.
///
/// # Errors
///
/// [`DataError::EmptyBatch`] for no items, [`DataError::ShapeMismatch`] naming the first item of
/// another shape.
pub fn collate<C: ColorOrder>(
    items: impl IntoIterator<Item = (Image<Hwc, C>, u32)>,
) -> Result<ImageBatch<C>, DataError> {
    let mut iter = items.into_iter();
    let (first, label) = iter.next().ok_or(DataError::EmptyBatch)?;
    let shape = first.hwc_shape();
    let mut pixels = first.into_bytes();
    let mut labels = vec![label];
    for (index, (image, label)) in iter.enumerate() {
        if image.hwc_shape() != shape {
            return Err(DataError::ShapeMismatch {
                index: index + 1,
                expected: shape,
                found: image.hwc_shape(),
            });
        }
        pixels.extend_from_slice(image.as_bytes());
        labels.push(label);
    }
    ImageBatch::from_parts(shape, pixels, labels)
}

/// The order in which a dataset of `len` samples is visited, in batches, epoch by epoch.
///
/// The permutation of epoch `e` depends only on `(seed, e)`, never on earlier epochs or on threads,
/// so a resumed run sees the same batches as an uninterrupted one. The generator (SplitMix64 with a
/// Fisher–Yates shuffle) is written out here so the order never changes with a dependency upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOrder {
    len: usize,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    drop_last: bool,
}

impl BatchOrder {
    /// `shuffle_seed: None` keeps dataset order (evaluation); `drop_last` drops a final partial batch
    /// (training, so BatchNorm never sees a batch of one).
    ///
    /// # Errors
    ///
    /// [`DataError::ZeroBatchSize`] when `batch_size == 0`.
    pub fn new(
        len: usize,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        drop_last: bool,
    ) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        Ok(Self {
            len,
            batch_size,
            shuffle_seed,
            drop_last,
        })
    }

    /// Number of batches in one epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// The index batches of epoch `epoch`.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if let Some(seed) = self.shuffle_seed {
            SplitMix64::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
        }
        order
            .chunks(self.batch_size)
            .filter(|c| !self.drop_last || c.len() == self.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and fixed forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `0..n` (Lemire's multiply-shift; `n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform draw from `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform draw from `[lo, hi)`.
    pub fn uniform_in(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A `Gamma(shape, 1)` draw: Marsaglia & Tsang (2000) for `shape ≥ 1`, `Gamma(shape + 1) ·
    /// U^(1/shape)` below (Mixup's Beta and AugMix's Dirichlet weights are built from it).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = self.uniform().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let (x, v) = loop {
                let x = self.normal();
                let v = 1.0 + c * x;
                if v > 0.0 {
                    break (x, v * v * v);
                }
            };
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x.powi(4)
                || u.max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d * (1.0 - v + v.ln())
            {
                return d * v;
            }
        }
    }

    /// Fisher–Yates shuffle of `items` in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Gray;

    fn img(h: usize, w: usize, v: u8) -> Image<Hwc, Gray> {
        Image::new(h, w, vec![v; h * w]).unwrap()
    }

    #[test]
    fn collate_stacks_in_order() {
        let b = collate([(img(2, 2, 1), 3), (img(2, 2, 7), 5)]).unwrap();
        assert_eq!(b.shape, [2, 2, 1]);
        assert_eq!(b.pixels, vec![1, 1, 1, 1, 7, 7, 7, 7]);
        assert_eq!(b.labels, vec![3, 5]);
    }

    #[test]
    fn collate_names_the_odd_sample() {
        let err = collate([(img(2, 2, 0), 0), (img(2, 2, 0), 0), (img(3, 2, 0), 0)]).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ShapeMismatch {
                    index: 2,
                    expected: [2, 2, 1],
                    found: [3, 2, 1]
                }
            ),
            "{err:?}"
        );
        assert!(matches!(collate::<Gray>([]), Err(DataError::EmptyBatch)));
    }

    #[test]
    fn batch_order_is_a_permutation_fixed_by_seed_and_epoch() {
        let order = BatchOrder::new(10, 4, Some(7), false).unwrap();
        let e0 = order.epoch(0);
        assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        let mut flat: Vec<usize> = e0.concat();
        assert_ne!(flat, (0..10).collect::<Vec<_>>(), "shuffled");
        flat.sort_unstable();
        assert_eq!(flat, (0..10).collect::<Vec<_>>(), "a permutation");
        assert_eq!(order.epoch(0), e0, "same seed and epoch, same order");
        assert_ne!(order.epoch(1), e0, "a new epoch reshuffles");
        assert_ne!(BatchOrder::new(10, 4, Some(8), false).unwrap().epoch(0), e0);
    }

    #[test]
    fn drop_last_and_unshuffled_order() {
        let order = BatchOrder::new(10, 4, None, true).unwrap();
        assert_eq!(order.num_batches(), 2);
        assert_eq!(order.epoch(3), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert!(matches!(
            BatchOrder::new(3, 0, None, false),
            Err(DataError::ZeroBatchSize)
        ));
    }
}
