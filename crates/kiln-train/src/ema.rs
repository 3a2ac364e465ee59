//! A running average of the weights (EMA), with timm's `ModelEmaV3` semantics.
//!
//! After every `every`-th optimizer step `t`, each floating-point tensor of the average moves
//! toward the model's: `ema ← ema + (1 − d)·(model − ema)` (timm's `lerp_`), with
//!
//! - `d = 0` for `t ≤ update_after_step + 1` (the first update copies the model), then
//! - `d = decay`, or with `warmup`, `d = max(min(1 − (1 + s/γ)^(−power), decay), min_decay)` where
//!   `s = t − update_after_step − 1` (timm's `get_decay`).
//!
//! BatchNorm's running statistics are averaged too (timm's default), or copied from the model
//! (`buffers = "copy"`, timm's `exclude_buffers=True`). Validation runs on both the raw and the
//! averaged weights; checkpoints keep the average, so a resumed run continues it exactly.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_train::ema::{EmaConfig, ModelEma};
//!
//! let config = EmaConfig { decay: 0.99, warmup: true, ..EmaConfig::default() };
//! assert_eq!(config.decay_at(1), 0.0); // the first update copies
//! // timm: get_decay(10) = 1 - (1 + 9)**(-2/3) = 0.7845565
//! assert!((config.decay_at(10) - 0.784_556_5).abs() < 1e-6);
//! assert_eq!(config.decay_at(1_000_000), 0.99);
//! ```

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// What happens to buffers (BatchNorm's running statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EmaBuffers {
    /// Averaged like the parameters (timm's default).
    #[default]
    Average,
    /// Copied from the model at each update (timm's `exclude_buffers=True`).
    Copy,
}

/// Which weights pick the best epoch (and early stopping) when an average is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EmaBestOn {
    /// The averaged weights' validation figures (timm's `train.py` does this when EMA is on);
    /// `best.bpk` then holds the average.
    #[default]
    Ema,
    /// The raw weights'.
    Raw,
}

/// `[train.ema]`: keep a running average of the weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmaConfig {
    /// The decay (timm's `train.py` default 0.9998).
    pub decay: f64,
    /// Warm the decay up from 0 (timm's `use_warmup`).
    pub warmup: bool,
    /// γ of the warmup (timm's `warmup_gamma`).
    pub warmup_gamma: f64,
    /// The warmup's power (timm's `warmup_power`, 2/3: d ≈ 0.999 at 10k steps; 3/4 reaches
    /// 0.9999 at 215k).
    pub warmup_power: f64,
    /// The floor of the warmed-up decay.
    pub min_decay: f64,
    /// Optimizer steps before the average starts moving (it copies the model until then).
    pub update_after_step: usize,
    /// Update after every `every`-th optimizer step.
    pub every: usize,
    /// BatchNorm's running statistics: averaged or copied.
    pub buffers: EmaBuffers,
    /// Which weights choose the best epoch.
    pub best_on: EmaBestOn,
}

impl Default for EmaConfig {
    fn default() -> Self {
        Self {
            decay: 0.9998,
            warmup: false,
            warmup_gamma: 1.0,
            warmup_power: 2.0 / 3.0,
            min_decay: 0.0,
            update_after_step: 0,
            every: 1,
            buffers: EmaBuffers::Average,
            best_on: EmaBestOn::Ema,
        }
    }
}

impl EmaConfig {
    /// The decay of the update after optimizer step `step` (1-based; timm's `get_decay(step)`).
    pub fn decay_at(&self, step: usize) -> f64 {
        let s = step.saturating_sub(self.update_after_step + 1);
        if s == 0 {
            return 0.0;
        }
        if self.warmup {
            let d = 1.0 - (1.0 + s as f64 / self.warmup_gamma).powf(-self.warmup_power);
            d.min(self.decay).max(self.min_decay)
        } else {
            self.decay
        }
    }

