//! MobileNetV3: torchvision's `mobilenet_v3_small` and `mobilenet_v3_large` (Howard et al. 2019),
//! with their parameter names, defaults and initialisation.
//!
//! Inverted residual blocks — 1×1 expansion, depthwise k×k, optional squeeze-excitation gated by
//! hard sigmoid, 1×1 linear projection, identity shortcut when the shape allows — between a 3×3
//! stride-2 hard-swish stem and a 1×1 hard-swish convolution to 6× the last width; then global
//! average pooling, `Linear → Hardswish → Dropout → Linear`. BatchNorm has ε = 1e-3 and momentum
//! 0.01 as torchvision sets them; convolutions start Kaiming normal (fan-out), linear layers
//! N(0, 0.01) with zero biases. `width_mult` scales every width as torchvision's does
//! (`_make_divisible(c · width_mult, 8)`).
//!
//! `small_input` (the `cifar-` presets) keeps the resolution of 28×28 and 32×32 images: the stem
//! and the first strided block use stride 1, so the network downsamples by 8 instead of 32.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, MobileNetV3Config, MobileNetV3Kind};
//!
//! let device = Device::flex();
//! let model = MobileNetV3Config::new(MobileNetV3Kind::Small).with_num_classes(5).init(&device)?;
//! assert_eq!(model.logits(Tensor::<4>::zeros([2, 3, 64, 64], &device)).dims(), [2, 5]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::blocks::{Activation, ConvBnAct, ConvBnActConfig, InvertedResidual, SqueezeExcitation};
use crate::init::InitScheme;
use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{Classifier, FineTune, ModelError};

/// Which MobileNetV3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MobileNetV3Kind {
    /// `mobilenet_v3_small`: 11 blocks, last width 96, hidden 1024.
    Small,
    /// `mobilenet_v3_large`: 15 blocks, last width 160, hidden 1280.
    Large,
}

impl MobileNetV3Kind {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            MobileNetV3Kind::Small => "MobileNetV3-Small",
            MobileNetV3Kind::Large => "MobileNetV3-Large",
        }
    }

    /// torchvision's blocks (its `_mobilenet_v3_conf`, Tables 1 and 2 of the paper) as
    /// `(c_in, kernel, expanded, c_out, squeeze-excitation, hard swish, stride)` before the width
    /// multiplier, and the hidden width of the classifier.
    #[allow(clippy::type_complexity)]
    fn table(self) -> (&'static [(usize, usize, usize, usize, bool, bool, usize)], usize) {
        const LARGE: &[(usize, usize, usize, usize, bool, bool, usize)] = &[
            (16, 3, 16, 16, false, false, 1),
            (16, 3, 64, 24, false, false, 2),
            (24, 3, 72, 24, false, false, 1),
            (24, 5, 72, 40, true, false, 2),
            (40, 5, 120, 40, true, false, 1),
            (40, 5, 120, 40, true, false, 1),
            (40, 3, 240, 80, false, true, 2),
            (80, 3, 200, 80, false, true, 1),
            (80, 3, 184, 80, false, true, 1),
            (80, 3, 184, 80, false, true, 1),
            (80, 3, 480, 112, true, true, 1),
            (112, 3, 672, 112, true, true, 1),
            (112, 5, 672, 160, true, true, 2),
            (160, 5, 960, 160, true, true, 1),
            (160, 5, 960, 160, true, true, 1),
        ];
        const SMALL: &[(usize, usize, usize, usize, bool, bool, usize)] = &[
            (16, 3, 16, 16, true, false, 2),
            (16, 3, 72, 24, false, false, 2),
            (24, 3, 88, 24, false, false, 1),
            (24, 5, 96, 40, true, true, 2),
            (40, 5, 240, 40, true, true, 1),
            (40, 5, 240, 40, true, true, 1),
            (40, 5, 120, 48, true, true, 1),
            (48, 5, 144, 48, true, true, 1),
            (48, 5, 288, 96, true, true, 2),
            (96, 5, 576, 96, true, true, 1),
            (96, 5, 576, 96, true, true, 1),
        ];
        match self {
            MobileNetV3Kind::Large => (LARGE, 1280),
            MobileNetV3Kind::Small => (SMALL, 1024),
        }
    }
}

