//! What is learned: a [`Task`] says what a batch is, how a model's output on it becomes a loss,
//! and what is measured. The training step, `fit`, evaluation, data parallelism, the overfit and
//! LR-finder diagnostics are written once over it; [`Classification`] is the first task.
//!
//! Adding a task (detection, say) is one type implementing [`Task`] for its model: its batch
//! (images with padded boxes), its loss (focal + GIoU + centerness), its per-batch statistics
//! and how they merge, and the metrics they give (mAP as the primary one). Checkpoints, resume,
//! accumulation, clipping, the metrics log and the report need nothing more.

use burn::module::Module;
use burn::prelude::*;
use kiln_models::Classifier;
use kiln_transforms::check::check_batch;
use kiln_transforms::{ChwBatch, Normalization};

use crate::metrics::ConfusionMatrix;
use crate::{LossConfig, TrainError};

/// One quantity a task measures besides the loss. Records name it `train_<key>` and
/// `val_<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The record key's suffix (`acc`, `top5`, `map`).
    pub key: &'static str,
    /// How reports name it (`accuracy`).
    pub title: &'static str,
    /// Whether a larger value is better (early stopping and the best epoch follow it).
    pub higher_is_better: bool,
}

/// Top-1 accuracy, the classification task's primary metric.
pub const ACCURACY: Metric = Metric {
    key: "acc",
    title: "accuracy",
    higher_is_better: true,
};

/// Top-5 accuracy (evaluation only).
pub const TOP5: Metric = Metric {
    key: "top5",
    title: "top-5 accuracy",
    higher_is_better: true,
};

/// What a model learns from a batch, and what is measured on it.
///
/// `M` is the model (any Burn [`Module`]); the task is shared by every replica's thread.
pub trait Task<M: Module>: Send + Sync {
    /// One collated batch, as a [`BatchSource`](crate::BatchSource) serves it.
    type Batch: Send + Clone + 'static;
    /// Per-batch measurements that merge over an epoch or an evaluation (counts, not means).
    /// Serializable so that processes training together can merge them.
    type Stats: Default + Send + serde::Serialize + serde::de::DeserializeOwned + 'static;

    /// The metric that picks the best epoch and that the report plots (accuracy, mAP).
    fn primary(&self) -> Metric;

    /// Samples in `batch`.
    fn batch_len(&self, batch: &Self::Batch) -> usize;

    /// Checks the run's first batch before any step: the model takes its shape (an error when
    /// not), and any warnings about it (e.g. not normalised as `norm` says).
    ///
    /// # Errors
    ///
    /// A shape the model cannot take.
    fn check_first_batch(
        &self,
        model: &M,
        batch: &Self::Batch,
        norm: Option<&Normalization>,
    ) -> Result<Vec<String>, TrainError>;

    /// The training forward pass on `device` (autodiff): the mean loss over the batch, as a
    /// one-element tensor to call `backward` on, and the batch's statistics. `first` is set on
    /// the run's first step (check the loss settings against the model's output then).
    /// `positions` are the samples' positions in the source, for errors.
    ///
    /// # Errors
    ///
    /// Targets the model cannot score (a label beyond its outputs), bad loss settings.
    fn train_loss(
        &self,
        model: &M,
        batch: Self::Batch,
        positions: &[usize],
        device: &Device,
        first: bool,
    ) -> Result<(Tensor<1>, Self::Stats), TrainError>;

    /// The evaluation forward pass (`model` in eval mode, a plain device): the batch's mean loss
    /// and its statistics.
    ///
    /// # Errors
    ///
    /// As [`Task::train_loss`].
    fn eval_batch(
        &self,
        model: &M,
        batch: Self::Batch,
        positions: &[usize],
        device: &Device,
    ) -> Result<(f32, Self::Stats), TrainError>;

    /// Adds `other`'s counts to `into`.
    fn merge(&self, into: &mut Self::Stats, other: Self::Stats);

    /// `batch` cut into `parts` equal consecutive shares (one per data-parallel replica); the
    /// caller has checked that its length divides.
    fn split(&self, batch: Self::Batch, parts: usize) -> Vec<Self::Batch>;

    /// The metrics merged `stats` give over `seen` samples, by [`Metric::key`] (only those the
    /// stats hold: training measures less than evaluation).
    fn metrics(&self, stats: &Self::Stats, seen: usize) -> Vec<(&'static str, f64)>;
}

/// Image classification: `[N, C, H, W]` images with one integer label each, cross-entropy on the
/// logits (`loss`, with its label smoothing, in training; plain cross-entropy in evaluation),
/// top-1 accuracy in training, top-1, top-5 and the confusion matrix in evaluation.
#[derive(Debug, Clone, Default)]
pub struct Classification {
    /// The training loss.
    pub loss: LossConfig,
    /// Mixup/CutMix of training batches, with soft targets ([`crate::mixup`]).
    pub mixup: Option<crate::mixup::MixupConfig>,
    /// The run's seed, which with a batch's sample indices seeds its mix.
    pub seed: u64,
}

impl Classification {
    /// Classification trained with `loss`.
    pub fn new(loss: LossConfig) -> Self {
        Self {
            loss,
            mixup: None,
            seed: 0,
        }
    }

    /// Classification as `cfg` trains it: its loss, and its Mixup/CutMix seeded by its seed.
    pub fn for_training(cfg: &crate::TrainConfig) -> Self {
        Self {
            loss: cfg.loss.clone(),
            mixup: cfg.mixup,
            seed: cfg.seed,
        }
    }
}

/// What a classification batch measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClassStats {
    /// Samples whose arg-max logit is the label.
    pub correct: usize,
    /// Samples whose label is among the 5 highest logits (evaluation only).
    pub within_top5: Option<usize>,
    /// True class × predicted class (evaluation only).
    pub confusion: Option<ConfusionMatrix>,
}

