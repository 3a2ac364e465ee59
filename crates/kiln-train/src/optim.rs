//! Optimizers with PyTorch's update rules and defaults (not Burn's), and parameter groups.
//!
//! | kiln | PyTorch | differs from Burn's own |
//! |---|---|---|
//! | [`OptimizerConfig::Sgd`] | `torch.optim.SGD(momentum, dampening=0, nesterov, weight_decay)` | Burn's momentum dampening defaults to 0.1; PyTorch's first step stores the raw gradient |
//! | [`OptimizerConfig::Adam`] | `torch.optim.Adam(betas=(0.9, 0.999), eps=1e-8, weight_decay)` (L2 added to the gradient) | Burn's eps is 1e-5 |
//! | [`OptimizerConfig::AdamW`] | `torch.optim.AdamW(betas, eps=1e-8, weight_decay=0.01)` (decoupled: `p ← p·(1 − lr·wd)`) | Burn's eps is 1e-5 and its weight decay 1e-4 |
//! | [`OptimizerConfig::RmsProp`] | `torch.optim.RMSprop(alpha=0.99, eps=1e-8, momentum, centered, weight_decay)` | Burn's RMSprop defaults to momentum 0.9 and eps 1e-5 (PyTorch: 0 and 1e-8) |
//! | [`OptimizerConfig::RmsPropTf`] | timm's `RMSpropTF(alpha=0.9, eps=1e-10, momentum, centered, decoupled_decay, lr_in_momentum=True)`: TensorFlow's RMSprop (square average starts at 1, eps inside the square root, the learning rate inside the momentum), timm's EfficientNet recipe | Burn has none |
//! | [`OptimizerConfig::Lamb`] | timm's `Lamb(betas, eps=1e-6, weight_decay=0.01, max_grad_norm=None)`: Adam's step scaled per tensor by `‖w‖ / ‖update‖` | Burn has none |
//! | [`OptimizerConfig::Lars`] | timm's `Lars(momentum, dampening, nesterov, weight_decay, trust_coeff=0.001, eps=1e-8)`: SGD with the gradient scaled per tensor by `η‖w‖ / (‖g‖ + wd‖w‖ + ε)` | Burn has none |
//!
//! LAMB and LARS adapt only the tensors that decay (timm skips the trust ratio where a group's
//! weight decay is 0), so with the default grouping biases and BatchNorm γ/β take plain Adam / SGD
//! steps; `always_adapt` adapts them too. timm's `Lamb` clips the global gradient norm at 1.0 by
//! default (`max_grad_norm`): in kiln that is `train.clip_grad_norm = 1.0` (timm divides by
//! `max(‖g‖, 1)`, PyTorch's clipping multiplies by `min(1, 1/(‖g‖ + 1e-6))`).
//!
//! **Parameter groups.** By default one-dimensional parameters — biases and BatchNorm γ/β — get
//! no weight decay (`decay_norm_and_bias = false`), the usual practice (timm, the "bag of
//! tricks" paper): decaying γ shrinks activations for nothing. [`OptimizerConfig::build`] takes
//! extra [`LrGroup`]s (for example a fine-tuned backbone at 0.1× the head's learning rate, from
//! `kiln_models::FineTune::backbone_group`).
//!
//! Fixtures: `tests/fixtures/optim/` holds ten steps of each optimizer on a fixed tiny model made
//! by `scripts/make_optim_fixture.py` with PyTorch; `tests/optim_vs_pytorch.rs` checks kiln's
//! parameters against them within 1e-5.

