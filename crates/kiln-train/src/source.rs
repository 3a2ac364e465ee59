//! Datasets served as normalised float batches.

use std::marker::PhantomData;

use burn::data::dataset::Dataset;
use kiln_data::{DataError, LabeledImage, collate};
use kiln_transforms::{ChwBatch, ModelColor, Normalization, to_chw};

use crate::TrainError;

/// Something the loop can draw batches from: `len` samples, fetched by position.
pub trait BatchSource: Send + Sync {
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
    fn batch(&self, positions: &[usize]) -> Result<ChwBatch, TrainError>;

    /// The normalization every batch went through, when there is one (for the first-batch check).
    fn normalization(&self) -> Option<&Normalization> {
        None
    }
}

/// A classification dataset, optionally restricted to a subset of indices, plus the normalization
/// applied to every batch (on the normalization's own scale, so the two cannot disagree).
pub struct ClassificationSource<D, I, C> {
    dataset: D,
    indices: Option<Vec<usize>>,
    normalization: Normalization,
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
            _item: PhantomData,
        }
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
            _item: PhantomData,
        })
    }

    /// The normalization applied to each batch.
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }
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

    fn batch(&self, positions: &[usize]) -> Result<ChwBatch, TrainError> {
        let len = self.len();
        let items = positions
            .iter()
            .map(|&p| {
                // Checked here: Burn's `Dataset::get` contract allows a panic past the end.
                if p >= len {
                    return Err(DataError::IndexOutOfRange { index: p, len });
                }
                let index = self.indices.as_ref().map_or(p, |ix| ix[p]);
                Ok(self.dataset.get(index)?.into_parts())
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        let batch = collate(items)?;
        Ok(self
            .normalization
            .apply(to_chw(&batch, self.normalization.scale))?)
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
