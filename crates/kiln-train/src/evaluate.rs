//! Evaluation: mean loss, top-1 and top-5 accuracy and the confusion matrix of a model over a
//! split, in dataset order, each batch guarded against device failures.

use burn::prelude::*;
use kiln_data::BatchOrder;
use kiln_models::Classifier;
use kiln_transforms::ChwBatch;
use serde::{Deserialize, Serialize};

use crate::error::RunPoint;
use crate::guard::{self, device_failure};
use crate::metrics::ConfusionMatrix;
use crate::step::check_labels;
use crate::{BatchSource, LossConfig, TrainError};

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
    let order = BatchOrder::new(source.len(), batch_size, None, false)?;
    let loss_fn = LossConfig::default();
    let (mut loss_sum, mut top5, mut seen) = (0f64, 0usize, 0usize);
    let mut confusion: Option<ConfusionMatrix> = None;
    for (i, positions) in order.epoch(0).into_iter().enumerate() {
        let batch = source.batch(&positions)?;
        model.check_input(&batch.shape)?;
        let n = batch.labels.len();
        // The device's part, guarded: an out-of-memory panic becomes an error naming the batch.
        let scored = guard::catch(|| score_batch(model, batch, &positions, &loss_fn, device))
            .unwrap_or_else(|caught| {
                Err(device_failure(
                    &caught,
                    &crate::device::name(device),
                    RunPoint::Evaluation { batch: i + 1 },
                    batch_size,
                    1,
                ))
            })?;
        loss_sum += f64::from(scored.loss) * n as f64;
        top5 += scored.within_top5;
        let m = confusion.get_or_insert_with(|| ConfusionMatrix::new(scored.classes));
        for (t, p) in scored.truth.iter().zip(&scored.predicted) {
            m.add(*t as usize, *p as usize);
        }
        seen += n;
    }
    let confusion = confusion.unwrap_or_else(|| ConfusionMatrix::new(0));
    let denom = seen.max(1) as f64;
    Ok((
        EvalMetrics {
            loss: loss_sum / denom,
            accuracy: confusion.accuracy(),
            top5: top5 as f64 / denom,
            samples: seen,
        },
        confusion,
    ))
}

/// One evaluation batch's results.
struct Scored {
    loss: f32,
    within_top5: usize,
    classes: usize,
    truth: Vec<i64>,
    predicted: Vec<i64>,
}

/// Mean loss, top-5 hits, labels and predictions of one batch.
fn score_batch<M: Classifier>(
    model: &M,
    batch: ChwBatch,
    positions: &[usize],
    loss_fn: &LossConfig,
    device: &Device,
) -> Result<Scored, TrainError> {
    let labels = batch.labels.clone();
    let (images, targets) = batch.into_tensors(device);
    let logits = model.logits(images);
    let classes = logits.dims()[1];
    check_labels(&labels, positions, classes, || "evaluation".into())?;
    let loss: f32 = loss_fn.forward(logits.clone(), targets.clone()).into_scalar();
    // Top-k: the label's logit is beaten by fewer than k others.
    let k = classes.min(5);
    let label_logit = logits.clone().gather(1, targets.clone().unsqueeze_dim(1));
    let beaten_by: Tensor<1, Int> = logits
        .clone()
        .greater(label_logit)
        .int()
        .sum_dim(1)
        .squeeze_dim(1);
    let within: i64 = beaten_by.lower_elem(k as i64).int().sum().into_scalar();
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    Ok(Scored {
        loss,
        within_top5: usize::try_from(within).unwrap_or(0),
        classes,
        truth: targets.into_data().try_into_vec_as::<i64>().unwrap_or_default(),
        predicted: predicted.into_data().try_into_vec_as::<i64>().unwrap_or_default(),
    })
}