/// torchvision's `_make_divisible(v, 8)`: the nearest multiple of 8, at least 8, never more than
/// 10 % below `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) / d).floor() * d).max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// Configuration of [`MobileNetV3`].
#[derive(Config, Debug, PartialEq)]
pub struct MobileNetV3Config {
    /// Which MobileNetV3.
    pub kind: MobileNetV3Kind,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels (torchvision's are 3).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Width multiplier (torchvision's `width_mult`).
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Dropout before the last linear layer (torchvision's 0.2).
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Stride 1 in the stem and the first strided block (small images; see the module docs).
    #[config(default = false)]
    pub small_input: bool,
    /// BatchNorm after every convolution (false, for ablations: the convolutions keep biases).
    #[config(default = true)]
    pub batch_norm: bool,
    /// Weight initialisation of the convolutions (torchvision's: Kaiming normal, fan-out).
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
}

/// A MobileNetV3; see the [module docs](self).
#[derive(Module, Debug)]
pub struct MobileNetV3 {
    stem: ConvBnAct,
    blocks: Vec<InvertedResidual>,
    last: ConvBnAct,
    avg: AdaptiveAvgPool2d,
    hidden: Linear,
    dropout: Dropout,
    pub(crate) head: Linear,
    #[module(skip)]
    kind: MobileNetV3Kind,
    #[module(skip)]
    in_channels: usize,
}

/// A linear layer as torchvision's MobileNetV3 starts it: weight N(0, 0.01), bias 0.
fn linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let mut l = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
        .init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    l
}

