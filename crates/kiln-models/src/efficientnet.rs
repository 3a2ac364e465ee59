//! EfficientNet B0–B3: torchvision's `efficientnet_b0` … `efficientnet_b3` (Tan & Le 2019), with
//! their parameter names, defaults and initialisation.
//!
//! Seven stages of MBConv blocks ([`InvertedResidual`]: 1×1 expansion by 6 (1 in the first
//! stage), depthwise k×k, squeeze-excitation to a quarter of the block's *input* width with SiLU
//! and a sigmoid gate, 1×1 projection) between a 3×3 stride-2 SiLU stem and a 1×1 SiLU convolution
//! to 4× the last width (1280 for B0); global average pooling, dropout, a linear head. Widths and
//! depths scale per variant (`_make_divisible(c · width, 8)`, `ceil(n · depth)`). Stochastic depth
//! ("row" mode) on every residual branch, its rate rising linearly with the block index from 0
//! to 0.2 (excluded). BatchNorm has PyTorch's defaults; convolutions start Kaiming normal
//! (fan-out), the head U(±1/√classes) with a zero bias, as torchvision's.
//!
//! `small_input` (the `cifar-` preset) gives the stem and the first strided stage stride 1, so the
//! network downsamples by 8 instead of 32 (28×28 and 32×32 images).
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, EfficientNetConfig, EfficientNetKind};
//!
//! let device = Device::flex();
//! let model = EfficientNetConfig::new(EfficientNetKind::B0).with_num_classes(4).init(&device)?;
//! assert_eq!(model.logits(Tensor::<4>::zeros([1, 3, 64, 64], &device)).dims(), [1, 4]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::blocks::{
    Activation, ConvBnAct, ConvBnActConfig, InvertedResidual, SqueezeExcitation, StochasticDepth,
};
use crate::init::InitScheme;
use crate::mobilenet::make_divisible;
use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{Classifier, FineTune, ModelError};

/// Which EfficientNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EfficientNetKind {
    /// `efficientnet_b0`: width 1.0, depth 1.0, dropout 0.2 (224×224).
    B0,
    /// `efficientnet_b1`: width 1.0, depth 1.1, dropout 0.2 (240×240).
    B1,
    /// `efficientnet_b2`: width 1.1, depth 1.2, dropout 0.3 (288×288).
    B2,
    /// `efficientnet_b3`: width 1.2, depth 1.4, dropout 0.3 (300×300).
    B3,
}

impl EfficientNetKind {
    /// Every kind, in the order `--model` lists them.
    pub const ALL: [EfficientNetKind; 4] = [
        EfficientNetKind::B0,
        EfficientNetKind::B1,
        EfficientNetKind::B2,
        EfficientNetKind::B3,
    ];

    /// `(width multiplier, depth multiplier, dropout)`, torchvision's `efficientnet_bN`.
    fn scaling(self) -> (f64, f64, f64) {
        match self {
            EfficientNetKind::B0 => (1.0, 1.0, 0.2),
            EfficientNetKind::B1 => (1.0, 1.1, 0.2),
            EfficientNetKind::B2 => (1.1, 1.2, 0.3),
            EfficientNetKind::B3 => (1.2, 1.4, 0.3),
        }
    }

    /// The registry name (`efficientnet_b0`).
    pub fn id(self) -> &'static str {
        match self {
            EfficientNetKind::B0 => "efficientnet_b0",
            EfficientNetKind::B1 => "efficientnet_b1",
            EfficientNetKind::B2 => "efficientnet_b2",
            EfficientNetKind::B3 => "efficientnet_b3",
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            EfficientNetKind::B0 => "EfficientNet-B0",
            EfficientNetKind::B1 => "EfficientNet-B1",
            EfficientNetKind::B2 => "EfficientNet-B2",
            EfficientNetKind::B3 => "EfficientNet-B3",
        }
    }

    /// The input size torchvision's weights were trained and evaluated at.
    fn resolution(self) -> usize {
        match self {
            EfficientNetKind::B0 => 224,
            EfficientNetKind::B1 => 240,
            EfficientNetKind::B2 => 288,
            EfficientNetKind::B3 => 300,
        }
    }
}

