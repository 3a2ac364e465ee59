//! Fine-tuning helpers: a new classifier head, a frozen backbone, and the backbone/head parameter
//! groups an optimizer uses to give the backbone a lower learning rate.
//!
//! The PyTorch recipe is `model.fc = nn.Linear(512, n)`, `for p in backbone: p.requires_grad =
//! False`, and — the step people forget — `backbone.eval()` so that BatchNorm keeps the running
//! statistics of the pretrained data instead of re-estimating them from small fine-tuning batches.
//! [`FineTune::freeze_backbone`] does both: it turns gradients off **and** puts the backbone's
//! BatchNorm layers in eval mode, even while the model runs on an autodiff device.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, FineTune, ResNetConfig, ResNetKind};
//!
//! let device = Device::flex();
//! let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device)?; // pretend it is pretrained
//! let model = model.replace_head(5, &device)?.freeze_backbone();
//! assert_eq!(model.logits(Tensor::<4>::zeros([2, 3, 32, 32], &device)).dims(), [2, 5]);
//! assert!(ResNetConfig::new(ResNetKind::Cifar20).init(&device)?.replace_head(1, &device).is_err());
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::module::{Module, ParamGroup};
use burn::nn::Linear;
use burn::prelude::*;

use crate::{Mlp, ModelError, ResNet};

/// A model with a backbone and a classifier head.
pub trait FineTune: Module + Sized {
    /// The regular expression that matches the head's parameter paths (e.g. `^fc\.`).
    const HEAD_PATTERN: &'static str;

    /// The classifier head (the last linear layer).
    fn head(&self) -> &Linear;

    /// The classifier head, to replace it.
    fn head_mut(&mut self) -> &mut Linear;

    /// Replaces the classifier head by a freshly initialised one with `num_classes` outputs
    /// (PyTorch's default `nn.Linear` init, as `model.fc = nn.Linear(...)` gives).
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes.
    fn replace_head(mut self, num_classes: usize, device: &Device) -> Result<Self, ModelError> {
        let head = new_head_like(self.head(), num_classes, device)?;
        *self.head_mut() = head;
        Ok(self)
    }

    /// Number of classes the head outputs.
    fn num_classes(&self) -> usize {
        crate::summary::lazy_dims::<2>(&self.head().weight)[1]
    }

    /// Every parameter and BatchNorm flag of the head.
    fn head_group() -> ParamGroup {
        // The pattern is a constant the tests compile; an empty group is the safe fallback.
        ParamGroup::from_regex(Self::HEAD_PATTERN).unwrap_or_else(|_| ParamGroup::from_ids(Vec::new()))
    }

    /// Every parameter and BatchNorm flag outside the head.
    fn backbone_group() -> ParamGroup {
        ParamGroup::all().exclude(Self::head_group())
    }

    /// Freezes the backbone: no gradients for its parameters, and its BatchNorm layers use their
    /// running statistics (eval mode) and stop updating them. The head still trains.
    fn freeze_backbone(self) -> Self {
        self.freeze_group(Self::backbone_group())
    }

    /// Undoes [`freeze_backbone`](Self::freeze_backbone) (for a second, full fine-tuning phase).
    fn unfreeze_backbone(self) -> Self {
        self.unfreeze_group(Self::backbone_group())
    }

    /// The model's layers from the input on, each as regexes over parameter paths, for
    /// layer-wise learning-rate decay; the last layer holds the head. `None` (the default): the
    /// architecture defines no such order.
    fn lr_layers(&self) -> Option<Vec<Vec<String>>> {
        None
    }

    /// Layer-wise learning-rate decay (BEiT's, as timm's `param_groups_layer_decay` groups the
    /// same model): layer `i` of `n` learns at `decay^(n − 1 − i)` times the learning rate, the
    /// head's layer at 1 (left out of the result). `None` when the model has no
    /// [`lr_layers`](Self::lr_layers).
    fn layer_decay_groups(&self, decay: f64) -> Option<Vec<ScaledGroup>> {
        let layers = self.lr_layers()?;
        let n = layers.len();
        Some(
            layers
                .into_iter()
                .enumerate()
                .take(n.saturating_sub(1))
                .map(|(i, patterns)| ScaledGroup {
                    name: format!("layer {i}"),
                    // The patterns are built from integers by the model: they compile.
                    group: ParamGroup::from_any_regexes(patterns)
                        .unwrap_or_else(|_| ParamGroup::from_ids(Vec::new())),
                    lr_scale: decay.powi((n - 1 - i) as i32),
                })
                .collect(),
        )
    }
}