impl MobileNetV3Config {
    /// Checks the config and builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes, no input channels, a width
    /// multiplier outside (0, 4] or a dropout outside [0, 1).
    pub fn init(&self, device: &Device) -> Result<MobileNetV3, ModelError> {
        crate::error::check_num_classes(self.num_classes)?;
        let invalid = |field, value: f64, reason| ModelError::InvalidConfig {
            field,
            value: value.to_string(),
            reason,
        };
        if self.in_channels == 0 {
            return Err(invalid("in_channels", 0.0, "must be at least 1"));
        }
        if !(self.width_mult > 0.0 && self.width_mult <= 4.0) {
            return Err(invalid("width_mult", self.width_mult, "must be in (0, 4]"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must be in [0, 1)"));
        }
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize, act: Activation| {
            ConvBnActConfig::new(c_in, c_out, k)
                .with_stride(stride)
                .with_groups(groups)
                .with_activation(act)
                .with_batch_norm(self.batch_norm)
                .with_init(self.init)
                .with_bn_eps(1e-3)
                .with_bn_momentum(0.01)
                .init(device)
        };
        let width = |c: usize| make_divisible(c as f64 * self.width_mult, 8);
        let (table, hidden) = self.kind.table();
        let first = width(table[0].0);
        let stem_stride = if self.small_input { 1 } else { 2 };
        let stem = conv(self.in_channels, first, 3, stem_stride, 1, Activation::HardSwish);
        let mut first_strided = self.small_input;
        let mut blocks = Vec::with_capacity(table.len());
        for &(c_in, k, expanded, c_out, se, hs, stride) in table {
            let (c_in, expanded, c_out) = (width(c_in), width(expanded), width(c_out));
            let stride = if stride == 2 && first_strided {
                first_strided = false;
                1
            } else {
                stride
            };
            let act = if hs {
                Activation::HardSwish
            } else {
                Activation::Relu
            };
            let expand = (expanded != c_in).then(|| conv(c_in, expanded, 1, 1, 1, act));
            let depthwise = conv(expanded, expanded, k, stride, expanded, act);
            let se = se.then(|| {
                let squeeze = make_divisible((expanded / 4) as f64, 8);
                let acts = [Activation::Relu, Activation::HardSigmoid];
                SqueezeExcitation::new(expanded, squeeze, acts, self.init, device)
            });
            let project = conv(expanded, c_out, 1, 1, 1, Activation::Identity);
            blocks.push(InvertedResidual {
                expand,
                depthwise,
                se,
                project,
                drop: None,
                residual: stride == 1 && c_in == c_out,
            });
        }
        let c_last = width(table[table.len() - 1].3);
        let last = conv(c_last, 6 * c_last, 1, 1, 1, Activation::HardSwish);
        let hidden_width = width(hidden);
        Ok(MobileNetV3 {
            stem,
            blocks,
            last,
            avg: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            hidden: linear(6 * c_last, hidden_width, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: linear(hidden_width, self.num_classes, device),
            kind: self.kind,
            in_channels: self.in_channels,
        })
    }
}

impl MobileNetV3 {
    /// `[N, C, H, W]` → `[N, classes]` logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(x);
        for b in &self.blocks {
            x = b.forward(x);
        }
        let x: Tensor<2> = self.avg.forward(self.last.forward(x)).flatten(1, 3);
        let x = Activation::HardSwish.apply(self.hidden.forward(x));
        self.head.forward(self.dropout.forward(x))
    }

    /// Which MobileNetV3 this is.
    pub fn kind(&self) -> MobileNetV3Kind {
        self.kind
    }

    /// Per-layer output shapes, parameters and MACs for an input of `[C, H, W]`.
    pub fn summary(&self, input: [usize; 3]) -> crate::Summary {
        let mut rows = crate::blocks::mbconv_body_rows(&self.stem, &self.blocks, &self.last, input);
        rows.push(crate::summary::linear_row(&self.hidden, |i, o| {
            format!("Linear({i}→{o}, bias) → Hardswish")
        }));
        rows.push(crate::summary::linear_row(&self.head, |i, o| {
            format!("Dropout → Linear({i}→{o}, bias)")
        }));
        crate::Summary {
            model: self.kind.name().to_string(),
            input,
            rows,
        }
    }
}

impl Classifier for MobileNetV3 {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        // Every convolution pads k/2, so any size of at least 1x1 gives at least 1x1.
        crate::error::check_nchw(dims, "MobileNetV3", self.in_channels, 1)
    }

    fn summary(&self, input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(MobileNetV3::summary(self, input_chw))
    }
}

impl FineTune for MobileNetV3 {
    const HEAD_PATTERN: &'static str = r"^head\.";

    fn head(&self) -> &Linear {
        &self.head
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.head
    }
}

impl ZooModel for MobileNetV3 {
    /// `(torchvision prefix, kiln prefix)` pairs, each ending in a dot: `features.0` is the stem,
    /// `features.{i+1}.block.{j}` the parts of block `i` in order (expansion, depthwise,
    /// squeeze-excitation, projection, the absent ones skipped), the last `features` entry the
    /// final 1×1 convolution, `classifier.0`/`.3` the two linear layers.
    fn torchvision_prefixes(&self) -> Option<Vec<(String, String)>> {
        let conv_bn = |pairs: &mut Vec<(String, String)>, tv: &str, kiln: &str| {
            pairs.push((format!("{tv}.0."), format!("{kiln}.conv.")));
            pairs.push((format!("{tv}.1."), format!("{kiln}.bn.")));
        };
        let mut pairs = Vec::new();
        conv_bn(&mut pairs, "features.0", "stem");
        for (i, b) in self.blocks.iter().enumerate() {
            b.torchvision_prefixes(
                &format!("features.{}.block", i + 1),
                &format!("blocks.{i}"),
                &mut pairs,
            );
        }
        conv_bn(&mut pairs, &format!("features.{}", self.blocks.len() + 1), "last");
        pairs.push(("classifier.0.".into(), "hidden.".into()));
        pairs.push(("classifier.3.".into(), "head.".into()));
        Some(pairs)
    }

