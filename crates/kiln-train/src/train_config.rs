//! The settings of one training run (`[train]` of a run file): [`TrainConfig`], the metric that
//! picks the best epoch ([`Monitor`]) and early stopping.

use serde::{Deserialize, Serialize};

use crate::loss::LossConfig;
use crate::metrics::VerdictConfig;
use crate::task::Metric;
use crate::{EpochRecord, OptimizerConfig, Schedule, TrainError};

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
    /// Samples per forward/backward (a micro-batch when `accumulate` > 1). The last partial batch
    /// of an epoch is dropped.
    pub batch_size: usize,
    /// Micro-batches whose gradients are **averaged** into one optimizer step (effective batch
    /// `batch_size × accumulate`). Burn's own accumulator sums; kiln scales each loss by 1/k.
    pub accumulate: usize,
    /// Base (peak) learning rate.
    pub lr: f64,
    /// The optimizer and its settings.
    pub optimizer: OptimizerConfig,
    /// How the learning rate moves over the run (cosine annealing to 0 by default).
    pub schedule: Schedule,
    /// Label smoothing and class weights.
    pub loss: LossConfig,
    /// Clip the gradients' **global** L2 norm (over all parameters, as
    /// `torch.nn.utils.clip_grad_norm_`) to this value before each step. Burn clips per tensor.
    pub clip_grad_norm: Option<f64>,
    /// Stop when the monitored metric has not improved for `patience` epochs.
    pub early_stopping: Option<EarlyStopping>,
    /// Thresholds of the per-epoch overfitting verdict.
    pub verdict: VerdictConfig,
    /// Seed of parameter init, batch order and Burn's generator (re-seeded per epoch).
    pub seed: u64,
    /// Threads that build training batches ahead of the model (0: on the training thread).
    /// Each batch is the same whichever thread builds it, so the run's metrics do not depend on
    /// this, and a run may resume with another value.
    pub num_workers: usize,
    /// Keep a running average of the weights (timm's `ModelEmaV3`), validated next to the raw
    /// weights each epoch (`val_ema_*`); off by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ema: Option<crate::EmaConfig>,
    /// Mixup and/or CutMix of the training batches with soft targets (timm's `Mixup`); off by
    /// default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixup: Option<crate::mixup::MixupConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            accumulate: 1,
            lr: 0.05,
            optimizer: OptimizerConfig::default(),
            schedule: Schedule::default(),
            loss: LossConfig::default(),
            clip_grad_norm: None,
            early_stopping: None,
            verdict: VerdictConfig::default(),
            seed: 42,
            num_workers: 2,
            ema: None,
            mixup: None,
        }
    }
}

/// The metric that decides the best checkpoint and early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// The task's primary validation metric ([`crate::task::Task::primary`]): accuracy for
    /// classification (`val_acc`; also written `val_metric`, the name for any task).
    #[serde(alias = "val_metric")]
    ValAcc,
    /// Validation loss (lower is better).
    ValLoss,
    /// Training loss (lower is better; for runs without a validation split).
    TrainLoss,
}

impl Monitor {
    pub(crate) fn value(self, r: &EpochRecord, primary: &Metric) -> Option<f64> {
        match self {
            Monitor::ValAcc => r.val(primary),
            Monitor::ValLoss => r.val_loss,
            Monitor::TrainLoss => Some(r.train_loss),
        }
    }

    /// [`value`](Self::value) read off the averaged weights' validation (`val_ema_*`) when
    /// `ema` is set; the training loss has no averaged counterpart.
    pub(crate) fn value_of(self, r: &EpochRecord, primary: &Metric, ema: bool) -> Option<f64> {
        match (self, ema) {
            (Monitor::ValAcc, true) => r.metric(&format!("val_ema_{}", primary.key)),
            (Monitor::ValLoss, true) => r.metric("val_ema_loss"),
            _ => self.value(r, primary),
        }
    }

    pub(crate) fn better(self, new: f64, old: f64, min_delta: f64, primary: &Metric) -> bool {
        match self {
            Monitor::ValAcc if primary.higher_is_better => new > old + min_delta,
            Monitor::ValAcc => new < old - min_delta,
            Monitor::ValLoss | Monitor::TrainLoss => new < old - min_delta,
        }
    }
}

/// Early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// What to watch.
    pub monitor: Monitor,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    #[serde(default)]
    pub min_delta: f64,
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
        if self.accumulate == 0 {
            return bad(
                "accumulate",
                "0".into(),
                "must be at least 1 (1: no accumulation)",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "must be finite and > 0");
        }
        // The schedule at one step per epoch: a rate that overflows does so at any length.
        self.schedule.check_finite(self.lr, 1, self.epochs.min(100_000))?;
        if let Some(c) = self.clip_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad("clip_grad_norm", c.to_string(), "must be finite and > 0");
        }
        if let Some(e) = self.early_stopping
            && e.patience == 0
        {
            return bad("early_stopping.patience", "0".into(), "must be at least 1");
        }
        if let Some(ema) = &self.ema {
            ema.validate()?;
        }
        if let Some(m) = &self.mixup {
            m.validate()?;
            if m.mode == crate::mixup::MixMode::Pair && !self.batch_size.is_multiple_of(2) {
                return bad(
                    "mixup.mode",
                    format!("pair with batch_size {}", self.batch_size),
                    "pairs need an even batch size",
                );
            }
        }
        self.loss.validate(None)?;
        self.optimizer.validate()
    }

    /// The metric that picks the best epoch: the early-stopping monitor, else validation accuracy
    /// when there is a validation split, else training loss.
    pub(crate) fn monitor(&self, has_val: bool) -> Monitor {
        match self.early_stopping {
            Some(e) => e.monitor,
            None if has_val => Monitor::ValAcc,
            None => Monitor::TrainLoss,
        }
    }
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
