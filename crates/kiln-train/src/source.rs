//! Datasets served as normalised float batches.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use burn::data::dataset::Dataset;
use kiln_data::loader::sample_seed;
use kiln_data::{DataError, LabeledImage, SampleRng, collate};
use kiln_transforms::compose::Compose;
use kiln_transforms::{ChwBatch, ModelColor, Normalization, to_chw};

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// What a source does with a sample that cannot be read or transformed (a corrupt image, an
/// unreadable file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnBadSample {
    /// Stop with the sample's index, file and reason.
    #[default]
    Error,
    /// Leave it out of its batch, record it (index and reason) for the run report, and go on —
    /// until more than the allowed fraction of the data is bad.
    Skip,
}

/// A sample left out under [`OnBadSample::Skip`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedSample {
    /// Its index in the dataset.
    pub index: usize,
    /// Why (the error, naming the file where there is one).
    pub reason: String,
}

/// Something the loop can draw batches from: `len` samples, fetched by position.
pub trait BatchSource<B = ChwBatch>: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The normalised batch of the samples at `positions` (each `< len()`).
    ///
    /// # Errors
    ///
    /// Data, collate and transform errors, naming the sample.
    fn batch(&self, positions: &[usize]) -> Result<B, TrainError>;

    /// The training batch of `positions` in epoch `epoch` (0-based): where the source augments,
    /// each sample's random draws depend only on `(seed, epoch, dataset index)`, so a batch is the
    /// same whichever thread builds it and whenever. Without augmentation, [`BatchSource::batch`].
    ///
    /// # Errors
    ///
    /// As [`BatchSource::batch`].
    fn epoch_batch(&self, positions: &[usize], epoch: u64) -> Result<B, TrainError> {
        let _ = epoch;
        self.batch(positions)
    }

    /// The normalization every batch went through, when there is one (for the first-batch check).
    fn normalization(&self) -> Option<&Normalization> {
        None
    }

    /// The samples left out so far under [`OnBadSample::Skip`], by dataset index.
    fn skipped(&self) -> Vec<SkippedSample> {
        Vec::new()
    }
}

/// The skip policy's record.
struct SkipLog {
    max_fraction: f64,
    skipped: Mutex<BTreeMap<usize, String>>,
}

/// An image and its class index.
type Labeled<C> = (kiln_data::Image<kiln_data::Hwc, C>, u32);

/// A classification dataset, optionally restricted to a subset of indices, plus the normalization
/// applied to every batch (on the normalization's own scale, so the two cannot disagree).
///
/// With [`ClassificationSource::with_augmentation`], training batches
/// ([`BatchSource::epoch_batch`]) go through a [`Compose`] (random crops, flips, colour jitter,
/// erasing) whose draws come from a per-sample generator seeded from `(seed, epoch, index)`, as
/// kiln's `Loader` does; [`BatchSource::batch`] (evaluation, the doctor) stays unaugmented.
pub struct ClassificationSource<D, I, C> {
    dataset: D,
    indices: Option<Vec<usize>>,
    normalization: Normalization,
    augmentation: Option<(Compose, u64)>,
    eval: Option<Compose>,
    skip: Option<SkipLog>,
    _item: PhantomData<fn() -> (I, C)>,
}