use burn::module::ParamGroup;
use burn::optim::{LearningRate, ModuleOptimizer, Optimizer, RecordState, StateSink, StateSource};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Which optimizer, with PyTorch's defaults. Serialised with a `name` tag:
/// `{"name": "adamw", "weight_decay": 0.05}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// `torch.optim.SGD`.
    Sgd {
        /// Momentum factor (0 turns momentum off).
        #[serde(default)]
        momentum: f64,
        /// Dampening of the momentum's gradient term (PyTorch's default 0).
        #[serde(default)]
        dampening: f64,
        /// Nesterov momentum (needs momentum > 0 and dampening 0).
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
        /// Also decay biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
    /// `torch.optim.Adam` (weight decay added to the gradient, "L2").
    Adam {
        /// `(β1, β2)`.
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        /// Added to the denominator.
        #[serde(default = "default_eps")]
        eps: f64,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
        /// Also decay biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
    /// `torch.optim.AdamW` (decoupled weight decay).
    #[serde(rename = "adamw")]
    AdamW {
        /// `(β1, β2)`.
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        /// Added to the denominator.
        #[serde(default = "default_eps")]
        eps: f64,
        /// Decoupled weight decay (PyTorch's default 0.01).
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
        /// Also decay biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
    /// `torch.optim.RMSprop`.
    #[serde(rename = "rmsprop")]
    RmsProp {
        /// Smoothing constant of the squared-gradient average (PyTorch's 0.99).
        #[serde(default = "default_rms_alpha")]
        alpha: f64,
        /// Added to the denominator (PyTorch's 1e-8).
        #[serde(default = "default_eps")]
        eps: f64,
        /// Momentum factor (0 turns momentum off).
        #[serde(default)]
        momentum: f64,
        /// Normalise by the gradient's estimated variance instead of its second moment.
        #[serde(default)]
        centered: bool,
        /// L2 penalty added to the gradient.
        #[serde(default)]
        weight_decay: f64,
        /// Also decay biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
    /// timm's `RMSpropTF`: TensorFlow's RMSprop (EfficientNet and MobileNet recipes).
    #[serde(rename = "rmsprop-tf")]
    RmsPropTf {
        /// Smoothing constant (timm's 0.9).
        #[serde(default = "default_rms_tf_alpha")]
        alpha: f64,
        /// Added inside the square root (timm's 1e-10; EfficientNet trains with 1e-3).
        #[serde(default = "default_rms_tf_eps")]
        eps: f64,
        /// Momentum factor (0 turns momentum off).
        #[serde(default)]
        momentum: f64,
        /// Normalise by the gradient's estimated variance.
        #[serde(default)]
        centered: bool,
        /// Weight decay: added to the gradient, or decoupled (`decoupled_decay`).
        #[serde(default)]
        weight_decay: f64,
        /// `p ← p·(1 − lr·wd)` instead of adding `wd·p` to the gradient.
        #[serde(default)]
        decoupled_decay: bool,
        /// The learning rate scales the momentum buffer's input (TensorFlow, timm's default) rather
        /// than the step.
        #[serde(default = "yes")]
        lr_in_momentum: bool,
        /// Also decay biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
    /// timm's `Lamb` (layer-wise adaptive Adam, for large batches).
    Lamb {
        /// `(β1, β2)`.
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        /// Added to the denominator (timm's 1e-6).
        #[serde(default = "default_lamb_eps")]
        eps: f64,
        /// Weight decay added to the update (timm's 0.01), or decoupled (`decoupled_decay`).
        #[serde(default = "default_adamw_decay")]
        weight_decay: f64,
        /// `p ← p·(1 − lr·wd)` instead of adding `wd·p` to the update.
        #[serde(default)]
        decoupled_decay: bool,
        /// Adam's bias correction.
        #[serde(default = "yes")]
        bias_correction: bool,
        /// `m ← β1·m + (1−β1)·g` (false: `+ g`).
        #[serde(default = "yes")]
        grad_averaging: bool,
        /// Clip the trust ratio at 1 (LAMBC).
        #[serde(default)]
        trust_clip: bool,
        /// Adapt tensors without weight decay too.
        #[serde(default)]
        always_adapt: bool,
        /// Also decay (and adapt) biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
    /// timm's `Lars` (layer-wise adaptive SGD, for large batches).
    Lars {
        /// Momentum factor (0 turns momentum off).
        #[serde(default)]
        momentum: f64,
        /// Dampening of the momentum's gradient term.
        #[serde(default)]
        dampening: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty added to the gradient before the trust ratio scales it.
        #[serde(default)]
        weight_decay: f64,
        /// η in the trust ratio (timm's 0.001).
        #[serde(default = "default_trust_coeff")]
        trust_coeff: f64,
        /// Added to the trust ratio's denominator (timm's 1e-8).
        #[serde(default = "default_eps")]
        eps: f64,
        /// Clip `trust ratio / lr` at 1 (LARC).
        #[serde(default)]
        trust_clip: bool,
        /// Adapt tensors without weight decay too.
        #[serde(default)]
        always_adapt: bool,
        /// Also decay (and adapt) biases and BatchNorm γ/β (1-D parameters).
        #[serde(default)]
        decay_norm_and_bias: bool,
    },
}

fn default_rms_alpha() -> f64 {
    0.99
}
fn default_rms_tf_alpha() -> f64 {
    0.9
}
fn default_rms_tf_eps() -> f64 {
    1e-10
}
fn default_lamb_eps() -> f64 {
    1e-6
}
fn default_trust_coeff() -> f64 {
    1e-3
}
fn yes() -> bool {
    true
}

fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_decay() -> f64 {
    0.01
}

impl OptimizerConfig {
    /// SGD with PyTorch's defaults and the given momentum and weight decay.
    pub fn sgd(momentum: f64, weight_decay: f64) -> Self {
        OptimizerConfig::Sgd {
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay,
            decay_norm_and_bias: false,
        }
    }

    /// Adam with PyTorch's defaults (β = (0.9, 0.999), eps 1e-8, no weight decay).
    pub fn adam() -> Self {
        OptimizerConfig::Adam {
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: 0.0,
            decay_norm_and_bias: false,
        }
    }

    /// AdamW with PyTorch's defaults (β = (0.9, 0.999), eps 1e-8, weight decay 0.01).
    pub fn adamw() -> Self {
        OptimizerConfig::AdamW {
            betas: default_betas(),
            eps: default_eps(),
            weight_decay: default_adamw_decay(),
            decay_norm_and_bias: false,
        }
    }

    /// The optimizer's name as in configs (`sgd`, `adam`, `adamw`, `rmsprop`, `rmsprop-tf`,
    /// `lamb`, `lars`).
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::Adam { .. } => "adam",
            OptimizerConfig::AdamW { .. } => "adamw",
            OptimizerConfig::RmsProp { .. } => "rmsprop",
            OptimizerConfig::RmsPropTf { .. } => "rmsprop-tf",
            OptimizerConfig::Lamb { .. } => "lamb",
            OptimizerConfig::Lars { .. } => "lars",
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
        let decay = match *self {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            }
            | OptimizerConfig::Lars {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                ..
            } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad("optimizer.momentum", momentum.to_string(), "must be in [0, 1)");
                }
                if !(0.0..=1.0).contains(&dampening) {
                    return bad("optimizer.dampening", dampening.to_string(), "must be in [0, 1]");
                }
                if nesterov && (momentum == 0.0 || dampening != 0.0) {
                    return bad(
                        "optimizer.nesterov",
                        "true".into(),
                        "needs momentum > 0 and dampening 0 (as in PyTorch)",
                    );
                }
                weight_decay
            }
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                ..
            }
            | OptimizerConfig::AdamW {
                betas,
                eps,
                weight_decay,
                ..
            }
            | OptimizerConfig::Lamb {
                betas,
                eps,
                weight_decay,
                ..
            } => {
                for b in betas {
                    if !(0.0..1.0).contains(&b) {
                        return bad("optimizer.betas", format!("{betas:?}"), "each must be in [0, 1)");
                    }
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad("optimizer.eps", eps.to_string(), "must be finite and > 0");
                }
                weight_decay
            }
            OptimizerConfig::RmsProp {
                alpha,
                eps,
                momentum,
                weight_decay,
                ..
            }
            | OptimizerConfig::RmsPropTf {
                alpha,
                eps,
                momentum,
                weight_decay,
                ..
            } => {
                if !(0.0..1.0).contains(&alpha) {
                    return bad("optimizer.alpha", alpha.to_string(), "must be in [0, 1)");
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return bad("optimizer.eps", eps.to_string(), "must be finite and > 0");
                }
                if !(0.0..1.0).contains(&momentum) {
                    return bad("optimizer.momentum", momentum.to_string(), "must be in [0, 1)");
                }
                weight_decay
            }
        };
        if let OptimizerConfig::Lars { trust_coeff, eps, .. } = *self {
            if !(trust_coeff.is_finite() && trust_coeff > 0.0) {
                return bad(
                    "optimizer.trust_coeff",
                    trust_coeff.to_string(),
                    "must be finite and > 0",
                );
            }
            if !(eps.is_finite() && eps >= 0.0) {
                return bad("optimizer.eps", eps.to_string(), "must be finite and >= 0");
            }
        }
        if !(decay.is_finite() && decay >= 0.0) {
            return bad(
                "optimizer.weight_decay",
                decay.to_string(),
                "must be finite and >= 0",
            );
        }
        Ok(())
    }

    /// The per-tensor rule with `lr_scale` applied to the learning rate.
    pub fn rule(&self, lr_scale: f64) -> TorchRule {
        TorchRule {
            config: *self,
            lr_scale,
        }
    }

    /// A whole-module optimizer: this rule on every parameter, and each of `groups` (later ones
    /// win where they overlap) with its learning-rate scale.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] for an invalid config or a non-positive scale.
    pub fn build(&self, groups: Vec<LrGroup>) -> Result<ModuleOptimizer, TrainError> {
        self.validate()?;
        let mut optim = ModuleOptimizer::from(self.rule(1.0));
        for g in groups {
            if !(g.lr_scale.is_finite() && g.lr_scale > 0.0) {
                return Err(TrainError::InvalidConfig {
                    field: "optimizer.groups.lr_scale",
                    value: g.lr_scale.to_string(),
                    reason: format!(
                        "group `{}`: must be finite and > 0 (freeze the group instead of a 0 rate)",
                        g.name
                    ),
                });
            }
            optim = optim.with_group(g.group, self.rule(g.lr_scale), None);
        }
        Ok(optim)
    }
}

