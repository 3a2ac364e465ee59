//! Per-channel statistics of a dataset, accumulated exactly.
//!
//! Sums of `x` and `x²` of u8 pixels are kept in `u64` (exact for any dataset under ~2.8·10¹⁴
//! pixels), so the mean and population std are as precise as f64 allows, independent of order —
//! chunks accumulated in parallel and [`ChannelStats::merge`]d give bit-identical results.

use burn::data::dataset::Dataset;
use kiln_data::batcher::{Collate, Indexed};
use kiln_data::{DataError, Hwc, Image, ImageBatch, LabeledImage, Loader, LoaderConfig, SampleRng};

use crate::{ModelColor, Scale, TransformError};

/// Per-channel statistics of every image of `dataset`, in the model's channel order, read through
/// the [`Loader`] on `num_workers` threads (0 = this thread). Exact integer sums, so the result is
/// the same for any worker count and equals numpy's float64 mean/std of the same pixels to ~1e-15.
/// `progress` is called with (images done, total) after each chunk.
///
/// # Errors
///
/// The first sample that fails to load, naming its index (and file).
pub fn dataset_stats<D, I, C>(
    dataset: D,
    num_workers: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<ChannelStats, DataError>
where
    D: Dataset<I, DataError> + 'static,
    I: LabeledImage<C> + 'static,
    C: ModelColor,
{
    let total = dataset.len();
    let config = LoaderConfig {
        batch_size: 256,
        shuffle: false,
        num_workers,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(
        dataset,
        image_of::<I, C>,
        StatsCollate::<C>(std::marker::PhantomData),
        config,
    )?;
    let mut stats = ChannelStats::new(C::SOURCE.len());
    let mut done = 0;
    for chunk in loader.iter() {
        let (part, n) = chunk?;
        stats.merge(&part);
        done += n;
        progress(done, total);
    }
    Ok(stats)
}

/// A fingerprint of a dataset's files: FNV-1a (64-bit, written out here so it never changes) over
/// each path and its size in bytes, in order. A file added, removed, renamed or resized changes it.
///
/// # Errors
///
/// [`DataError::Io`] naming a file whose size cannot be read.
pub fn fingerprint<'a>(files: impl IntoIterator<Item = &'a std::path::Path>) -> Result<String, DataError> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
    };
    let mut n = 0u64;
    for path in files {
        let len = std::fs::metadata(path)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        eat(path.as_os_str().as_encoded_bytes());
        eat(&[0]);
        eat(&len.to_le_bytes());
        n += 1;
    }
    Ok(format!("{h:016x}-{n}"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    fingerprint: String,
    stats: ChannelStats,
}

/// [`dataset_stats`], cached in the JSON file `cache` under `fingerprint` (see [`fingerprint`]):
/// a cache with the same fingerprint is used instead of reading the dataset; otherwise the stats are
/// computed and the cache (re)written. Returns the statistics and whether they came from the cache.
/// The cache holds exact integer sums, so either scale can be derived from it.
///
/// # Errors
///
/// Those of [`dataset_stats`], and [`DataError::Io`] when the cache cannot be written. An unreadable
/// or stale cache is not an error: it is recomputed.
pub fn dataset_stats_cached<D, I, C>(
    dataset: D,
    num_workers: usize,
    cache: &std::path::Path,
    fingerprint: &str,
    progress: impl FnMut(usize, usize),
) -> Result<(ChannelStats, bool), DataError>
where
    D: Dataset<I, DataError> + 'static,
    I: LabeledImage<C> + 'static,
    C: ModelColor,
{
    if let Ok(bytes) = std::fs::read(cache)
        && let Ok(file) = serde_json::from_slice::<CacheFile>(&bytes)
        && file.fingerprint == fingerprint
        && file.stats.sum.len() == C::SOURCE.len()
    {
        return Ok((file.stats, true));
    }
    let stats = dataset_stats(dataset, num_workers, progress)?;
    let file = CacheFile {
        fingerprint: fingerprint.to_string(),
        stats,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| DataError::Custom(e.to_string()))?;
    std::fs::write(cache, json).map_err(|source| DataError::Io {
        path: cache.to_path_buf(),
        source,
    })?;
    Ok((file.stats, false))
}

/// The per-sample transform of [`dataset_stats`]: the image, as decoded.
fn image_of<I: LabeledImage<C>, C: ModelColor>(
    item: I,
    _: &mut SampleRng,
) -> Result<Image<Hwc, C>, DataError> {
    Ok(item.into_parts().0)
}

/// A "batcher" that reduces a chunk of images to their statistics (so workers do the sums).
struct StatsCollate<C>(std::marker::PhantomData<fn() -> C>);

impl<C: ModelColor> Collate<Image<Hwc, C>> for StatsCollate<C> {
    type Batch = (ChannelStats, usize);

    fn collate(&self, items: Vec<Indexed<Image<Hwc, C>>>) -> Result<Self::Batch, DataError> {
        let mut stats = ChannelStats::new(C::SOURCE.len());
        for item in &items {
            stats.add_hwc::<C>(item.item.as_bytes());
        }
        Ok((stats, items.len()))
    }
}

/// Running per-channel sums over u8 pixels, in the model's channel order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelStats {
    count: u64,
    sum: Vec<u64>,
    sum_sq: Vec<u64>,
}