    fn onnx(&self, g: &mut crate::onnx::OnnxGraph, x: &str) -> Result<String, ModelError> {
        use crate::onnx::OnnxLayer;
        let body = [&self.stem, &self.last];
        let x = crate::blocks::mbconv_body_onnx(g, body, &self.blocks, &self.avg, x)?;
        let x = self.hidden.onnx(g, "hidden", &x)?;
        let x = Activation::HardSwish.onnx(g, "hidden", &x)?;
        self.head.onnx(g, "head", &x)
    }
}

/// `[model] name = "mobilenet-v3"`: a MobileNetV3, registered in [`crate::zoo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobileNetV3Arch {
    /// `small` or `large`.
    pub variant: MobileNetV3Kind,
    /// Width multiplier (1.0).
    #[serde(default = "one")]
    pub width_mult: f64,
    /// Dropout before the last linear layer (0.2).
    #[serde(default = "point_two")]
    pub dropout: f64,
    /// Stride 1 in the stem and the first strided block, for 28×28 / 32×32 images.
    #[serde(default)]
    pub small_input: bool,
    /// BatchNorm after every convolution.
    #[serde(default = "crate::zoo::yes")]
    pub batch_norm: bool,
    /// Weight initialisation of the convolutions (Kaiming normal, fan-out, by default).
    #[serde(default)]
    pub init: Option<InitScheme>,
}

fn one() -> f64 {
    1.0
}

fn point_two() -> f64 {
    0.2
}

impl Architecture for MobileNetV3Arch {
    type Model = MobileNetV3;

    fn presets() -> Vec<Preset<Self>> {
        let preset = |name, about, variant, small_input| Preset {
            name,
            about,
            config: MobileNetV3Arch {
                variant,
                width_mult: 1.0,
                dropout: 0.2,
                small_input,
                batch_norm: true,
                init: None,
            },
        };
        vec![
            preset(
                "mobilenet_v3_small",
                "torchvision's MobileNetV3-Small (torchvision weights import)",
                MobileNetV3Kind::Small,
                false,
            ),
            preset(
                "mobilenet_v3_large",
                "torchvision's MobileNetV3-Large (torchvision weights import)",
                MobileNetV3Kind::Large,
                false,
            ),
            preset(
                "cifar-mobilenet_v3_small",
                "MobileNetV3-Small downsampling by 8, not 32 (28x28 / 32x32 inputs)",
                MobileNetV3Kind::Small,
                true,
            ),
            preset(
                "cifar-mobilenet_v3_large",
                "MobileNetV3-Large downsampling by 8, not 32 (28x28 / 32x32 inputs)",
                MobileNetV3Kind::Large,
                true,
            ),
        ]
    }

