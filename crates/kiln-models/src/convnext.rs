//! ConvNeXt: torchvision's `convnext_tiny` and `convnext_small` (Liu et al. 2022), with their
//! parameter names, defaults and initialisation.
//!
//! A 4×4 stride-4 "patchify" stem with LayerNorm over channels; four stages of ConvNeXt blocks
//! (7×7 depthwise convolution, LayerNorm over channels, `Linear(d → 4d) → GELU → Linear(4d → d)`
//! on channels-last, a learned per-channel layer scale starting at 1e-6, stochastic depth, the
//! input added back), separated by LayerNorm + 2×2 stride-2 convolutions; global average pooling,
//! LayerNorm, a linear head. LayerNorm ε is 1e-6; convolutions and linear layers start N(0, 0.02²)
//! (torchvision's truncated normal at ±2 never truncates at that scale) with zero biases. The
//! stochastic-depth rate rises linearly over all blocks from 0 to 0.1 (tiny) or 0.4 (small).
//!
//! `small_input` (the `cifar-` preset) uses a 2×2 stride-2 stem: 28×28 ends at 1×1 instead of
//! vanishing. `depths` and `widths` override the variant's (a small ConvNeXt for CPU runs).
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, ConvNextConfig, ConvNextKind};
//!
//! let device = Device::flex();
//! let model = ConvNextConfig::new(ConvNextKind::Tiny)
//!     .with_depths(Some([1, 1, 1, 1]))
//!     .with_widths(Some([8, 16, 24, 32]))
//!     .with_num_classes(3)
//!     .init(&device)?;
//! assert_eq!(model.logits(Tensor::<4>::zeros([2, 3, 32, 32], &device)).dims(), [2, 3]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::blocks::{Activation, StochasticDepth};
use crate::init::InitScheme;
use crate::onnx::{OnnxGraph, OnnxLayer};
use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{Classifier, FineTune, ModelError};

/// torchvision's LayerNorm ε for ConvNeXt.
const LN_EPS: f64 = 1e-6;

/// Which ConvNeXt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvNextKind {
    /// `convnext_tiny`: depths [3, 3, 9, 3], widths [96, 192, 384, 768], stochastic depth 0.1.
    Tiny,
    /// `convnext_small`: depths [3, 3, 27, 3], same widths, stochastic depth 0.4.
    Small,
}

impl ConvNextKind {
    /// `(depths, widths, stochastic depth)`, torchvision's.
    fn plan(self) -> ([usize; 4], [usize; 4], f64) {
        match self {
            ConvNextKind::Tiny => ([3, 3, 9, 3], [96, 192, 384, 768], 0.1),
            ConvNextKind::Small => ([3, 3, 27, 3], [96, 192, 384, 768], 0.4),
        }
    }

    /// The registry name.
    pub fn id(self) -> &'static str {
        match self {
            ConvNextKind::Tiny => "convnext_tiny",
            ConvNextKind::Small => "convnext_small",
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ConvNextKind::Tiny => "ConvNeXt-Tiny",
            ConvNextKind::Small => "ConvNeXt-Small",
        }
    }
}

/// Configuration of [`ConvNext`].
#[derive(Config, Debug, PartialEq)]
pub struct ConvNextConfig {
    /// Which ConvNeXt.
    pub kind: ConvNextKind,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels (torchvision's are 3).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Blocks per stage in place of the variant's.
    #[config(default = "None")]
    pub depths: Option<[usize; 4]>,
    /// Widths per stage in place of the variant's.
    #[config(default = "None")]
    pub widths: Option<[usize; 4]>,
    /// The last block's stochastic-depth rate (`None`: the variant's, 0.1 or 0.4).
    #[config(default = "None")]
    pub stochastic_depth: Option<f64>,
    /// The layer scale's starting value (torchvision's 1e-6).
    #[config(default = 1e-6)]
    pub layer_scale: f64,
    /// A 2×2 stride-2 stem instead of 4×4 stride 4 (small images).
    #[config(default = false)]
    pub small_input: bool,
}

/// One ConvNeXt block; see the [module docs](self).
#[derive(Module, Debug)]
pub struct ConvNextBlock {
    dwconv: Conv2d,
    norm: LayerNorm,
    pw1: Linear,
    pw2: Linear,
    layer_scale: Param<Tensor<3>>,
    drop: StochasticDepth,
}

impl ConvNextBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [n, c, h, w] = x.dims();
        // Channels-last as one [N·H·W, C] matrix: one gemm per linear layer (a 4-D input makes
        // Burn's matmul broadcast the weight over N·H small products).
        let y = crate::kernels::conv2d(&self.dwconv, x.clone())
            .permute([0, 2, 3, 1])
            .reshape([n * h * w, c]);
        let y = self
            .pw1
            .forward(crate::kernels::layer_norm(&self.norm, LN_EPS, y));
        let y = self
            .pw2
            .forward(Activation::Gelu.apply(y))
            .reshape([n, h, w, c])
            .permute([0, 3, 1, 2]);
        let y = y * self.layer_scale.val().unsqueeze::<4>();
        self.drop.forward(y) + x
    }
}