/// torchvision's stages before scaling: `(expand ratio, kernel, stride, c_in, c_out, blocks)`.
const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// Configuration of [`EfficientNet`].
#[derive(Config, Debug, PartialEq)]
pub struct EfficientNetConfig {
    /// Which EfficientNet.
    pub kind: EfficientNetKind,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels (torchvision's are 3).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Dropout before the head (`None`: the variant's, 0.2 or 0.3).
    #[config(default = "None")]
    pub dropout: Option<f64>,
    /// Width multiplier in place of the variant's (torchvision's `_efficientnet_conf`
    /// `width_mult`; `None`: 1.0 for B0/B1, 1.1 for B2, 1.2 for B3).
    #[config(default = "None")]
    pub width_mult: Option<f64>,
    /// Depth multiplier in place of the variant's (`None`: 1.0, 1.1, 1.2, 1.4).
    #[config(default = "None")]
    pub depth_mult: Option<f64>,
    /// The last block's stochastic-depth rate (torchvision's 0.2); block `i` of `n` drops its
    /// branch with probability `rate · i / n`.
    #[config(default = 0.2)]
    pub stochastic_depth: f64,
    /// Stride 1 in the stem and the first strided stage (small images; see the module docs).
    #[config(default = false)]
    pub small_input: bool,
    /// BatchNorm after every convolution (false, for ablations).
    #[config(default = true)]
    pub batch_norm: bool,
    /// Weight initialisation of the convolutions (torchvision's: Kaiming normal, fan-out).
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
}

/// An EfficientNet; see the [module docs](self).
#[derive(Module, Debug)]
pub struct EfficientNet {
    stem: ConvBnAct,
    blocks: Vec<InvertedResidual>,
    last: ConvBnAct,
    avg: AdaptiveAvgPool2d,
    dropout: Dropout,
    pub(crate) head: Linear,
    #[module(skip)]
    kind: EfficientNetKind,
    #[module(skip)]
    in_channels: usize,
    /// Blocks per stage (for torchvision's `features.{stage}.{block}` names).
    #[module(skip)]
    stages: Vec<usize>,
}

/// torchvision's head: weight U(±1/√d_out), bias 0.
fn head(d_in: usize, d_out: usize, device: &Device) -> Linear {
    let r = 1.0 / (d_out as f64).sqrt();
    let mut l = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Uniform { min: -r, max: r })
        .init(device);
    l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
    l
}