impl<M: Classifier> Task<M> for Classification {
    type Batch = ChwBatch;
    type Stats = ClassStats;

    fn primary(&self) -> Metric {
        ACCURACY
    }

    fn batch_len(&self, batch: &ChwBatch) -> usize {
        batch.labels.len()
    }

    fn check_first_batch(
        &self,
        model: &M,
        batch: &ChwBatch,
        norm: Option<&Normalization>,
    ) -> Result<Vec<String>, TrainError> {
        model.check_input(&batch.shape)?;
        // Does the first batch look normalised? (mean ≈ 0, std ≈ 1 per channel)
        Ok(norm.map_or_else(Vec::new, |norm| {
            check_batch(&batch.data, batch.shape, norm)
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect()
        }))
    }

    fn train_loss(
        &self,
        model: &M,
        batch: ChwBatch,
        positions: &[usize],
        device: &Device,
        first: bool,
    ) -> Result<(Tensor<1>, ClassStats), TrainError> {
        let labels = batch.labels.clone();
        let mut batch = batch;
        let mix = match &self.mixup {
            Some(m) => {
                let mix = m.draw(batch.shape, &mut crate::mixup::batch_rng(self.seed, positions))?;
                mix.apply(&mut batch.data, batch.shape);
                Some(mix)
            }
            None => None,
        };
        let (images, targets) = batch.into_tensors(device);
        let logits = model.logits(images);
        let classes = logits.dims()[1];
        if first {
            self.loss.validate(Some(classes))?;
        }
        check_labels(&labels, positions, classes, || "training".into())?;
        let (loss, counted) = match &mix {
            None => (self.loss.forward(logits.clone(), targets.clone()), targets),
            Some(mix) => {
                let n = labels.len();
                let soft = mix.targets(&labels, classes, self.loss.label_smoothing);
                let soft = Tensor::<2>::from_data(burn::tensor::TensorData::new(soft, [n, classes]), device);
                let dominant: Vec<i64> = mix.dominant(&labels).into_iter().map(i64::from).collect();
                let dominant =
                    Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(dominant, [n]), device);
                (self.loss.forward_soft(logits.clone(), soft), dominant)
            }
        };
        let stats = ClassStats {
            correct: count_correct(logits.detach(), counted),
            ..ClassStats::default()
        };
        Ok((loss, stats))
    }

    fn eval_batch(
        &self,
        model: &M,
        batch: ChwBatch,
        positions: &[usize],
        device: &Device,
    ) -> Result<(f32, ClassStats), TrainError> {
        let labels = batch.labels.clone();
        let (images, targets) = batch.into_tensors(device);
        let logits = model.logits(images);
        let classes = logits.dims()[1];
        check_labels(&labels, positions, classes, || "evaluation".into())?;
        let loss: f32 = LossConfig::default()
            .forward(logits.clone(), targets.clone())
            .into_scalar();
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
        let truth = targets.into_data().try_into_vec_as::<i64>().unwrap_or_default();
        let predicted = predicted.into_data().try_into_vec_as::<i64>().unwrap_or_default();
        let mut confusion = ConfusionMatrix::new(classes);
        let mut correct = 0;
        for (t, p) in truth.iter().zip(&predicted) {
            confusion.add(*t as usize, *p as usize);
            correct += usize::from(t == p);
        }
        Ok((
            loss,
            ClassStats {
                correct,
                within_top5: Some(usize::try_from(within).unwrap_or(0)),
                confusion: Some(confusion),
            },
        ))
    }

    fn merge(&self, into: &mut ClassStats, other: ClassStats) {
        into.correct += other.correct;
        if let Some(w) = other.within_top5 {
            *into.within_top5.get_or_insert(0) += w;
        }
        match (&mut into.confusion, other.confusion) {
            (Some(a), Some(b)) => a.merge(&b),
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
    }

    fn split(&self, batch: ChwBatch, parts: usize) -> Vec<ChwBatch> {
        let [b, c, h, w] = batch.shape;
        let per = b / parts.max(1);
        let plane = c * h * w;
        (0..parts)
            .map(|i| {
                let rows = i * per..(i + 1) * per;
                ChwBatch {
                    shape: [per, c, h, w],
                    data: batch.data[rows.start * plane..rows.end * plane].to_vec(),
                    labels: batch.labels[rows].to_vec(),
                    scale: batch.scale,
                    order: batch.order,
                    normalized_by: batch.normalized_by.clone(),
                }
            })
            .collect()
    }

    fn metrics(&self, stats: &ClassStats, seen: usize) -> Vec<(&'static str, f64)> {
        let n = seen.max(1) as f64;
        let mut out = vec![(ACCURACY.key, stats.correct as f64 / n)];
        if let Some(w) = stats.within_top5 {
            out.push((TOP5.key, w as f64 / n));
        }
        out
    }
}

/// Refuses a batch with a label ≥ `classes` before it reaches the loss (where Burn's gather would
/// panic).
pub(crate) fn check_labels(
    labels: &[u32],
    positions: &[usize],
    classes: usize,
    context: impl FnOnce() -> String,
) -> Result<(), TrainError> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(TrainError::LabelOutOfRange {
            label: labels[i],
            position: positions.get(i).copied().unwrap_or(i),
            classes,
            context: context(),
        }),
        None => Ok(()),
    }
}

fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> usize {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let hits: i64 = predicted.equal(targets).int().sum().into_scalar();
    usize::try_from(hits).unwrap_or(0)
}