/// LayerNorm + 2×2 stride-2 convolution between stages.
#[derive(Module, Debug)]
pub struct Downsample {
    norm: LayerNorm,
    conv: Conv2d,
}

/// A ConvNeXt; see the [module docs](self).
#[derive(Module, Debug)]
pub struct ConvNext {
    stem: Conv2d,
    stem_norm: LayerNorm,
    blocks: Vec<ConvNextBlock>,
    downsamples: Vec<Downsample>,
    head_norm: LayerNorm,
    pub(crate) head: Linear,
    #[module(skip)]
    kind: ConvNextKind,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    depths: [usize; 4],
    #[module(skip)]
    stem_k: usize,
}

/// LayerNorm over the channels of `[N, C, H, W]` (torchvision's `LayerNorm2d`).
fn norm2d(norm: &LayerNorm, x: Tensor<4>) -> Tensor<4> {
    crate::kernels::layer_norm(norm, LN_EPS, x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}

impl ConvNextConfig {
    /// Checks the config and builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes, no input channels, a zero depth
    /// or width, or a stochastic-depth rate outside [0, 1).
    pub fn init(&self, device: &Device) -> Result<ConvNext, ModelError> {
        crate::error::check_num_classes(self.num_classes)?;
        let (depths, widths, sd) = self.kind.plan();
        let (depths, widths) = (self.depths.unwrap_or(depths), self.widths.unwrap_or(widths));
        let sd = self.stochastic_depth.unwrap_or(sd);
        let invalid = |field, value: String, reason| ModelError::InvalidConfig { field, value, reason };
        if self.in_channels == 0 {
            return Err(invalid("in_channels", "0".into(), "must be at least 1"));
        }
        if depths.contains(&0) || widths.contains(&0) {
            return Err(invalid(
                "depths/widths",
                format!("{depths:?} / {widths:?}"),
                "every stage needs at least one block and one channel",
            ));
        }
        if !(0.0..1.0).contains(&sd) {
            return Err(invalid("stochastic_depth", sd.to_string(), "must be in [0, 1)"));
        }
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, groups: usize| {
            let pad = if k == 7 { 3 } else { 0 };
            let mut c = Conv2dConfig::new([c_in, c_out], [k, k])
                .with_stride([stride, stride])
                .with_groups(groups)
                .with_padding(burn::nn::PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_initializer(init.clone())
                .init(device);
            c.bias = Some(Param::from_tensor(Tensor::zeros([c_out], device)));
            c
        };
        let linear = |d_in: usize, d_out: usize| {
            let mut l = LinearConfig::new(d_in, d_out)
                .with_initializer(init.clone())
                .init(device);
            l.bias = Some(Param::from_tensor(Tensor::zeros([d_out], device)));
            l
        };
        let norm = |d: usize| LayerNormConfig::new(d).with_epsilon(LN_EPS).init(device);
        let stem_k = if self.small_input { 2 } else { 4 };
        let total: usize = depths.iter().sum();
        let mut blocks = Vec::with_capacity(total);
        let mut downsamples = Vec::with_capacity(3);
        for (s, (&n, &dim)) in depths.iter().zip(&widths).enumerate() {
            for _ in 0..n {
                // torchvision: rate · block_id / (total − 1).
                let rate = if total > 1 {
                    sd * blocks.len() as f64 / (total - 1) as f64
                } else {
                    0.0
                };
                blocks.push(ConvNextBlock {
                    dwconv: conv(dim, dim, 7, 1, dim),
                    norm: norm(dim),
                    pw1: linear(dim, 4 * dim),
                    pw2: linear(4 * dim, dim),
                    layer_scale: Param::from_tensor(
                        Tensor::ones([dim, 1, 1], device).mul_scalar(self.layer_scale),
                    ),
                    drop: StochasticDepth::new(rate),
                });
            }
            if s < 3 {
                downsamples.push(Downsample {
                    norm: norm(dim),
                    conv: conv(dim, widths[s + 1], 2, 2, 1),
                });
            }
        }
        Ok(ConvNext {
            stem: conv(self.in_channels, widths[0], stem_k, stem_k, 1),
            stem_norm: norm(widths[0]),
            blocks,
            downsamples,
            head_norm: norm(widths[3]),
            head: linear(widths[3], self.num_classes),
            kind: self.kind,
            in_channels: self.in_channels,
            depths,
            stem_k,
        })
    }
}

impl ConvNext {
    /// `[N, C, H, W]` → `[N, classes]` logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = norm2d(&self.stem_norm, crate::kernels::conv2d(&self.stem, x));
        let mut blocks = self.blocks.iter();
        for (s, &n) in self.depths.iter().enumerate() {
            for b in blocks.by_ref().take(n) {
                x = b.forward(x);
            }
            if let Some(d) = self.downsamples.get(s) {
                x = crate::kernels::conv2d(&d.conv, norm2d(&d.norm, x));
            }
        }
        let x: Tensor<2> = x.mean_dim(2).mean_dim(3).flatten(1, 3);
        self.head
            .forward(crate::kernels::layer_norm(&self.head_norm, LN_EPS, x))
    }

    /// Which ConvNeXt this is.
    pub fn kind(&self) -> ConvNextKind {
        self.kind
    }

    /// Per-layer output shapes, parameters and MACs for an input of `[C, H, W]`.
    pub fn summary(&self, input: [usize; 3]) -> crate::Summary {
        let mut rows = Vec::new();
        let conv_row = |layer: String, conv: &Conv2d, [_, h, w]: [usize; 3]| {
            let [co, ci, kh, kw] = crate::summary::lazy_dims(&conv.weight);
            let (s, p) = (conv.stride[0], if kh == 7 { 3 } else { 0 });
            // Saturating: a summary of an input too small for the model (check_input refuses it
            // before any layer runs) must not panic.
            let size = |n: usize, k: usize| (n + 2 * p).saturating_sub(k) / s + 1;
            let out = [co, size(h, kh), size(w, kw)];
            let row = crate::Row {
                layer,
                output: out.to_vec(),
                params: conv.num_params(),
                macs: (kh * kw * ci * co * out[1] * out[2]) as u64,
            };
            (row, out)
        };
        let ln_row = |norm: &LayerNorm, shape: [usize; 3]| crate::Row {
            layer: "LayerNorm (channels)".into(),
            output: shape.to_vec(),
            params: norm.num_params(),
            macs: 0,
        };
        let k = self.stem_k;
        let (row, mut shape) = conv_row(format!("Conv{k}x{k}(stride {k}, bias)"), &self.stem, input);
        rows.push(row);
        rows.push(ln_row(&self.stem_norm, shape));
        let mut blocks = self.blocks.iter().enumerate();
        for (s, &n) in self.depths.iter().enumerate() {
            for (i, b) in blocks.by_ref().take(n) {
                let [c, h, w] = shape;
                let (row, _) = conv_row(format!("block {i}: Conv7x7(depthwise, bias)"), &b.dwconv, shape);
                rows.push(row);
                rows.push(crate::Row {
                    layer: format!(
                        "block {i}: LayerNorm → Linear({c}→{}) → GELU → Linear → scale (+ input)",
                        4 * c
                    ),
                    output: shape.to_vec(),
                    params: b.norm.num_params() + b.pw1.num_params() + b.pw2.num_params() + c,
                    macs: (2 * 4 * c * c * h * w) as u64,
                });
            }
            if let Some(d) = self.downsamples.get(s) {
                rows.push(ln_row(&d.norm, shape));
                let (row, out) = conv_row("Conv2x2(stride 2, bias)".into(), &d.conv, shape);
                rows.push(row);
                shape = out;
            }
        }
        rows.push(crate::summary::global_pool_row(shape[0]));
        rows.push(ln_row(&self.head_norm, [shape[0], 1, 1]));
        rows.push(crate::summary::linear_row(&self.head, |i, o| {
            format!("Linear({i}→{o}, bias)")
        }));
        crate::Summary {
            model: self.kind.name().to_string(),
            input,
            rows,
        }
    }
}

impl Classifier for ConvNext {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        // The stem and three 2x2 stride-2 downsamplings need stem_k · 8 pixels.
        crate::error::check_nchw(dims, "ConvNeXt", self.in_channels, self.stem_k * 8)
    }

    fn summary(&self, input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(ConvNext::summary(self, input_chw))
    }
}