/// Parameters that learn at `lr_scale` times the learning rate.
#[derive(Debug, Clone)]
pub struct ScaledGroup {
    /// What the group is (`layer 3`), for messages.
    pub name: String,
    /// Its parameters.
    pub group: ParamGroup,
    /// The learning-rate multiplier.
    pub lr_scale: f64,
}

/// A fresh classifier head with `head`'s inputs and `num_classes` outputs (PyTorch's default
/// `nn.Linear` init).
fn new_head_like(head: &Linear, num_classes: usize, device: &Device) -> Result<Linear, ModelError> {
    crate::error::check_num_classes(num_classes)?;
    let d_in = crate::summary::lazy_dims(&head.weight)[0];
    Ok(crate::init::classifier_head(d_in, num_classes, device))
}

impl FineTune for ResNet {
    const HEAD_PATTERN: &'static str = r"^fc\.";

    fn head(&self) -> &Linear {
        &self.fc
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc
    }
}

impl FineTune for crate::ReferenceCnn {
    const HEAD_PATTERN: &'static str = r"^fc2\.";

    fn head(&self) -> &Linear {
        &self.fc2
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.fc2
    }
}

impl FineTune for Mlp {
    const HEAD_PATTERN: &'static str = r"^head\.";

    fn head(&self) -> &Linear {
        &self.head
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.head
    }