impl Default for OptimizerConfig {
    /// SGD, momentum 0.9, weight decay 5e-4 (the reference recipe).
    fn default() -> Self {
        OptimizerConfig::sgd(0.9, 5e-4)
    }
}

impl std::fmt::Display for OptimizerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (decay, all) = match *self {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                decay_norm_and_bias,
            } => {
                write!(
                    f,
                    "SGD(momentum={momentum}, dampening={dampening}, nesterov={nesterov}"
                )?;
                (weight_decay, decay_norm_and_bias)
            }
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                decay_norm_and_bias,
            } => {
                write!(f, "Adam(betas=({}, {}), eps={eps:e}", betas[0], betas[1])?;
                (weight_decay, decay_norm_and_bias)
            }
            OptimizerConfig::AdamW {
                betas,
                eps,
                weight_decay,
                decay_norm_and_bias,
            } => {
                write!(f, "AdamW(betas=({}, {}), eps={eps:e}", betas[0], betas[1])?;
                (weight_decay, decay_norm_and_bias)
            }
            OptimizerConfig::RmsProp {
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
                decay_norm_and_bias,
            } => {
                write!(
                    f,
                    "RMSprop(alpha={alpha}, eps={eps:e}, momentum={momentum}, centered={centered}"
                )?;
                (weight_decay, decay_norm_and_bias)
            }
            OptimizerConfig::RmsPropTf {
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
                decoupled_decay,
                lr_in_momentum,
                decay_norm_and_bias,
            } => {
                write!(
                    f,
                    "RMSpropTF(alpha={alpha}, eps={eps:e}, momentum={momentum}, centered={centered}, lr_in_momentum={lr_in_momentum}, decoupled_decay={decoupled_decay}"
                )?;
                (weight_decay, decay_norm_and_bias)
            }
            OptimizerConfig::Lamb {
                betas,
                eps,
                weight_decay,
                decoupled_decay,
                trust_clip,
                always_adapt,
                decay_norm_and_bias,
                ..
            } => {
                write!(
                    f,
                    "LAMB(betas=({}, {}), eps={eps:e}, trust_clip={trust_clip}, always_adapt={always_adapt}, decoupled_decay={decoupled_decay}",
                    betas[0], betas[1]
                )?;
                (weight_decay, decay_norm_and_bias)
            }
            OptimizerConfig::Lars {
                momentum,
                nesterov,
                weight_decay,
                trust_coeff,
                trust_clip,
                always_adapt,
                decay_norm_and_bias,
                ..
            } => {
                write!(
                    f,
                    "LARS(momentum={momentum}, nesterov={nesterov}, trust_coeff={trust_coeff}, trust_clip={trust_clip}, always_adapt={always_adapt}"
                )?;
                (weight_decay, decay_norm_and_bias)
            }
        };
        let scope = if decay == 0.0 || all {
            ""
        } else {
            " except biases and norm γ/β"
        };
        write!(f, ", weight_decay={decay}{scope})")
    }
}