impl FineTune for ConvNext {
    const HEAD_PATTERN: &'static str = r"^head\.";

    fn head(&self) -> &Linear {
        &self.head
    }

    fn head_mut(&mut self) -> &mut Linear {
        &mut self.head
    }

    /// timm's grouping of its ConvNeXt: the stem; one layer per block, a stage's downsampling
    /// with its first block; the final LayerNorm with the head.
    fn lr_layers(&self) -> Option<Vec<Vec<String>>> {
        let mut layers = vec![vec![r"^stem\.".to_string(), r"^stem_norm\.".to_string()]];
        let mut i = 0;
        for (s, &n) in self.depths.iter().enumerate() {
            for b in 0..n {
                let mut layer = vec![format!(r"^blocks\.{i}\.")];
                if b == 0 && s > 0 {
                    layer.push(format!(r"^downsamples\.{}\.", s - 1));
                }
                layers.push(layer);
                i += 1;
            }
        }
        layers.push(vec![r"^head_norm\.".to_string(), r"^head\.".to_string()]);
        Some(layers)
    }
}

/// LayerNorm over the channels of NCHW: transpose, normalise, transpose back.
fn norm2d_onnx(g: &mut OnnxGraph, scope: &str, norm: &LayerNorm, x: &str) -> Result<String, ModelError> {
    let t = crate::onnx::transpose(g, &format!("{scope}.to_nhwc"), x, &[0, 2, 3, 1]);
    let y = crate::onnx::layer_norm(g, scope, norm, LN_EPS, &t)?;
    Ok(crate::onnx::transpose(
        g,
        &format!("{scope}.to_nchw"),
        &y,
        &[0, 3, 1, 2],
    ))
}