impl EfficientNetConfig {
    /// Checks the config and builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes, no input channels, or a dropout
    /// or stochastic-depth rate outside [0, 1).
    pub fn init(&self, device: &Device) -> Result<EfficientNet, ModelError> {
        crate::error::check_num_classes(self.num_classes)?;
        let invalid = |field, value: f64, reason| ModelError::InvalidConfig {
            field,
            value: value.to_string(),
            reason,
        };
        if self.in_channels == 0 {
            return Err(invalid("in_channels", 0.0, "must be at least 1"));
        }
        let (width_mult, depth_mult, default_dropout) = self.kind.scaling();
        let (width_mult, depth_mult) = (
            self.width_mult.unwrap_or(width_mult),
            self.depth_mult.unwrap_or(depth_mult),
        );
        for (field, v) in [("width_mult", width_mult), ("depth_mult", depth_mult)] {
            if !(v > 0.0 && v <= 4.0) {
                return Err(invalid(field, v, "must be in (0, 4]"));
            }
        }
        let dropout = self.dropout.unwrap_or(default_dropout);
        if !(0.0..1.0).contains(&dropout) {
            return Err(invalid("dropout", dropout, "must be in [0, 1)"));
        }
        if !(0.0..1.0).contains(&self.stochastic_depth) {
            return Err(invalid(
                "stochastic_depth",
                self.stochastic_depth,
                "must be in [0, 1)",
            ));
        }
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize, act: Activation| {
            ConvBnActConfig::new(c_in, c_out, k)
                .with_stride(stride)
                .with_groups(groups)
                .with_activation(act)
                .with_batch_norm(self.batch_norm)
                .with_init(self.init)
                .init(device)
        };
        let width = |c: usize| make_divisible(c as f64 * width_mult, 8);
        let depths: Vec<usize> = STAGES
            .iter()
            .map(|s| (s.5 as f64 * depth_mult).ceil() as usize)
            .collect();
        let total: usize = depths.iter().sum();
        let stem = conv(
            self.in_channels,
            width(STAGES[0].3),
            3,
            if self.small_input { 1 } else { 2 },
            1,
            Activation::Silu,
        );
        let mut first_strided = self.small_input;
        let mut blocks = Vec::with_capacity(total);
        for (&(expand, k, stage_stride, c_in, c_out, _), &n) in STAGES.iter().zip(&depths) {
            let (mut c_in, c_out) = (width(c_in), width(c_out));
            let mut stride = stage_stride;
            if stride == 2 && first_strided {
                first_strided = false;
                stride = 1;
            }
            for b in 0..n {
                let stride = if b == 0 { stride } else { 1 };
                let expanded = make_divisible((c_in * expand) as f64, 8);
                let act = Activation::Silu;
                let expand_conv = (expanded != c_in).then(|| conv(c_in, expanded, 1, 1, 1, act));
                let depthwise = conv(expanded, expanded, k, stride, expanded, act);
                let se = SqueezeExcitation::new(
                    expanded,
                    (c_in / 4).max(1),
                    [Activation::Silu, Activation::Sigmoid],
                    self.init,
                    device,
                );
                let rate = self.stochastic_depth * blocks.len() as f64 / total as f64;
                blocks.push(InvertedResidual {
                    expand: expand_conv,
                    depthwise,
                    se: Some(se),
                    project: conv(expanded, c_out, 1, 1, 1, Activation::Identity),
                    drop: Some(StochasticDepth::new(rate)),
                    residual: stride == 1 && c_in == c_out,
                });
                c_in = c_out;
            }
        }
        let c_last = width(STAGES[6].4);
        let last = conv(c_last, 4 * c_last, 1, 1, 1, Activation::Silu);
        Ok(EfficientNet {
            stem,
            blocks,
            last,
            avg: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(dropout).init(),
            head: head(4 * c_last, self.num_classes, device),
            kind: self.kind,
            in_channels: self.in_channels,
            stages: depths,
        })
    }
}

impl EfficientNet {
    /// `[N, C, H, W]` → `[N, classes]` logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(x);
        for b in &self.blocks {
            x = b.forward(x);
        }
        let x: Tensor<2> = self.avg.forward(self.last.forward(x)).flatten(1, 3);
        self.head.forward(self.dropout.forward(x))
    }

    /// Which EfficientNet this is.
    pub fn kind(&self) -> EfficientNetKind {
        self.kind
    }

    /// Per-layer output shapes, parameters and MACs for an input of `[C, H, W]`.
    pub fn summary(&self, input: [usize; 3]) -> crate::Summary {
        let mut rows = crate::blocks::mbconv_body_rows(&self.stem, &self.blocks, &self.last, input);
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

impl Classifier for EfficientNet {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        // Every convolution pads k/2: any size of at least 1x1 stays at least 1x1.
        crate::error::check_nchw(dims, "EfficientNet", self.in_channels, 1)
    }

    fn summary(&self, input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(EfficientNet::summary(self, input_chw))
    }
}

impl FineTune for EfficientNet {
    const HEAD_PATTERN: &'static str = r"^head\.";

    fn head(&self) -> &Linear {
        &self.head
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.head
    }
}