    fn build(
        &self,
        [c, _, _]: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<MobileNetV3, ModelError> {
        let mut m = MobileNetV3Config::new(self.variant)
            .with_in_channels(c)
            .with_num_classes(num_classes)
            .with_width_mult(self.width_mult)
            .with_dropout(self.dropout)
            .with_small_input(self.small_input)
            .with_batch_norm(self.batch_norm);
        if let Some(init) = self.init {
            m = m.with_init(init);
        }
        m.init(device)
    }

    fn id(&self) -> String {
        let base = match self.variant {
            MobileNetV3Kind::Small => "mobilenet_v3_small",
            MobileNetV3Kind::Large => "mobilenet_v3_large",
        };
        if self.small_input {
            format!("cifar-{base}")
        } else {
            base.to_string()
        }
    }

    fn describe(&self, [c, h, w]: [usize; 3], num_classes: usize) -> String {
        let mut notes = String::new();
        if self.width_mult != 1.0 {
            notes.push_str(&format!(", width x{}", self.width_mult));
        }
        if self.small_input {
            notes.push_str(", small-input strides");
        }
        format!(
            "{}({c}x{h}x{w} -> {num_classes} classes{notes}{})",
            self.variant.name(),
            crate::zoo::bn_note(self.batch_norm)
        )
    }

    fn default_input(&self) -> [usize; 3] {
        if self.small_input {
            [3, 32, 32]
        } else {
            [3, 224, 224]
        }
    }

    fn batch_norm_mut(&mut self) -> &mut bool {
        &mut self.batch_norm
    }

    fn init_mut(&mut self) -> &mut Option<InitScheme> {
        &mut self.init
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_equals_torchvision() {
        // torchvision.models._utils._make_divisible(v, 8) for these v:
        // 16→16, 72*0.5=36→40, 88*0.75=66→64, 3.5→8, 960*1.25=1200→1200, 20→24, 18→24 (16 would
        // be more than 10 % below), 12→16.
        for (v, want) in [
            (16.0, 16),
            (36.0, 40),
            (66.0, 64),
            (3.5, 8),
            (1200.0, 1200),
            (20.0, 24),
            (18.0, 24),
            (12.0, 16),
        ] {
            assert_eq!(make_divisible(v, 8), want, "{v}");
        }
    }

    #[test]
    fn parameter_counts_and_macs_equal_torchvision() {
        // sum(p.numel() for p in torchvision.models.mobilenet_v3_large().parameters()) = 5,483,032
        // (its model card's num_params), small 2,542,856; Burn also counts the BatchNorm running
        // mean and variance, two per BatchNorm channel.
        let d = Device::flex();
        for (kind, params, gflops) in [
            (MobileNetV3Kind::Large, 5_483_032, 0.217),
            (MobileNetV3Kind::Small, 2_542_856, 0.057),
        ] {
            let m = MobileNetV3Config::new(kind)
                .with_num_classes(1000)
                .init(&d)
                .unwrap();
            let bn_stats: usize = m
                .blocks
                .iter()
                .flat_map(|b| [b.expand.as_ref(), Some(&b.depthwise), Some(&b.project)])
                .flatten()
                .chain([&m.stem, &m.last])
                .map(|c| 2 * c.bn.as_ref().unwrap().gamma.shape().dims::<1>()[0])
                .sum();
            assert_eq!(m.num_params() - bn_stats, params, "{kind:?}");
            let s = m.summary([3, 224, 224]);
            assert_eq!(s.params(), m.num_params(), "every parameter is in a row");
            // torchvision's model cards list "_ops" (GFLOPS, counted as multiply-adds).
            let g = s.macs() as f64 / 1e9;
            assert!((g - gflops).abs() < 0.0025, "{kind:?}: {g} GMACs");
            assert_eq!(s.rows.last().unwrap().output, vec![1000]);
        }
    }

    #[test]
    fn small_input_keeps_resolution_and_configs_are_checked() {
        let d = Device::flex();
        let m = MobileNetV3Config::new(MobileNetV3Kind::Small)
            .with_small_input(true)
            .init(&d)
            .unwrap();
        let s = m.summary([1, 28, 28]);
        // Stem and first strided block at stride 1, then three stride-2 blocks: 28 → 4.
        assert_eq!(s.rows[0].output, vec![16, 28, 28]);
        let last_conv = &s.rows[s.rows.len() - 4];
        assert_eq!(last_conv.output, vec![576, 4, 4], "{s}");
        assert!(
            MobileNetV3Config::new(MobileNetV3Kind::Small)
                .with_width_mult(0.0)
                .init(&d)
                .is_err()
        );
        assert!(
            MobileNetV3Config::new(MobileNetV3Kind::Small)
                .with_dropout(1.0)
                .init(&d)
                .is_err()
        );
        assert!(
            MobileNetV3Config::new(MobileNetV3Kind::Large)
                .with_num_classes(1)
                .init(&d)
                .is_err()
        );
        assert!(m.check_input(&[2, 1, 28, 28]).is_err(), "three channels, not one");
        assert!(m.check_input(&[2, 3, 28, 28]).is_ok());
    }
}