impl ZooModel for ConvNext {
    /// `(torchvision prefix, kiln prefix)` pairs: `features.0.{0,1}` the stem, stage `s` at
    /// `features.{1+2s}` (block parts `block.0` depthwise, `block.2` LayerNorm, `block.3` and
    /// `block.5` the linear layers, `layer_scale`), downsampling `s` at `features.{2+2s}`,
    /// `classifier.0`/`.2` the head's LayerNorm and linear layer.
    fn torchvision_prefixes(&self) -> Option<Vec<(String, String)>> {
        let mut pairs = vec![
            ("features.0.0.".to_string(), "stem.".to_string()),
            ("features.0.1.".to_string(), "stem_norm.".to_string()),
        ];
        let mut i = 0;
        for (s, &n) in self.depths.iter().enumerate() {
            for b in 0..n {
                let tv = format!("features.{}.{b}", 1 + 2 * s);
                for (part, kiln) in [
                    ("block.0.", "dwconv."),
                    ("block.2.", "norm."),
                    ("block.3.", "pw1."),
                    ("block.5.", "pw2."),
                ] {
                    pairs.push((format!("{tv}.{part}"), format!("blocks.{i}.{kiln}")));
                }
                pairs.push((format!("{tv}.layer_scale"), format!("blocks.{i}.layer_scale")));
                i += 1;
            }
            if s < 3 {
                let tv = format!("features.{}", 2 + 2 * s);
                pairs.push((format!("{tv}.0."), format!("downsamples.{s}.norm.")));
                pairs.push((format!("{tv}.1."), format!("downsamples.{s}.conv.")));
            }
        }
        pairs.push(("classifier.0.".into(), "head_norm.".into()));
        pairs.push(("classifier.2.".into(), "head.".into()));
        Some(pairs)
    }