impl std::str::FromStr for OptimizerConfig {
    type Err = String;

    /// `sgd` (momentum 0.9, weight decay 5e-4), `adam`, `adamw`, `rmsprop` (PyTorch's defaults),
    /// `rmsprop-tf`, `lamb` or `lars` (timm's defaults), for the command line; other settings go
    /// in the config.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerConfig::default()),
            "adam" => Ok(OptimizerConfig::adam()),
            "adamw" => Ok(OptimizerConfig::adamw()),
            "rmsprop" | "rmsprop-tf" | "lamb" | "lars" => Ok(serde_json::from_value(
                serde_json::json!({ "name": s.trim().to_ascii_lowercase() }),
            )
            .map_err(|e| e.to_string())?),
            other => Err(format!(
                "unknown optimizer `{other}`: expected sgd, adam, adamw, rmsprop, rmsprop-tf, lamb or lars"
            )),
        }
    }
}

/// A parameter group with its own learning-rate scale (e.g. the backbone at 0.1×).
#[derive(Clone)]
pub struct LrGroup {
    /// A name for messages.
    pub name: String,
    /// Which parameters.
    pub group: ParamGroup,
    /// Multiplies the scheduled learning rate.
    pub lr_scale: f64,
}

/// One PyTorch update rule applied per tensor (Burn's [`Optimizer`] trait), with the learning
/// rate multiplied by `lr_scale`.
#[derive(Debug, Clone, Copy)]
pub struct TorchRule {
    config: OptimizerConfig,
    lr_scale: f64,
}