impl ZooModel for EfficientNet {
    /// `(torchvision prefix, kiln prefix)` pairs: `features.0` the stem, `features.{s}.{b}.block`
    /// block `b` of stage `s` (1–7), `features.8` the last convolution, `classifier.1` the head.
    fn torchvision_prefixes(&self) -> Option<Vec<(String, String)>> {
        let mut pairs = vec![
            ("features.0.0.".to_string(), "stem.conv.".to_string()),
            ("features.0.1.".to_string(), "stem.bn.".to_string()),
        ];
        let mut i = 0;
        for (s, &n) in self.stages.iter().enumerate() {
            for b in 0..n {
                let tv = format!("features.{}.{b}.block", s + 1);
                self.blocks[i].torchvision_prefixes(&tv, &format!("blocks.{i}"), &mut pairs);
                i += 1;
            }
        }
        let last = self.stages.len() + 1;
        pairs.push((format!("features.{last}.0."), "last.conv.".into()));
        pairs.push((format!("features.{last}.1."), "last.bn.".into()));
        pairs.push(("classifier.1.".into(), "head.".into()));
        Some(pairs)
    }

    fn onnx(&self, g: &mut crate::onnx::OnnxGraph, x: &str) -> Result<String, ModelError> {
        use crate::onnx::OnnxLayer;
        let body = [&self.stem, &self.last];
        let x = crate::blocks::mbconv_body_onnx(g, body, &self.blocks, &self.avg, x)?;
        self.head.onnx(g, "head", &x)
    }
}

/// `[model] name = "efficientnet"`: an EfficientNet, registered in [`crate::zoo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetArch {
    /// `b0` … `b3`.
    pub variant: EfficientNetKind,
    /// Dropout before the head (default: the variant's, 0.2 or 0.3).
    #[serde(default)]
    pub dropout: Option<f64>,
    /// Width multiplier in place of the variant's.
    #[serde(default)]
    pub width_mult: Option<f64>,
    /// Depth multiplier in place of the variant's.
    #[serde(default)]
    pub depth_mult: Option<f64>,
    /// The last block's stochastic-depth rate (0.2).
    #[serde(default = "point_two")]
    pub stochastic_depth: f64,
    /// Stride 1 in the stem and the first strided stage, for 28×28 / 32×32 images.
    #[serde(default)]
    pub small_input: bool,
    /// BatchNorm after every convolution.
    #[serde(default = "crate::zoo::yes")]
    pub batch_norm: bool,
    /// Weight initialisation of the convolutions (Kaiming normal, fan-out, by default).
    #[serde(default)]
    pub init: Option<InitScheme>,
}

fn point_two() -> f64 {
    0.2
}

impl Architecture for EfficientNetArch {
    type Model = EfficientNet;

    fn presets() -> Vec<Preset<Self>> {
        let arch = |variant, small_input| EfficientNetArch {
            variant,
            dropout: None,
            width_mult: None,
            depth_mult: None,
            stochastic_depth: 0.2,
            small_input,
            batch_norm: true,
            init: None,
        };
        let mut presets: Vec<Preset<Self>> = EfficientNetKind::ALL
            .into_iter()
            .map(|kind| Preset {
                name: kind.id(),
                about: match kind {
                    EfficientNetKind::B0 => "torchvision's EfficientNet-B0 (torchvision weights import)",
                    EfficientNetKind::B1 => "torchvision's EfficientNet-B1 (240x240)",
                    EfficientNetKind::B2 => "torchvision's EfficientNet-B2 (288x288)",
                    EfficientNetKind::B3 => "torchvision's EfficientNet-B3 (300x300)",
                },
                config: arch(kind, false),
            })
            .collect();
        presets.push(Preset {
            name: "cifar-efficientnet_b0",
            about: "EfficientNet-B0 downsampling by 8, not 32 (28x28 / 32x32 inputs)",
            config: arch(EfficientNetKind::B0, true),
        });
        presets
    }

