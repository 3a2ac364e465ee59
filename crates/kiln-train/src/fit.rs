//! The training loop.

use std::time::Instant;

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_data::BatchOrder;
use kiln_models::Classifier;
use kiln_transforms::check::check_batch;
use serde::{Deserialize, Serialize};

use crate::{BatchSource, MetricsLog, OptimizerConfig, Schedule, TrainError};

/// Settings of one training run (saved as part of the run's `config.json`).
///
/// The defaults are the SGD recipe of the PyTorch peer (`shared/bench/torch_fmnist.py`) with
/// PyTorch's semantics, plus cosine annealing of the learning rate: momentum 0.9 with
/// **dampening 0** (Burn's own default is 0.1) and coupled weight decay 5e-4 — not on biases and
/// BatchNorm γ/β (see [`OptimizerConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per optimizer step. The last partial batch of an epoch is dropped.
    pub batch_size: usize,
    /// Base (peak) learning rate.
    pub lr: f64,
    /// The optimizer and its settings.
    pub optimizer: OptimizerConfig,
    /// How the learning rate moves over the run (cosine annealing to 0 by default).
    pub schedule: Schedule,
    /// Seed of parameter init and batch order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            lr: 0.05,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::default(),
            seed: 42,
        }
    }
}

impl TrainConfig {
    /// Checks every field (the schedule against the run's length is checked when it starts).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field, value: String, reason: &str| {
            Err(TrainError::InvalidConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.epochs == 0 {
            return bad("epochs", "0".into(), "must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "0".into(), "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "must be finite and > 0");
        }
        self.optimizer.validate()
    }
}

/// Loss and accuracy over a whole split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per sample.
    pub loss: f64,
    /// Fraction of samples whose arg-max logit is the label.
    pub accuracy: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// What one epoch measured (one line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Training accuracy over the epoch (with the weights as they were at each step).
    pub train_acc: f64,
    /// Validation loss, when there is a validation split.
    pub val_loss: Option<f64>,
    /// Validation accuracy, when there is a validation split.
    pub val_acc: Option<f64>,
    /// Learning rate of the epoch's first step.
    pub lr: f64,
    /// Training throughput (batch assembly + forward + backward + step), evaluation excluded.
    pub train_images_per_s: f64,
    /// Wall time of the epoch, evaluation included.
    pub seconds: f64,
}

/// Where a run reports as it goes. `Default` reports nowhere (tests).
#[derive(Default)]
pub struct FitOutputs<'a> {
    /// Appended (and flushed) with each epoch's record.
    pub log: Option<&'a mut MetricsLog>,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Called with each epoch's record as it is made (the CLI prints it).
    pub on_epoch: Option<&'a mut dyn FnMut(&EpochRecord)>,
    /// Called with each warning as it is found (the first-batch check's; the CLI prints them).
    pub on_warning: Option<&'a mut dyn FnMut(&str)>,
}

/// The trained model and what the run measured.
#[derive(Debug)]
pub struct FitResult<M> {
    /// The trained model, on the autodiff device (call `.valid()` for inference).
    pub model: M,
    /// One record per epoch.
    pub epochs: Vec<EpochRecord>,
    /// Mean training throughput over all epochs.
    pub train_images_per_s: f64,
    /// Warnings raised during the run (e.g. by the first-batch normalisation check).
    pub warnings: Vec<String>,
}