    /// Checks every field.
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
        if !(0.0..1.0).contains(&self.decay) {
            return bad(
                "ema.decay",
                self.decay.to_string(),
                "must be in [0, 1) (timm uses 0.9998)",
            );
        }
        if !(0.0..=self.decay).contains(&self.min_decay) {
            return bad(
                "ema.min_decay",
                self.min_decay.to_string(),
                "must be in [0, decay]",
            );
        }
        if !(self.warmup_gamma.is_finite() && self.warmup_gamma > 0.0) {
            return bad(
                "ema.warmup_gamma",
                self.warmup_gamma.to_string(),
                "must be finite and > 0",
            );
        }
        if !(self.warmup_power.is_finite() && self.warmup_power > 0.0) {
            return bad(
                "ema.warmup_power",
                self.warmup_power.to_string(),
                "must be finite and > 0",
            );
        }
        if self.every == 0 {
            return bad("ema.every", "0".into(), "must be at least 1 (1: every step)");
        }
        Ok(())
    }
}

/// The averaged weights of a model of type `M`, on the plain (non-autodiff) device.
#[derive(Debug, Clone)]
pub struct ModelEma<M> {
    config: EmaConfig,
    model: M,
}

impl<M: Module> ModelEma<M> {
    /// An average starting at `model`'s weights (moved off autodiff, in evaluation mode).
    pub fn new(config: EmaConfig, model: &M) -> Self {
        Self {
            config,
            model: model.valid(),
        }
    }

    /// An average resumed from saved weights.
    pub fn from_weights(config: EmaConfig, weights: M) -> Self {
        Self {
            config,
            model: weights.valid(),
        }
    }

    /// The averaged model, in evaluation mode.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The settings.
    pub fn config(&self) -> &EmaConfig {
        &self.config
    }

    /// Whether optimizer step `step` (1-based) updates the average.
    pub fn due(&self, step: usize) -> bool {
        step.is_multiple_of(self.config.every)
    }

    /// Moves the average toward `model` after optimizer step `step` (1-based).
    pub fn update(&mut self, model: &M, step: usize) {
        let decay = self.config.decay_at(step);
        let mut collect = Collect::default();
        model.valid().visit(&mut collect);
        let mut lerp = Lerp {
            values: collect.values.into_iter(),
            path: Vec::new(),
            weight: 1.0 - decay,
            copy_buffers: self.config.buffers == EmaBuffers::Copy,
        };
        self.model = self.model.clone().map(&mut lerp);
    }
}

/// The model's float tensors in visiting order, flattened.
#[derive(Default)]
struct Collect {
    values: Vec<Tensor<1>>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.values.push(t.reshape([n]));
    }
}

/// `ema + w·(model − ema)` on each float tensor, in the same order; buffers copied when asked.
struct Lerp {
    values: std::vec::IntoIter<Tensor<1>>,
    path: Vec<String>,
    weight: f64,
    copy_buffers: bool,
}

impl ModuleMapper for Lerp {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(flat) = self.values.next() else {
            return param;
        };
        // Running statistics are the module's only buffers (BatchNorm's `running_*`).
        let buffer = self.path.last().is_some_and(|leaf| leaf.starts_with("running_"));
        let (copy, weight) = (self.copy_buffers && buffer, self.weight);
        param.map(|ema| {
            let model = flat.reshape(ema.shape());
            if copy {
                model
            } else if weight < 0.5 {
                // torch.lerp's two branches, for the same rounding (weight 1 copies exactly).
                ema.clone() + (model - ema).mul_scalar(weight)
            } else {
                model.clone() - (model - ema).mul_scalar(1.0 - weight)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_follows_timms_get_decay() {
        // timm ModelEmaV3(decay=0.999, use_warmup=True, update_after_step=2).get_decay(step):
        // steps 1-3 -> 0.0; step 4 -> 1 - 2**(-2/3) = 0.370039...; step 100 -> 1 - 98**(-2/3) = 0.953...
        let c = EmaConfig {
            decay: 0.999,
            warmup: true,
            update_after_step: 2,
            ..EmaConfig::default()
        };
        assert_eq!((c.decay_at(1), c.decay_at(3)), (0.0, 0.0));
        assert!((c.decay_at(4) - (1.0 - 2f64.powf(-2.0 / 3.0))).abs() < 1e-12);
        assert!((c.decay_at(100) - (1.0 - 98f64.powf(-2.0 / 3.0))).abs() < 1e-12);
        let plain = EmaConfig::default();
        assert_eq!((plain.decay_at(1), plain.decay_at(2)), (0.0, 0.9998));
        assert!(EmaConfig { decay: 1.0, ..plain }.validate().is_err());
        assert!(EmaConfig { every: 0, ..plain }.validate().is_err());
    }
}