    fn onnx(&self, g: &mut OnnxGraph, x: &str) -> Result<String, ModelError> {
        let x = self.stem.onnx(g, "stem", x)?;
        let mut x = norm2d_onnx(g, "stem_norm", &self.stem_norm, &x)?;
        let mut blocks = self.blocks.iter().enumerate();
        for (s, &n) in self.depths.iter().enumerate() {
            for (i, b) in blocks.by_ref().take(n) {
                let scope = format!("blocks.{i}");
                let y = b.dwconv.onnx(g, &format!("{scope}.dwconv"), &x)?;
                let y = crate::onnx::transpose(g, &format!("{scope}.to_nhwc"), &y, &[0, 2, 3, 1]);
                let y = crate::onnx::layer_norm(g, &format!("{scope}.norm"), &b.norm, LN_EPS, &y)?;
                let y = crate::onnx::linear_nd(g, &format!("{scope}.pw1"), &b.pw1, &y)?;
                let y = Activation::Gelu.onnx(g, &format!("{scope}.pw1"), &y)?;
                let y = crate::onnx::linear_nd(g, &format!("{scope}.pw2"), &b.pw2, &y)?;
                let y = crate::onnx::transpose(g, &format!("{scope}.to_nchw"), &y, &[0, 3, 1, 2]);
                let dim = b.layer_scale.shape().dims::<3>()[0];
                let values = crate::onnx::param_values(&b.layer_scale, &scope)?;
                let ls = g.weight(&format!("{scope}.layer_scale"), &[dim, 1, 1], values);
                let y = g.node("Mul", &format!("{scope}.scale"), &[&y, &ls], Vec::new());
                x = g.node("Add", &format!("{scope}.add"), &[&y, &x], Vec::new());
            }
            if let Some(d) = self.downsamples.get(s) {
                let scope = format!("downsamples.{s}");
                let y = norm2d_onnx(g, &format!("{scope}.norm"), &d.norm, &x)?;
                x = d.conv.onnx(g, &format!("{scope}.conv"), &y)?;
            }
        }
        let x = g.node("GlobalAveragePool", "avg", &[&x], Vec::new());
        let x = crate::onnx::flatten(g, "", &x);
        let x = crate::onnx::layer_norm(g, "head_norm", &self.head_norm, LN_EPS, &x)?;
        self.head.onnx(g, "head", &x)
    }
}

/// `[model] name = "convnext"`: a ConvNeXt, registered in [`crate::zoo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvNextArch {
    /// `tiny` or `small`.
    pub variant: ConvNextKind,
    /// Blocks per stage in place of the variant's.
    #[serde(default)]
    pub depths: Option<[usize; 4]>,
    /// Widths per stage in place of the variant's.
    #[serde(default)]
    pub widths: Option<[usize; 4]>,
    /// The last block's stochastic-depth rate (default: the variant's).
    #[serde(default)]
    pub stochastic_depth: Option<f64>,
    /// A 2×2 stride-2 stem, for 28×28 / 32×32 images.
    #[serde(default)]
    pub small_input: bool,
    /// ConvNeXt normalises with LayerNorm: BatchNorm cannot be switched on (an error if `true`;
    /// the registry's ablation switch reads `false`).
    #[serde(default, skip_serializing)]
    pub batch_norm: bool,
    /// ConvNeXt starts as torchvision does (N(0, 0.02²)); another scheme is an error.
    #[serde(default, skip_serializing)]
    pub init: Option<InitScheme>,
}

impl Architecture for ConvNextArch {
    type Model = ConvNext;