    fn build(
        &self,
        [c, _, _]: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<EfficientNet, ModelError> {
        let mut m = EfficientNetConfig::new(self.variant)
            .with_in_channels(c)
            .with_num_classes(num_classes)
            .with_dropout(self.dropout)
            .with_width_mult(self.width_mult)
            .with_depth_mult(self.depth_mult)
            .with_stochastic_depth(self.stochastic_depth)
            .with_small_input(self.small_input)
            .with_batch_norm(self.batch_norm);
        if let Some(init) = self.init {
            m = m.with_init(init);
        }
        m.init(device)
    }

    fn id(&self) -> String {
        if self.small_input {
            format!("cifar-{}", self.variant.id())
        } else {
            self.variant.id().to_string()
        }
    }

    fn describe(&self, [c, h, w]: [usize; 3], num_classes: usize) -> String {
        let mut notes = String::new();
        if let Some(m) = self.width_mult {
            notes.push_str(&format!(", width x{m}"));
        }
        if let Some(m) = self.depth_mult {
            notes.push_str(&format!(", depth x{m}"));
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
            let r = self.variant.resolution();
            [3, r, r]
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
    fn parameter_counts_and_macs_equal_torchvision() {
        // torchvision's model cards (EfficientNet_BN_Weights.IMAGENET1K_V1.meta): num_params
        // 5,288,548 / 7,794,184 / 9,109,994 / 12,233,232 and "_ops" (GFLOPS, counted as
        // multiply-adds) 0.386 / 0.687 / 1.088 / 1.827 at 224 / 240 / 288 / 300. Burn also counts
        // BatchNorm's running mean and variance, two per BatchNorm channel.
        let d = Device::flex();
        for (kind, params, gmacs) in [
            (EfficientNetKind::B0, 5_288_548, 0.386),
            (EfficientNetKind::B1, 7_794_184, 0.687),
            (EfficientNetKind::B2, 9_109_994, 1.088),
            (EfficientNetKind::B3, 12_233_232, 1.827),
        ] {
            let m = EfficientNetConfig::new(kind)
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
            let r = kind.resolution();
            let s = m.summary([3, r, r]);
            assert_eq!(s.params(), m.num_params(), "every parameter is in a row");
            let g = s.macs() as f64 / 1e9;
            assert!((g - gmacs).abs() < 0.01 * gmacs, "{kind:?}: {g} GMACs");
        }
    }

    #[test]
    fn stochastic_depth_rises_linearly_and_drops_whole_samples_only_in_training() {
        let d = Device::flex();
        let m = EfficientNetConfig::new(EfficientNetKind::B0)
            .with_small_input(true)
            .init(&d)
            .unwrap();
        // torchvision: sd_prob = 0.2 * block_id / 16 for B0's 16 blocks.
        let rates: Vec<f64> = m
            .blocks
            .iter()
            .map(|b| b.drop.as_ref().map_or(-1.0, |s| s.prob()))
            .collect();
        assert_eq!(rates.len(), 16);
        for (i, r) in rates.iter().enumerate() {
            assert!((r - 0.2 * i as f64 / 16.0).abs() < 1e-12, "{rates:?}");
        }
        let sd = StochasticDepth::new(0.5);
        let ad = d.clone().autodiff();
        ad.seed(3);
        let y = sd.forward(Tensor::<4>::ones([64, 2, 3, 3], &ad));
        let per_sample: Vec<f32> = y
            .sum_dim(3)
            .sum_dim(2)
            .sum_dim(1)
            .inner()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(
            per_sample.iter().all(|&v| v == 0.0 || (v - 36.0).abs() < 1e-5),
            "{per_sample:?}"
        );
        let kept = per_sample.iter().filter(|&&v| v > 0.0).count();
        assert!((16..=48).contains(&kept), "about half of 64 kept: {kept}");
        let plain = sd.forward(Tensor::<4>::ones([4, 2, 3, 3], &d));
        assert_eq!(
            plain.sum().into_scalar::<f32>(),
            72.0,
            "identity outside training"
        );
        assert!(
            EfficientNetConfig::new(EfficientNetKind::B0)
                .with_stochastic_depth(1.0)
                .init(&d)
                .is_err()
        );
        assert!(
            EfficientNetConfig::new(EfficientNetKind::B0)
                .with_dropout(Some(-0.1))
                .init(&d)
                .is_err()
        );
    }
}