impl ChannelStats {
    /// Empty statistics for `channels` channels.
    pub fn new(channels: usize) -> Self {
        Self {
            count: 0,
            sum: vec![0; channels],
            sum_sq: vec![0; channels],
        }
    }

    /// Adds interleaved (HWC) pixels with `C::CHANNELS` channels, reordered to the model's order.
    pub fn add_hwc<C: ModelColor>(&mut self, pixels: &[u8]) {
        let c = C::CHANNELS;
        for px in pixels.chunks_exact(c) {
            for (oc, &src) in C::SOURCE.iter().enumerate() {
                let v = u64::from(px[src]);
                self.sum[oc] += v;
                self.sum_sq[oc] += v * v;
            }
        }
        self.count += (pixels.len() / c) as u64;
    }

    /// Adds every image of a batch.
    pub fn add_batch<C: ModelColor>(&mut self, batch: &ImageBatch<C>) {
        self.add_hwc::<C>(&batch.pixels);
    }

    /// Combines statistics gathered separately (e.g. by parallel workers).
    pub fn merge(&mut self, other: &Self) {
        self.count += other.count;
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        for (a, b) in self.sum_sq.iter_mut().zip(&other.sum_sq) {
            *a += b;
        }
    }

    /// Pixels seen per channel.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Per-channel `(mean, population std)` on `scale`.
    ///
    /// # Errors
    ///
    /// [`TransformError::NoPixels`] before any pixel was added.
    pub fn mean_std(&self, scale: Scale) -> Result<(Vec<f64>, Vec<f64>), TransformError> {
        if self.count == 0 {
            return Err(TransformError::NoPixels);
        }
        let n = self.count as f64;
        let f = match scale {
            Scale::Unit => 1.0 / 255.0,
            Scale::Byte => 1.0,
        };
        let mut means = Vec::with_capacity(self.sum.len());
        let mut stds = Vec::with_capacity(self.sum.len());
        for (&s, &s2) in self.sum.iter().zip(&self.sum_sq) {
            let mean = s as f64 / n;
            // n·Σx² − (Σx)² is exact in u128, so no catastrophic cancellation.
            let num = u128::from(s2) * u128::from(self.count) - u128::from(s) * u128::from(s);
            let var = num as f64 / (n * n);
            means.push(mean * f);
            stds.push(var.sqrt() * f);
        }
        Ok((means, stds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_data::{Bgr, Gray};

    #[test]
    fn matches_numpy_on_a_small_example() {
        // numpy: x = np.array([0, 10, 20, 255]); x.mean(), x.std() -> 71.25, 106.32350398665386
        let mut s = ChannelStats::new(1);
        s.add_hwc::<Gray>(&[0, 10, 20, 255]);
        let (m, sd) = s.mean_std(Scale::Byte).unwrap();
        assert!((m[0] - 71.25).abs() < 1e-12);
        assert!((sd[0] - 106.323_503_986_653_86).abs() < 1e-9, "{}", sd[0]);
        let (mu, su) = s.mean_std(Scale::Unit).unwrap();
        assert!((mu[0] - 71.25 / 255.0).abs() < 1e-12 && (su[0] - sd[0] / 255.0).abs() < 1e-12);
    }

    #[test]
    fn bgr_is_reported_in_rgb_order_and_merge_is_exact() {
        let mut a = ChannelStats::new(3);
        a.add_hwc::<Bgr>(&[1, 2, 3]);
        let mut b = ChannelStats::new(3);
        b.add_hwc::<Bgr>(&[1, 2, 5]);
        a.merge(&b);
        let (m, _) = a.mean_std(Scale::Byte).unwrap();
        assert_eq!(m, vec![4.0, 2.0, 1.0]);
        assert_eq!(a.count(), 2);
        assert!(matches!(
            ChannelStats::new(1).mean_std(Scale::Unit),
            Err(TransformError::NoPixels)
        ));
    }
}