    fn presets() -> Vec<Preset<Self>> {
        let arch = |variant, small_input| ConvNextArch {
            variant,
            depths: None,
            widths: None,
            stochastic_depth: None,
            small_input,
            batch_norm: false,
            init: None,
        };
        vec![
            Preset {
                name: "convnext_tiny",
                about: "torchvision's ConvNeXt-Tiny (torchvision weights import)",
                config: arch(ConvNextKind::Tiny, false),
            },
            Preset {
                name: "convnext_small",
                about: "torchvision's ConvNeXt-Small",
                config: arch(ConvNextKind::Small, false),
            },
            Preset {
                name: "cifar-convnext_tiny",
                about: "ConvNeXt-Tiny with a 2x2 stride-2 stem (28x28 / 32x32 inputs)",
                config: arch(ConvNextKind::Tiny, true),
            },
        ]
    }

    fn build(
        &self,
        [c, _, _]: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<ConvNext, ModelError> {
        crate::zoo::refuse_batch_norm_and_init(
            self.batch_norm,
            self.init,
            [
                "ConvNeXt normalises with LayerNorm and has no BatchNorm to switch on",
                "ConvNeXt starts as torchvision does (N(0, 0.02^2) weights, zero biases)",
            ],
        )?;
        ConvNextConfig::new(self.variant)
            .with_in_channels(c)
            .with_num_classes(num_classes)
            .with_depths(self.depths)
            .with_widths(self.widths)
            .with_stochastic_depth(self.stochastic_depth)
            .with_small_input(self.small_input)
            .init(device)
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
        if let Some(d) = self.depths {
            notes.push_str(&format!(", depths {d:?}"));
        }
        if let Some(w) = self.widths {
            notes.push_str(&format!(", widths {w:?}"));
        }
        if self.small_input {
            notes.push_str(", 2x2 stem");
        }
        format!(
            "{}({c}x{h}x{w} -> {num_classes} classes{notes})",
            self.variant.name()
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
    fn parameter_counts_and_macs_equal_torchvision() {
        // torchvision's model cards: num_params 28,589,128 / 50,223,688, "_ops" 4.456 / 8.684
        // GFLOPS (multiply-adds) at 224x224. ConvNeXt has no BatchNorm buffers.
        let d = Device::flex();
        for (kind, params, gmacs) in [
            (ConvNextKind::Tiny, 28_589_128, 4.456),
            (ConvNextKind::Small, 50_223_688, 8.684),
        ] {
            let m = ConvNextConfig::new(kind).with_num_classes(1000).init(&d).unwrap();
            crate::summary::assert_model_card(&format!("{kind:?}"), &m, [3, 224, 224], params, gmacs);
        }
    }

    #[test]
    fn small_images_are_refused_before_any_layer_and_summaries_do_not_panic() {
        let d = Device::flex();
        let m = ConvNextConfig::new(ConvNextKind::Tiny)
            .with_depths(Some([1, 1, 1, 1]))
            .with_widths(Some([8, 8, 8, 8]))
            .init(&d)
            .unwrap();
        // 28x28 shrinks to 7, 3, 1 and then nothing: refused, naming the 32x32 it needs.
        let err = m.check_input(&[2, 3, 28, 28]).unwrap_err().to_string();
        assert!(err.contains("32"), "{err}");
        assert!(m.check_input(&[2, 3, 32, 32]).is_ok());
        assert_eq!(m.summary([3, 28, 28]).rows.last().unwrap().output, vec![10]);
        let small = ConvNextConfig::new(ConvNextKind::Tiny)
            .with_small_input(true)
            .with_depths(Some([1, 1, 1, 1]))
            .with_widths(Some([8, 8, 8, 8]))
            .init(&d)
            .unwrap();
        assert!(small.check_input(&[2, 1, 28, 28]).is_err(), "three channels");
        assert!(
            small.check_input(&[2, 3, 28, 28]).is_ok(),
            "the 2x2 stem takes 28x28"
        );
        assert_eq!(small.logits(Tensor::zeros([1, 3, 28, 28], &d)).dims(), [1, 10]);
    }
}
