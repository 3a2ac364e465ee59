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

    fn batch(&self, positions: &[usize]) -> Result<ChwBatch, TrainError> {
        let len = self.len();
        let items = positions
            .iter()
            .map(|&p| {
                let index = match &self.indices {
                    Some(ix) => *ix.get(p).ok_or(DataError::IndexOutOfRange { index: p, len })?,
                    None => p,
                };
                Ok(self.dataset.get(index)?.into_parts())
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        let batch = collate(items)?;
        Ok(self
            .normalization
            .apply(to_chw(&batch, self.normalization.scale))?)
    }
}
