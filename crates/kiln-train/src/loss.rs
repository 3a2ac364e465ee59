//! Cross-entropy on logits with integer labels, with PyTorch's label smoothing and class weights.
//!
//! `F.cross_entropy(logits, y, weight=w, label_smoothing=α)` with the mean reduction:
//! `(1−α) · Σᵢ w_{yᵢ}·(−log pᵢ[yᵢ]) / Σᵢ w_{yᵢ}  +  α/C · Σᵢ Σ_c w_c·(−log pᵢ[c]) / Σᵢ w_{yᵢ}`
//! (without weights, every `w` is 1 and the denominators are the batch size).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Options of the training loss.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Label smoothing α in [0, 1): the target puts 1−α on the label and α/C on every class.
    pub label_smoothing: f64,
    /// One positive weight per class (for imbalanced data), or none.
    pub class_weights: Option<Vec<f32>>,
}

impl LossConfig {
    /// Checks the options against the number of classes.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] for α outside [0, 1), or weights of the wrong count or sign.
    pub fn validate(&self, num_classes: Option<usize>) -> Result<(), TrainError> {
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(TrainError::InvalidConfig {
                field: "loss.label_smoothing",
                value: self.label_smoothing.to_string(),
                reason: "must be in [0, 1)".into(),
            });
        }
        if let Some(w) = &self.class_weights {
            if let Some(c) = num_classes
                && w.len() != c
            {
                return Err(TrainError::InvalidConfig {
                    field: "loss.class_weights",
                    value: format!("{} weights", w.len()),
                    reason: format!("the model has {c} classes: give one weight per class"),
                });
            }
            if w.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(TrainError::InvalidConfig {
                    field: "loss.class_weights",
                    value: format!("{w:?}"),
                    reason: "every weight must be finite and > 0".into(),
                });
            }
        }
        Ok(())
    }

    /// The mean loss of a batch: `logits [N, C]`, `targets [N]` → a scalar tensor `[1]`.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        let [n, c] = logits.dims();
        let device = logits.device();
        let logp = log_softmax(logits, 1);
        let picked: Tensor<1> = logp
            .clone()
            .gather(1, targets.clone().unsqueeze_dim(1))
            .squeeze_dim(1);
        let alpha = self.label_smoothing;
        match &self.class_weights {
            None => {
                let nll = picked.neg().sum().div_scalar(n as f64);
                if alpha == 0.0 {
                    return nll;
                }
                let smooth = logp.neg().sum().div_scalar((n * c) as f64);
                nll.mul_scalar(1.0 - alpha) + smooth.mul_scalar(alpha)
            }
            Some(w) => {
                let w = Tensor::<1>::from_data(burn::tensor::TensorData::new(w.clone(), [c]), &device);
                let w_y = w.clone().gather(0, targets);
                let denom = w_y.clone().sum();
                let nll = (picked.neg() * w_y).sum() / denom.clone();
                if alpha == 0.0 {
                    return nll;
                }
                let smooth = (logp.neg() * w.unsqueeze_dim::<2>(0)).sum() / denom;
                nll.mul_scalar(1.0 - alpha) + smooth.mul_scalar(alpha / c as f64)
            }
        }
    }
}

impl LossConfig {
    /// Cross-entropy against probability targets `[N, C]` (Mixup/CutMix, with the label
    /// smoothing already folded in): `mean_i Σ_c −w_c·t_ic·log p_ic` — PyTorch's
    /// `F.cross_entropy(logits, probs, weight=w)` (probability targets are averaged over the
    /// batch, not over the weights), and timm's `SoftTargetCrossEntropy` without weights.
    ///
    /// # Shapes
    ///
    /// `logits`, `targets`: `[N, C]` → `[1]`.
    pub fn forward_soft(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        let [n, c] = logits.dims();
        let device = logits.device();
        let mut terms = targets * log_softmax(logits, 1);
        if let Some(w) = &self.class_weights {
            let w = Tensor::<1>::from_data(burn::tensor::TensorData::new(w.clone(), [c]), &device);
            terms = terms * w.unsqueeze_dim::<2>(0);
        }
        terms.sum().neg().div_scalar(n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn soft_targets_equal_pytorchs_probability_cross_entropy() {
        // x as below; t = [[.7,.3,0],[.1,.1,.8],[0,.5,.5],[.25,.25,.5]]; w = [1,2,.5]
        // F.cross_entropy(x, t) = SoftTargetCrossEntropy()(x, t) -> 1.5493178367614746
        // F.cross_entropy(x, t, weight=w)                         -> 1.3176382780075073
        let d = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(
                vec![2.0f32, -1.0, 0.5, 0.1, 0.2, 0.3, -1.0, 3.0, 0.0, 1.5, 1.5, -2.0],
                [4, 3],
            ),
            &d,
        );
        let t = Tensor::<2>::from_data(
            TensorData::new(
                vec![0.7f32, 0.3, 0.0, 0.1, 0.1, 0.8, 0.0, 0.5, 0.5, 0.25, 0.25, 0.5],
                [4, 3],
            ),
            &d,
        );
        for (weights, want) in [
            (None, 1.549_317_836_761_474_6),
            (Some(vec![1.0f32, 2.0, 0.5]), 1.317_638_278_007_507_3),
        ] {
            let cfg = LossConfig {
                label_smoothing: 0.0,
                class_weights: weights,
            };
            let got: f32 = cfg.forward_soft(x.clone(), t.clone()).into_scalar();
            assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn equals_pytorchs_cross_entropy_with_smoothing_and_weights() {
        // x = [[2,-1,.5],[.1,.2,.3],[-1,3,0],[1.5,1.5,-2]]; y = [0,2,1,1]; w = [1,2,.5]
        // F.cross_entropy(x, y)                                   -> 0.5043177604675293
        // F.cross_entropy(x, y, label_smoothing=0.1)              -> 0.6318177580833435
        // F.cross_entropy(x, y, weight=w)                         -> 0.41642120480537415
        // F.cross_entropy(x, y, weight=w, label_smoothing=0.2)    -> 0.5932636260986328
        let d = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(
                vec![2.0f32, -1.0, 0.5, 0.1, 0.2, 0.3, -1.0, 3.0, 0.0, 1.5, 1.5, -2.0],
                [4, 3],
            ),
            &d,
        );
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 2, 1, 1], [4]), &d);
        let w = Some(vec![1.0f32, 2.0, 0.5]);
        let cases = [
            (0.0, None, 0.504_317_760_467_529_3),
            (0.1, None, 0.631_817_758_083_343_5),
            (0.0, w.clone(), 0.416_421_204_805_374_15),
            (0.2, w, 0.593_263_626_098_632_8),
        ];
        for (alpha, weights, want) in cases {
            let cfg = LossConfig {
                label_smoothing: alpha,
                class_weights: weights.clone(),
            };
            cfg.validate(Some(3)).unwrap();
            let got: f32 = cfg.forward(x.clone(), y.clone()).into_scalar();
            assert!(
                (f64::from(got) - want).abs() < 1e-6,
                "α={alpha} w={weights:?}: {got} vs {want}"
            );
        }
        let bad = LossConfig {
            label_smoothing: 0.0,
            class_weights: Some(vec![1.0, 1.0]),
        };
        assert!(
            bad.validate(Some(3))
                .unwrap_err()
                .to_string()
                .contains("one weight per class")
        );
        let bad = LossConfig {
            label_smoothing: 1.0,
            class_weights: None,
        };
        assert!(
            bad.validate(None)
                .unwrap_err()
                .to_string()
                .contains("label_smoothing")
        );
    }
}