/// Trains `model` on `train` for `cfg.epochs`, evaluating on `val` after each epoch.
///
/// The model is moved to `device` with autodiff on (so BatchNorm trains in batch-statistics mode);
/// evaluation runs `model.valid()` on the plain device. Where each epoch's record goes
/// and the progress bar are set in [`FitOutputs`].
///
/// # Errors
///
/// An invalid config, a training set smaller than one batch, a bad input shape (checked on the
/// first batch, before any step), data errors, a non-finite loss, or a metrics write failure.
pub fn fit<M: Classifier>(
    model: M,
    train: &dyn BatchSource,
    val: Option<&dyn BatchSource>,
    cfg: &TrainConfig,
    device: &Device,
    outputs: FitOutputs<'_>,
) -> Result<FitResult<M>, TrainError> {
    let FitOutputs {
        mut log,
        progress,
        mut on_epoch,
        mut on_warning,
    } = outputs;
    let mut warnings = Vec::new();
    cfg.validate()?;
    if train.len() < cfg.batch_size {
        return Err(TrainError::InvalidConfig {
            field: "batch_size",
            value: cfg.batch_size.to_string(),
            reason: format!(
                "the training set has only {} samples, fewer than one batch (the last partial batch is dropped); lower the batch size",
                train.len()
            ),
        });
    }
    let plain = device.clone().without_autodiff();
    let ad = plain.clone().autodiff();
    ad.seed(cfg.seed);
    // `fork` moves the parameters; `train` turns gradient tracking and BatchNorm training on.
    let mut model = model.fork(&ad).train();
    let mut optim = cfg.optimizer.build(Vec::new())?;
    let loss_fn: CrossEntropyLoss = CrossEntropyLossConfig::new().init(&ad);
    let order = BatchOrder::new(train.len(), cfg.batch_size, Some(cfg.seed), true)?;

    let steps_per_epoch = order.num_batches();
    let total_steps = steps_per_epoch * cfg.epochs;
    cfg.schedule.validate(cfg.lr, steps_per_epoch, total_steps)?;
    let mut records = Vec::with_capacity(cfg.epochs);
    let (mut seen_total, mut train_secs_total) = (0usize, 0f64);
    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        let batches = order.epoch(epoch as u64 - 1);
        let bar = progress_bar(progress, batches.len(), epoch, cfg.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let mut train_secs = 0f64;
        let first_step = (epoch - 1) * batches.len();
        let epoch_lr = cfg
            .schedule
            .lr_at(cfg.lr, first_step, steps_per_epoch, total_steps);
        for (step, positions) in batches.iter().enumerate() {
            let lr = cfg
                .schedule
                .lr_at(cfg.lr, first_step + step, steps_per_epoch, total_steps);
            // Throughput counts batch assembly too, as the PyTorch peer's timed loop does.
            let t = Instant::now();
            let batch = train.batch(positions)?;
            if epoch == 1 && step == 0 {
                model.check_input(&batch.shape)?;
                // Does the first batch look normalised? (mean ≈ 0, std ≈ 1 per channel)
                if let Some(norm) = train.normalization() {
                    for w in check_batch(&batch.data, batch.shape, norm).warnings {
                        let w = w.to_string();
                        if let Some(f) = on_warning.as_deref_mut() {
                            f(&w);
                        }
                        warnings.push(w);
                    }
                }
            }
            let n = batch.labels.len();
            let (images, targets) = batch.into_tensors(&ad);
            let logits = model.logits(images);
            let loss = loss_fn.forward(logits.clone(), targets.clone());
            let loss_value: f32 = loss.clone().into_scalar();
            if !loss_value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    step: step + 1,
                    loss: loss_value,
                    batch: n,
                    lr,
                });
            }
            correct += count_correct(logits.detach(), targets);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            train_secs += t.elapsed().as_secs_f64();
            loss_sum += f64::from(loss_value) * n as f64;
            seen += n;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4}  {:.0} img/s",
                loss_sum / seen as f64,
                seen as f64 / train_secs.max(1e-9)
            ));
        }
        bar.finish_and_clear();
        let val_metrics = match val {
            Some(v) if !v.is_empty() => Some(evaluate(&model.valid(), v, cfg.batch_size, &plain)?),
            _ => None,
        };
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_acc: correct as f64 / seen as f64,
            val_loss: val_metrics.map(|m| m.loss),
            val_acc: val_metrics.map(|m| m.accuracy),
            lr: epoch_lr,
            train_images_per_s: seen as f64 / train_secs.max(1e-9),
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        if let Some(log) = log.as_deref_mut() {
            log.append(&record)?;
        }
        if let Some(f) = on_epoch.as_deref_mut() {
            f(&record);
        }
        records.push(record);
        seen_total += seen;
        train_secs_total += train_secs;
    }
    Ok(FitResult {
        model,
        epochs: records,
        train_images_per_s: seen_total as f64 / train_secs_total.max(1e-9),
        warnings,
    })
}