impl<D, I, C> ClassificationSource<D, I, C>
where
    D: Dataset<I, DataError>,
    I: LabeledImage<C>,
    C: ModelColor,
{
    /// Every sample of `dataset`.
    pub fn new(dataset: D, normalization: Normalization) -> Self {
        Self {
            dataset,
            indices: None,
            normalization,
            augmentation: None,
            eval: None,
            skip: None,
            _item: PhantomData,
        }
    }

    /// What to do with a sample that cannot be read or transformed: [`OnBadSample::Error`] (the
    /// default) stops; [`OnBadSample::Skip`] leaves it out of its batch and records it, and
    /// stops with [`TrainError::TooManyBadSamples`] once more than `max_fraction` of the
    /// samples are bad.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] for a fraction outside [0, 1].
    pub fn on_bad_sample(mut self, policy: OnBadSample, max_fraction: f64) -> Result<Self, TrainError> {
        if !(0.0..=1.0).contains(&max_fraction) {
            return Err(TrainError::InvalidConfig {
                field: "data.max_bad_fraction",
                value: max_fraction.to_string(),
                reason: "must be in [0, 1]".into(),
            });
        }
        self.skip = (policy == OnBadSample::Skip).then(|| SkipLog {
            max_fraction,
            skipped: Mutex::new(BTreeMap::new()),
        });
        Ok(self)
    }

    /// Training batches go through `compose` (its stages and erasing), with generators seeded
    /// from `seed`. The compose's normalization must be this source's: one pipeline, one set of
    /// statistics.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] when the normalizations differ; the compose's own checks
    /// ([`Compose::validate_for`]).
    pub fn with_augmentation(mut self, compose: Compose, seed: u64) -> Result<Self, TrainError> {
        self.check_pipeline(&compose, "transforms.train", "augmentation")?;
        self.augmentation = Some((compose, seed));
        Ok(self)
    }

    /// `compose` fits images in order `C` and normalizes as this source does.
    fn check_pipeline(&self, compose: &Compose, field: &'static str, what: &str) -> Result<(), TrainError> {
        compose.validate_for::<C>()?;
        let theirs = compose.normalization.resolve()?;
        if theirs != self.normalization {
            return Err(TrainError::InvalidConfig {
                field,
                value: describe(&theirs),
                reason: format!(
                    "the {what} pipeline normalizes differently from the data source ({})",
                    describe(&self.normalization)
                ),
            });
        }
        Ok(())
    }

    /// Every unaugmented batch ([`BatchSource::batch`]: validation, test, the doctor) goes through
    /// `compose`'s stages (deterministic ones: resize, centre crop) — for images of different
    /// sizes, which cannot be stacked as they are. Its normalization must be this source's.
    ///
    /// # Errors
    ///
    /// As [`ClassificationSource::with_augmentation`].
    pub fn with_eval_transform(mut self, compose: Compose) -> Result<Self, TrainError> {
        self.check_pipeline(&compose, "transforms.eval", "evaluation")?;
        self.eval = Some(compose);
        Ok(self)
    }

    /// Each sample through `compose` (draws seeded from `(seed, epoch, index)`), stacked.
    fn composed(
        &self,
        positions: &[usize],
        compose: &Compose,
        seed: u64,
        epoch: u64,
    ) -> Result<ChwBatch, TrainError> {
        let images = self.each(positions, |index, (image, label)| {
            let mut rng = SampleRng::new(sample_seed(seed, epoch, index));
            let out = compose
                .apply::<C>(&image, &mut rng)
                .map_err(|e| DataError::Transform(e.to_string()))?;
            Ok((index, out, label))
        })?;
        let mut shape = [images.len(), 0, 0, 0];
        let mut data = Vec::new();
        let mut labels = Vec::with_capacity(images.len());
        for (index, out, label) in images {
            let dims = [
                <C::Out as kiln_data::ColorOrder>::CHANNELS,
                out.height(),
                out.width(),
            ];
            if labels.is_empty() {
                shape[1..].copy_from_slice(&dims);
            } else if shape[1..] != dims {
                return Err(DataError::Sample {
                    index,
                    source: Box::new(DataError::Custom(format!(
                        "the transformed image is {}x{}x{} but the batch's first one is {}x{}x{}; end the pipeline with a fixed-size stage (resize, crop)",
                        dims[0], dims[1], dims[2], shape[1], shape[2], shape[3]
                    ))),
                }
                .into());
            }
            data.extend_from_slice(out.as_slice());
            labels.push(label);
        }
        Ok(ChwBatch {
            shape,
            data,
            labels,
            scale: self.normalization.scale,
            order: C::OUT_ORDER,
            normalized_by: Some(self.normalization.name.clone()),
        })
    }

    /// The augmentation pipeline, when training batches are augmented.
    pub fn augmentation(&self) -> Option<&Compose> {
        self.augmentation.as_ref().map(|(c, _)| c)
    }

    /// The sample at position `p` and its index in the dataset.
    fn get(&self, p: usize) -> Result<(usize, Labeled<C>), DataError> {
        let len = self.len();
        // Checked here: Burn's `Dataset::get` contract allows a panic past the end.
        if p >= len {
            return Err(DataError::IndexOutOfRange { index: p, len });
        }
        let index = self.indices.as_ref().map_or(p, |ix| ix[p]);
        Ok((index, self.dataset.get(index)?.into_parts()))
    }

    /// `make` applied to each position in order; a failing sample stops everything, or under the
    /// skip policy is recorded and left out.
    fn each<T>(
        &self,
        positions: &[usize],
        make: impl Fn(usize, Labeled<C>) -> Result<T, DataError>,
    ) -> Result<Vec<T>, TrainError> {
        let mut out = Vec::with_capacity(positions.len());
        for &p in positions {
            let (index, item) = match self.get(p) {
                Ok(v) => v,
                Err(e @ DataError::IndexOutOfRange { .. }) => return Err(e.into()),
                Err(e) => {
                    let index = self.indices.as_ref().map_or(p, |ix| ix[p]);
                    self.bad(index, e)?;
                    continue;
                }
            };
            match make(index, item) {
                Ok(v) => out.push(v),
                Err(e) => self.bad(index, e)?,
            }
        }
        if out.is_empty() && !positions.is_empty() {
            return Err(DataError::Custom(format!(
                "every sample of a batch of {} was bad (see the skipped samples)",
                positions.len()
            ))
            .into());
        }
        Ok(out)
    }

    /// A bad sample: the error, or (skip policy) a record, or too many of them.
    fn bad(&self, index: usize, e: DataError) -> Result<(), TrainError> {
        let Some(log) = &self.skip else {
            return Err(match e {
                e @ DataError::Sample { .. } => e,
                e => DataError::Sample {
                    index,
                    source: Box::new(e),
                },
            }
            .into());
        };
        let mut skipped = log
            .skipped
            .lock()
            .map_err(|_| DataError::Custom("the skipped-sample record was poisoned by a panic".into()))?;
        skipped.insert(index, e.to_string());
        let len = self.len();
        if skipped.len() as f64 > log.max_fraction * len as f64 {
            let examples = skipped
                .iter()
                .take(3)
                .map(|(i, r)| format!("sample {i}: {r}"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(TrainError::TooManyBadSamples {
                bad: skipped.len(),
                total: len,
                max_fraction: log.max_fraction,
                examples,
            });
        }
        Ok(())
    }

    /// Only the samples at `indices` (e.g. one side of a train/validation split).
    ///
    /// # Errors
    ///
    /// [`DataError::IndexOutOfRange`] for an index past the dataset's end.
    pub fn subset(dataset: D, indices: Vec<usize>, normalization: Normalization) -> Result<Self, TrainError> {
        let len = dataset.len();
        if let Some(&index) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::IndexOutOfRange { index, len }.into());
        }
        Ok(Self {
            dataset,
            indices: Some(indices),
            normalization,
            augmentation: None,
            eval: None,
            skip: None,
            _item: PhantomData,
        })
    }

    /// The normalization applied to each batch.
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }
}