/// Per-parameter state: the momentum buffer (SGD, LARS), the moments (Adam, AdamW, LAMB) or the
/// averages (RMSprop), and the step count.
#[derive(Clone)]
pub struct TorchState<const D: usize> {
    /// SGD's, LARS's and RMSprop's `momentum_buffer`, or Adam's and LAMB's `exp_avg`.
    pub first: Option<Tensor<D>>,
    /// Adam's and LAMB's `exp_avg_sq`, or RMSprop's `square_avg`.
    pub second: Option<Tensor<D>>,
    /// Centered RMSprop's `grad_avg`.
    pub third: Option<Tensor<D>>,
    /// Steps taken (Adam's bias correction).
    pub step: usize,
}

impl<const D: usize> RecordState for TorchState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        if let Some(t) = &self.first {
            out.push_tensor(prefix, "first", t.to_data());
        }
        if let Some(t) = &self.second {
            out.push_tensor(prefix, "second", t.to_data());
        }
        if let Some(t) = &self.third {
            out.push_tensor(prefix, "third", t.to_data());
        }
        out.push_scalar(prefix, "step", burn_pack::Scalar::from(self.step as u64));
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let step = u64::try_from(src.take_scalar(prefix, "step")?).ok()? as usize;
        let tensor = |d: burn::tensor::TensorData| Tensor::<D>::from_data(d, device);
        Some(TorchState {
            first: src.take_tensor(prefix, "first").map(tensor),
            second: src.take_tensor(prefix, "second").map(tensor),
            third: src.take_tensor(prefix, "third").map(tensor),
            step,
        })
    }
}