/// Mean loss and accuracy of `model` (already in eval mode, e.g. `model.valid()`) over `source`,
/// in dataset order, in batches of `batch_size`, on `device` (a plain device: no autodiff graph).
///
/// # Errors
///
/// Data errors, a bad input shape, or a zero batch size.
pub fn evaluate<M: Classifier>(
    model: &M,
    source: &dyn BatchSource,
    batch_size: usize,
    device: &Device,
) -> Result<EvalMetrics, TrainError> {
    let order = BatchOrder::new(source.len(), batch_size, None, false)?;
    let loss_fn: CrossEntropyLoss = CrossEntropyLossConfig::new().init(device);
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
    for positions in order.epoch(0) {
        let batch = source.batch(&positions)?;
        model.check_input(&batch.shape)?;
        let n = batch.labels.len();
        let (images, targets) = batch.into_tensors(device);
        let logits = model.logits(images);
        let loss: f32 = loss_fn.forward(logits.clone(), targets.clone()).into_scalar();
        loss_sum += f64::from(loss) * n as f64;
        correct += count_correct(logits, targets);
        seen += n;
    }
    let denom = seen.max(1) as f64;
    Ok(EvalMetrics {
        loss: loss_sum / denom,
        accuracy: correct as f64 / denom,
        samples: seen,
    })
}

fn count_correct(logits: Tensor<2>, targets: Tensor<1, Int>) -> usize {
    let predicted = logits.argmax(1).squeeze_dim::<1>(1);
    let hits: i64 = predicted.equal(targets).int().sum().into_scalar();
    usize::try_from(hits).unwrap_or(0)
}

fn progress_bar(enabled: bool, len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pytorch_sgd_semantics() {
        let c = TrainConfig::default();
        assert_eq!(c.optimizer, OptimizerConfig::sgd(0.9, 5e-4));
        assert!(
            matches!(c.optimizer, OptimizerConfig::Sgd { dampening, nesterov: false, .. } if dampening == 0.0)
        );
        c.validate().unwrap();
    }

    #[test]
    fn bad_settings_name_the_field() {
        let cases: [(TrainConfig, &str); 4] = [
            (
                TrainConfig {
                    lr: 0.0,
                    ..Default::default()
                },
                "lr",
            ),
            (
                TrainConfig {
                    epochs: 0,
                    ..Default::default()
                },
                "epochs",
            ),
            (
                TrainConfig {
                    optimizer: OptimizerConfig::sgd(1.0, 0.0),
                    ..Default::default()
                },
                "optimizer.momentum",
            ),
            (
                TrainConfig {
                    optimizer: OptimizerConfig::Sgd {
                        momentum: 0.9,
                        dampening: 0.1,
                        nesterov: true,
                        weight_decay: 0.0,
                        decay_norm_and_bias: false,
                    },
                    ..Default::default()
                },
                "optimizer.nesterov",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(TrainError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn config_rejects_unknown_keys() {
        assert!(serde_json::from_str::<TrainConfig>(r#"{"epochs": 2, "learning_rate": 0.1}"#).is_err());
        let c: TrainConfig = serde_json::from_str(
            r#"{"epochs": 2, "optimizer": {"name": "adamw"}, "schedule": {"schedule": {"name": "one-cycle"}, "warmup": null}}"#,
        )
        .unwrap();
        assert_eq!(c.epochs, 2);
        assert_eq!(c.optimizer, OptimizerConfig::adamw());
        assert_eq!(c.schedule.schedule.name(), "one-cycle");
        assert_eq!(c.batch_size, 128);
    }
}