fn describe(n: &Normalization) -> String {
    format!(
        "{}: mean {:?}, std {:?} on the {:?} scale",
        n.name, n.mean, n.std, n.scale
    )
}

impl<D, I, C> BatchSource for ClassificationSource<D, I, C>
where
    D: Dataset<I, DataError>,
    I: LabeledImage<C>,
    C: ModelColor,
{
    fn len(&self) -> usize {
        self.indices.as_ref().map_or_else(|| self.dataset.len(), Vec::len)
    }

    fn normalization(&self) -> Option<&Normalization> {
        Some(&self.normalization)
    }

    fn skipped(&self) -> Vec<SkippedSample> {
        self.skip
            .as_ref()
            .and_then(|log| log.skipped.lock().ok())
            .map(|s| {
                s.iter()
                    .map(|(&index, reason)| SkippedSample {
                        index,
                        reason: reason.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn batch(&self, positions: &[usize]) -> Result<ChwBatch, TrainError> {
        if let Some(compose) = &self.eval {
            return self.composed(positions, compose, 0, 0);
        }
        let items = self.each(positions, |_, item| Ok(item))?;
        let batch = collate(items)?;
        Ok(self
            .normalization
            .apply(to_chw(&batch, self.normalization.scale))?)
    }

    fn epoch_batch(&self, positions: &[usize], epoch: u64) -> Result<ChwBatch, TrainError> {
        match &self.augmentation {
            Some((compose, seed)) => self.composed(positions, compose, *seed, epoch),
            None => self.batch(positions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_data::idx::encode_idx;
    use kiln_data::{MnistDataset, MnistSplit};
    use kiln_transforms::{ChannelOrder, Scale};

    fn tiny(dir: &std::path::Path) -> MnistDataset {
        // Image i is filled with the value 10·i; label i.
        let pixels: Vec<u8> = (0..4u8).flat_map(|i| std::iter::repeat_n(10 * i, 784)).collect();
        std::fs::write(
            dir.join("train-images-idx3-ubyte"),
            encode_idx(&[4, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join("train-labels-idx1-ubyte"),
            encode_idx(&[4], &[0, 1, 2, 3]),
        )
        .unwrap();
        MnistDataset::from_dir(dir, MnistSplit::Train).unwrap()
    }

    #[test]
    fn subset_batches_are_normalised_on_the_normalizations_scale() {
        let dir = tempfile::tempdir().unwrap();
        let norm = Normalization::new("t", vec![10.0], vec![5.0], Scale::Byte, ChannelOrder::Gray).unwrap();
        let src = ClassificationSource::subset(tiny(dir.path()), vec![3, 1], norm).unwrap();
        assert_eq!(src.len(), 2);
        let b = src.batch(&[1, 0]).unwrap();
        assert_eq!(b.labels, vec![1, 3]);
        assert_eq!(b.shape, [2, 1, 28, 28]);
        // (10 - 10) / 5 = 0 for image 1, (30 - 10) / 5 = 4 for image 3.
        assert_eq!((b.data[0], b.data[784]), (0.0, 4.0));
        assert_eq!(b.scale, Scale::Byte);
    }

    #[test]
    fn out_of_range_positions_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let norm = Normalization::fashion_mnist();
        assert!(matches!(
            ClassificationSource::subset(tiny(dir.path()), vec![0, 4], norm.clone()),
            Err(TrainError::Data(DataError::IndexOutOfRange { index: 4, len: 4 }))
        ));
        let src = ClassificationSource::subset(tiny(dir.path()), vec![0, 1], norm).unwrap();
        assert!(matches!(
            src.batch(&[2]),
            Err(TrainError::Data(DataError::IndexOutOfRange { index: 2, len: 2 }))
        ));
    }
}