impl Optimizer for TorchRule {
    type State<const D: usize> = TorchState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let lr = lr * self.lr_scale;
        let (first, second, third, step) = match state {
            Some(s) => (s.first, s.second, s.third, s.step + 1),
            None => (None, None, None, 1),
        };
        // 1-D parameters are biases and normalisation γ/β.
        let decays = |flag: bool| flag || D > 1;
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                decay_norm_and_bias,
            } => {
                let mut g = grad;
                if weight_decay != 0.0 && decays(decay_norm_and_bias) {
                    g = g + param.clone().mul_scalar(weight_decay);
                }
                let mut buf = None;
                if momentum != 0.0 {
                    // PyTorch: the first step stores the gradient itself (no dampening).
                    let b = match first {
                        Some(b) => b.mul_scalar(momentum) + g.clone().mul_scalar(1.0 - dampening),
                        None => g.clone(),
                    };
                    g = if nesterov {
                        g + b.clone().mul_scalar(momentum)
                    } else {
                        b.clone()
                    };
                    buf = Some(b);
                }
                let param = param - g.mul_scalar(lr);
                (
                    param,
                    Some(TorchState {
                        first: buf,
                        second: None,
                        third: None,
                        step,
                    }),
                )
            }
            OptimizerConfig::Adam {
                betas,
                eps,
                weight_decay,
                decay_norm_and_bias,
            } => {
                let g = if weight_decay != 0.0 && decays(decay_norm_and_bias) {
                    grad + param.clone().mul_scalar(weight_decay)
                } else {
                    grad
                };
                adam_update(param, g, first, second, step, lr, betas, eps)
            }
            OptimizerConfig::AdamW {
                betas,
                eps,
                weight_decay,
                decay_norm_and_bias,
            } => {
                let param = if weight_decay != 0.0 && decays(decay_norm_and_bias) {
                    param.mul_scalar(1.0 - lr * weight_decay)
                } else {
                    param
                };
                adam_update(param, grad, first, second, step, lr, betas, eps)
            }
            OptimizerConfig::RmsProp {
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
                decay_norm_and_bias,
            } => {
                let g = if weight_decay != 0.0 && decays(decay_norm_and_bias) {
                    grad + param.clone().mul_scalar(weight_decay)
                } else {
                    grad
                };
                // square_avg starts at 0: α·0 + (1−α)·g².
                let g2 = g.clone() * g.clone();
                let sq = match second {
                    Some(s) => s.mul_scalar(alpha) + g2.mul_scalar(1.0 - alpha),
                    None => g2.mul_scalar(1.0 - alpha),
                };
                let (avg, grad_avg) = if centered {
                    let ga = match third {
                        Some(a) => a.clone() + (g.clone() - a).mul_scalar(1.0 - alpha),
                        None => g.clone().mul_scalar(1.0 - alpha),
                    };
                    ((sq.clone() - ga.clone() * ga.clone()).sqrt(), Some(ga))
                } else {
                    (sq.clone().sqrt(), None)
                };
                let avg = avg.add_scalar(eps);
                let (param, buf) = if momentum > 0.0 {
                    let b = match first {
                        Some(b) => b.mul_scalar(momentum) + g / avg,
                        None => g / avg,
                    };
                    (param - b.clone().mul_scalar(lr), Some(b))
                } else {
                    (param - (g / avg).mul_scalar(lr), None)
                };
                (
                    param,
                    Some(TorchState {
                        first: buf,
                        second: Some(sq),
                        third: grad_avg,
                        step,
                    }),
                )
            }
            OptimizerConfig::RmsPropTf {
                alpha,
                eps,
                momentum,
                centered,
                weight_decay,
                decoupled_decay,
                lr_in_momentum,
                decay_norm_and_bias,
            } => {
                let (mut param, mut g) = (param, grad);
                if weight_decay != 0.0 && decays(decay_norm_and_bias) {
                    if decoupled_decay {
                        param = param.mul_scalar(1.0 - lr * weight_decay);
                    } else {
                        g = g + param.clone().mul_scalar(weight_decay);
                    }
                }
                // square_avg starts at 1 (TensorFlow): s + (1−α)·(g² − s).
                let g2 = g.clone() * g.clone();
                let s_prev = second.unwrap_or_else(|| g2.ones_like());
                let sq = s_prev.clone() + (g2 - s_prev).mul_scalar(1.0 - alpha);
                let (avg, grad_avg) = if centered {
                    let a = third.unwrap_or_else(|| g.zeros_like());
                    let ga = a.clone() + (g.clone() - a).mul_scalar(1.0 - alpha);
                    (
                        (sq.clone() - ga.clone() * ga.clone()).add_scalar(eps).sqrt(),
                        Some(ga),
                    )
                } else {
                    (sq.clone().add_scalar(eps).sqrt(), None)
                };
                let (param, buf) = if momentum > 0.0 {
                    let b0 = first.unwrap_or_else(|| g.zeros_like()).mul_scalar(momentum);
                    if lr_in_momentum {
                        let b = b0 + (g / avg).mul_scalar(lr);
                        (param - b.clone(), Some(b))
                    } else {
                        let b = b0 + g / avg;
                        (param - b.clone().mul_scalar(lr), Some(b))
                    }
                } else {
                    (param - (g / avg).mul_scalar(lr), None)
                };
                (
                    param,
                    Some(TorchState {
                        first: buf,
                        second: Some(sq),
                        third: grad_avg,
                        step,
                    }),
                )
            }
            OptimizerConfig::Lamb {
                betas: [b1, b2],
                eps,
                weight_decay,
                decoupled_decay,
                bias_correction,
                grad_averaging,
                trust_clip,
                always_adapt,
                decay_norm_and_bias,
            } => {
                let wd = if decays(decay_norm_and_bias) {
                    weight_decay
                } else {
                    0.0
                };
                let b3 = if grad_averaging { 1.0 - b1 } else { 1.0 };
                let m = match first {
                    Some(m) => m.mul_scalar(b1) + grad.clone().mul_scalar(b3),
                    None => grad.clone().mul_scalar(b3),
                };
                let g2 = grad.clone() * grad;
                let v = match second {
                    Some(v) => v.mul_scalar(b2) + g2.mul_scalar(1.0 - b2),
                    None => g2.mul_scalar(1.0 - b2),
                };
                let (bc1, bc2) = if bias_correction {
                    (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32))
                } else {
                    (1.0, 1.0)
                };
                let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(eps);
                let mut update = m.clone().div_scalar(bc1) / denom;
                let mut param = param;
                if wd != 0.0 {
                    if decoupled_decay {
                        param = param.clone() - param.mul_scalar(lr * wd);
                    } else {
                        update = update + param.clone().mul_scalar(wd);
                    }
                }
                if wd != 0.0 || always_adapt {
                    let (w, u) = (norm(&param), norm(&update));
                    let mut ratio = safe_ratio(w.clone(), u.clone(), w / u);
                    if trust_clip {
                        ratio = ratio.clamp_max(1.0);
                    }
                    update = update * ratio;
                }
                let param = param - update.mul_scalar(lr);
                (
                    param,
                    Some(TorchState {
                        first: Some(m),
                        second: Some(v),
                        third: None,
                        step,
                    }),
                )
            }
            OptimizerConfig::Lars {
                momentum,
                dampening,
                nesterov,
                weight_decay,
                trust_coeff,
                eps,
                trust_clip,
                always_adapt,
                decay_norm_and_bias,
            } => {
                let wd = if decays(decay_norm_and_bias) {
                    weight_decay
                } else {
                    0.0
                };
                let mut g = grad;
                if wd != 0.0 || always_adapt {
                    let (w, gn) = (norm(&param), norm(&g));
                    let raw = (w.clone() * trust_coeff) / (gn.clone() + w.clone() * wd + eps);
                    let mut ratio = safe_ratio(w, gn, raw);
                    if trust_clip {
                        ratio = ratio.div_scalar(lr).clamp_max(1.0);
                    }
                    g = (g + param.clone().mul_scalar(wd)) * ratio;
                }
                let mut buf = None;
                if momentum != 0.0 {
                    let b = match first {
                        Some(b) => b.mul_scalar(momentum) + g.clone().mul_scalar(1.0 - dampening),
                        None => g.clone(),
                    };
                    g = if nesterov {
                        g + b.clone().mul_scalar(momentum)
                    } else {
                        b.clone()
                    };
                    buf = Some(b);
                }
                (
                    param - g.mul_scalar(lr),
                    Some(TorchState {
                        first: buf,
                        second: None,
                        third: None,
                        step,
                    }),
                )
            }
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        TorchState {
            first: state.first.map(|t| t.to_device(device)),
            second: state.second.map(|t| t.to_device(device)),
            third: state.third.map(|t| t.to_device(device)),
            step: state.step,
        }
    }
}

