//! Evaluation: mean loss, top-1 and top-5 accuracy and the confusion matrix of a model over a
//! split, in dataset order, each batch guarded against device failures.

use burn::module::Module;
use burn::prelude::*;
use kiln_data::loader::Prefetch;
use kiln_data::{BatchOrder, DataError};
use kiln_models::Classifier;
use serde::{Deserialize, Serialize};

use crate::error::RunPoint;
use crate::guard::{self, device_failure};
use crate::metrics::ConfusionMatrix;
use crate::task::{Classification, Task};
use crate::{BatchSource, TrainError};

/// Loss and accuracy over a whole split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per sample.
    pub loss: f64,
    /// Fraction of samples whose arg-max logit is the label.
    pub accuracy: f64,
    /// Fraction of samples whose label is among the 5 highest logits (all of them with ≤ 5 classes).
    pub top5: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// Mean loss and accuracy of `model` (already in eval mode, e.g. `model.valid()`) over `source`,
/// in dataset order, in batches of `batch_size`, on `device` (a plain device: no autodiff graph).
///
/// # Errors
///
/// Data errors, a bad input shape, a zero batch size, a label the model has no output for, or
/// a device failure ([`TrainError::OutOfMemory`] when a batch does not fit).
pub fn evaluate<M: Classifier>(
    model: &M,
    source: &dyn BatchSource,
    batch_size: usize,
    device: &Device,
) -> Result<EvalMetrics, TrainError> {
    evaluate_with_confusion(model, source, batch_size, device).map(|(m, _)| m)
}

/// [`evaluate`] plus the confusion matrix (rows: true class, columns: predicted), from which
/// per-class accuracy follows.
///
/// # Errors
///
/// As [`evaluate`].
pub fn evaluate_with_confusion<M: Classifier>(
    model: &M,
    source: &dyn BatchSource,
    batch_size: usize,
    device: &Device,
) -> Result<(EvalMetrics, ConfusionMatrix), TrainError> {
    let task = Classification::default();
    let e = evaluate_task(&task, model, source, batch_size, device)?;
    let confusion = e.stats.confusion.unwrap_or_else(|| ConfusionMatrix::new(0));
    let denom = e.samples.max(1) as f64;
    Ok((
        EvalMetrics {
            loss: e.loss,
            accuracy: confusion.accuracy(),
            top5: e.stats.within_top5.unwrap_or(0) as f64 / denom,
            samples: e.samples,
        },
        confusion,
    ))
}

/// What [`evaluate_task`] measured over a split.
#[derive(Debug, Clone)]
pub struct Evaluation<S> {
    /// Mean loss per sample.
    pub loss: f64,
    /// The task's merged statistics (see [`Task::metrics`]).
    pub stats: S,
    /// Samples evaluated.
    pub samples: usize,
}

/// Mean loss and merged statistics of `model` (already in eval mode, e.g. `model.valid()`) on
/// `task` over `source`, in dataset order, in batches of `batch_size`, on `device` (a plain
/// device: no autodiff graph). Each batch is guarded: an out-of-memory panic becomes an error
/// naming the batch.
///
/// # Errors
///
/// As [`evaluate`].
pub fn evaluate_task<M: Module, T: Task<M>>(
    task: &T,
    model: &M,
    source: &dyn BatchSource<T::Batch>,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation<T::Stats>, TrainError> {
    let order = BatchOrder::new(source.len(), batch_size, None, false)?;
    let batches = order.epoch(0);
    let (mut loss_sum, mut seen) = (0f64, 0usize);
    let mut stats = T::Stats::default();
    // Through kiln-data's pool, on this thread: a panicking source is an error naming the batch.
    let mut built = Prefetch::inline(batches.len(), |b| source.batch(&batches[b]));
    for (i, positions) in batches.iter().enumerate() {
        let batch = built
            .next()
            .unwrap_or_else(|| Err(DataError::Custom(format!("batch {i} was not built")).into()))?;
        task.check_first_batch(model, &batch, None)?;
        let n = task.batch_len(&batch);
        // The device's part, guarded: an out-of-memory panic becomes an error naming the batch.
        let (loss, s) =
            guard::catch(|| task.eval_batch(model, batch, positions, device)).unwrap_or_else(|caught| {
                Err(device_failure(
                    &caught,
                    &crate::device::name(device),
                    RunPoint::Evaluation { batch: i + 1 },
                    batch_size,
                    1,
                ))
            })?;
        loss_sum += f64::from(loss) * n as f64;
        task.merge(&mut stats, s);
        seen += n;
    }
    Ok(Evaluation {
        loss: loss_sum / seen.max(1) as f64,
        stats,
        samples: seen,
    })
}