    fn replace_head(mut self, num_classes: usize, device: &Device) -> Result<Self, ModelError> {
        self.head = new_head_like(&self.head, num_classes, device)?;
        let d_in = crate::summary::lazy_dims(&self.head.weight)[0];
        if let Some(last) = self.layers.last_mut() {
            *last = format!("Linear({d_in}→{num_classes}, bias)");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Classifier, MlpConfig, ResNetConfig, ResNetKind};
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::{Distribution, Int, TensorData};

    fn batch(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        device.seed(3);
        let x = Tensor::<4>::random([8, 3, 16, 16], Distribution::Normal(0.5, 2.0), device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0, 1, 2, 0, 1], [8]), device);
        (x, y)
    }

    #[test]
    fn frozen_backbone_gets_no_gradients_and_keeps_its_batchnorm_statistics() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        let model = ResNetConfig::new(ResNetKind::Cifar20)
            .init(&plain)
            .unwrap()
            .replace_head(3, &plain)
            .unwrap();
        assert_eq!(model.num_classes(), 3);
        let model = model.fork(&ad).train().freeze_backbone();
        let stats_before = model.stem.bn.as_ref().unwrap().running_var.value().into_data();
        let (x, y) = batch(&ad);
        let logits = model.logits(x.clone());
        // Eval-mode BatchNorm on the frozen backbone: the same logits as the valid() model.
        let eval = model.valid().logits(x.clone().inner());
        let diff = (logits.clone().inner() - eval).abs().max().into_scalar::<f32>();
        assert!(
            diff < 1e-5,
            "frozen backbone runs BatchNorm in eval mode ({diff})"
        );
        let loss = CrossEntropyLossConfig::new().init(&ad).forward(logits, y);
        let grads = loss.backward();
        assert!(model.fc.weight.grad(&grads).is_some(), "the head trains");
        assert!(
            model.stem.conv.weight.grad(&grads).is_none(),
            "the backbone does not"
        );
        assert!(model.stem.bn.as_ref().unwrap().gamma.grad(&grads).is_none());
        assert_eq!(
            model.stem.bn.as_ref().unwrap().running_var.value().into_data(),
            stats_before
        );
        // A full fine-tuning phase after the head has settled.
        let model = model.unfreeze_backbone();
        let logits = model.logits(x);
        let grads = CrossEntropyLossConfig::new()
            .init(&ad)
            .forward(logits, y_again(&ad))
            .backward();
        assert!(model.stem.conv.weight.grad(&grads).is_some());
    }

    fn y_again(device: &Device) -> Tensor<1, Int> {
        batch(device).1
    }

    #[test]
    fn the_new_head_has_pytorch_default_init_and_the_groups_split_the_parameters() {
        let d = Device::flex();
        let mlp = MlpConfig::new(vec![64])
            .with_input_chw([3, 16, 16])
            .init(&d)
            .unwrap()
            .replace_head(4, &d)
            .unwrap();
        assert_eq!(mlp.logits(Tensor::<4>::zeros([2, 3, 16, 16], &d)).dims(), [2, 4]);
        assert_eq!(mlp.layers().last().unwrap(), "Linear(64→4, bias)");
        // nn.Linear(64, 4): weight and bias uniform in ±1/sqrt(64) = ±0.125, bias not zero.
        let bias = mlp
            .head
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(bias.iter().all(|b| b.abs() <= 0.125) && bias.iter().any(|b| *b != 0.0));
        let w = mlp.head.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!(w.iter().all(|v| v.abs() <= 0.125));
        let head = Mlp::head_group();
        let backbone = Mlp::backbone_group();
        for (path, in_head) in [
            ("head.weight", true),
            ("head.bias", true),
            ("hidden.0.linear.weight", false),
        ] {
            let id = burn::module::ParamId::new();
            assert_eq!(head.matches(&id, Some(path)), in_head, "{path}");
            assert_eq!(backbone.matches(&id, Some(path)), !in_head, "{path}");
        }
        assert!(ResNet::head_group().matches(&burn::module::ParamId::new(), Some("fc.bias")));
        assert!(
            !ResNet::head_group().matches(&burn::module::ParamId::new(), Some("blocks.2.branch.0.bn.beta"))
        );
    }

    #[test]
    fn layer_decay_groups_are_timms() {
        // timm's group_parameters(m, m.group_matcher(coarse=False), reverse=True) on
        // convnext_tiny(depths=(1,1,2,1)) and vit_tiny_patch16_224(depth=3): stem 0; blocks
        // 1..; a downsampling with its stage's first block; the final norm and head last.
        use crate::{ConvNextConfig, ConvNextKind, VitConfig, VitKind};
        let d = Device::flex();
        let scale_of = |groups: &[ScaledGroup], path: &str| -> f64 {
            let id = burn::module::ParamId::new();
            let hits: Vec<f64> = groups
                .iter()
                .filter(|g| g.group.matches(&id, Some(path)))
                .map(|g| g.lr_scale)
                .collect();
            assert!(hits.len() <= 1, "{path} in one group at most: {hits:?}");
            hits.first().copied().unwrap_or(1.0)
        };
        let convnext = ConvNextConfig::new(ConvNextKind::Tiny)
            .with_depths(Some([1, 1, 2, 1]))
            .with_widths(Some([8, 8, 8, 8]))
            .init(&d)
            .unwrap();
        let groups = convnext.layer_decay_groups(0.5).unwrap();
        for (path, power) in [
            ("stem.weight", 6),
            ("stem_norm.gamma", 6),
            ("blocks.0.dwconv.weight", 5),
            ("downsamples.0.conv.weight", 4),
            ("blocks.1.layer_scale", 4),
            ("downsamples.1.norm.beta", 3),
            ("blocks.2.pw1.weight", 3),
            ("blocks.3.pw2.bias", 2),
            ("downsamples.2.conv.bias", 1),
            ("blocks.4.norm.gamma", 1),
            ("head_norm.gamma", 0),
            ("head.weight", 0),
        ] {
            assert_eq!(scale_of(&groups, path), 0.5f64.powi(power), "{path}");
        }
        let vit = VitConfig::new(VitKind::Tiny)
            .with_image_size([8, 8])
            .with_num_layers(Some(3))
            .init(&d)
            .unwrap();
        let groups = vit.layer_decay_groups(0.5).unwrap();
        for (path, power) in [
            ("class_token", 4),
            ("pos_embedding", 4),
            ("conv_proj.weight", 4),
            ("blocks.0.in_proj.weight", 3),
            ("blocks.2.mlp_2.bias", 1),
            ("ln.gamma", 0),
            ("head.bias", 0),
        ] {
            assert_eq!(scale_of(&groups, path), 0.5f64.powi(power), "{path}");
        }
        assert!(
            ResNetConfig::new(ResNetKind::Cifar20)
                .init(&d)
                .unwrap()
                .layer_decay_groups(0.5)
                .is_none()
        );
    }
}