/// `‖t‖₂` as a one-element tensor shaped to broadcast against `t`.
fn norm<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    t.clone().square().sum().sqrt().reshape([1; D])
}

/// `ratio` where both norms are positive, 1 elsewhere (timm's nested `torch.where`).
fn safe_ratio<const D: usize>(w: Tensor<D>, g: Tensor<D>, ratio: Tensor<D>) -> Tensor<D> {
    let both = w.greater_elem(0.0).bool_and(g.greater_elem(0.0));
    ratio.ones_like().mask_where(both, ratio)
}

/// PyTorch's Adam step (`_single_tensor_adam`, no amsgrad):
/// `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
/// `p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps)`.
#[allow(clippy::too_many_arguments)]
fn adam_update<const D: usize>(
    param: Tensor<D>,
    g: Tensor<D>,
    m: Option<Tensor<D>>,
    v: Option<Tensor<D>>,
    step: usize,
    lr: f64,
    [b1, b2]: [f64; 2],
    eps: f64,
) -> (Tensor<D>, Option<TorchState<D>>) {
    let m = match m {
        Some(m) => m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
        None => g.clone().mul_scalar(1.0 - b1),
    };
    let g2 = g.clone() * g;
    let v = match v {
        Some(v) => v.mul_scalar(b2) + g2.mul_scalar(1.0 - b2),
        None => g2.mul_scalar(1.0 - b2),
    };
    let t = step as i32;
    let bc1 = 1.0 - b1.powi(t);
    let bc2 = 1.0 - b2.powi(t);
    let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(eps);
    let param = param - (m.clone() / denom).mul_scalar(lr / bc1);
    (
        param,
        Some(TorchState {
            first: Some(m),
            second: Some(v),
            third: None,
            step,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_with_pytorch_defaults_and_bad_values_are_named() {
        let adamw: OptimizerConfig = serde_json::from_str(r#"{"name": "adamw"}"#).unwrap();
        assert_eq!(adamw, OptimizerConfig::adamw());
        assert!(
            matches!(adamw, OptimizerConfig::AdamW { eps, weight_decay, .. } if eps == 1e-8 && weight_decay == 0.01)
        );
        let sgd: OptimizerConfig =
            serde_json::from_str(r#"{"name": "sgd", "momentum": 0.9, "nesterov": true}"#).unwrap();
        assert!(matches!(sgd, OptimizerConfig::Sgd { dampening, .. } if dampening == 0.0));
        sgd.validate().unwrap();
        let err = serde_json::from_str::<OptimizerConfig>(r#"{"name": "adam", "lr": 0.1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lr"), "{err}");
        let bad = OptimizerConfig::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 0.0,
            decay_norm_and_bias: false,
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("optimizer.nesterov")
        );
        let bad = OptimizerConfig::Adam {
            betas: [0.9, 1.0],
            eps: 1e-8,
            weight_decay: 0.0,
            decay_norm_and_bias: false,
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("optimizer.betas")
        );
        assert_eq!(
            OptimizerConfig::default().to_string(),
            "SGD(momentum=0.9, dampening=0, nesterov=false, weight_decay=0.0005 except biases and norm γ/β)"
        );
        assert_eq!(
            "AdamW".parse::<OptimizerConfig>().unwrap(),
            OptimizerConfig::adamw()
        );
        assert!(
            "lion"
                .parse::<OptimizerConfig>()
                .unwrap_err()
                .contains("sgd, adam, adamw, rmsprop, rmsprop-tf, lamb or lars")
        );
        // timm's defaults from the bare name.
        assert_eq!(
            "LAMB".parse::<OptimizerConfig>().unwrap().to_string(),
            "LAMB(betas=(0.9, 0.999), eps=1e-6, trust_clip=false, always_adapt=false, decoupled_decay=false, weight_decay=0.01 except biases and norm γ/β)"
        );
        let bad: OptimizerConfig = serde_json::from_str(r#"{"name": "lars", "trust_coeff": 0}"#).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("optimizer.trust_coeff")
        );
        let bad: OptimizerConfig = serde_json::from_str(r#"{"name": "rmsprop-tf", "alpha": 1.0}"#).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("optimizer.alpha")
        );
        assert!(
            OptimizerConfig::adam()
                .build(vec![LrGroup {
                    name: "backbone".into(),
                    group: ParamGroup::all(),
                    lr_scale: 0.0
                }])
                .is_err()
        );
    }
}
