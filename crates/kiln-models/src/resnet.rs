//! ResNets: torchvision's ResNet-18/34/50 (ImageNet stem) and the CIFAR family (3×3 stem, no
//! max-pool): ResNet-20/56 (He et al. 2016, §4.2, with 1×1-conv projection shortcuts) and the
//! CIFAR ResNet-18 (ImageNet widths, CIFAR stem).
//!
//! Every convolution is a [`ConvBnAct`]: no bias, BatchNorm, ReLU; the last BatchNorm of each
//! residual branch has no activation (ReLU comes after the addition) and can start at γ = 0
//! (`zero_init_residual`, torchvision's option). Parameter counts equal torchvision's.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, ResNetConfig, ResNetKind};
//!
//! let device = Device::flex();
//! let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device)?;
//! assert_eq!(model.logits(Tensor::<4>::zeros([2, 3, 32, 32], &device)).dims(), [2, 10]);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::config::Config;
use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, PaddingConfig2d};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::blocks::{Activation, ConvBnAct, ConvBnActConfig};
use crate::init::InitScheme;
use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{Classifier, ModelError};

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResNetKind {
    /// torchvision `resnet18`: basic blocks [2, 2, 2, 2], widths 64–512, 7×7 stem + max-pool.
    #[serde(rename = "resnet18")]
    ResNet18,
    /// torchvision `resnet34`: basic blocks [3, 4, 6, 3].
    #[serde(rename = "resnet34")]
    ResNet34,
    /// torchvision `resnet50`: bottleneck blocks [3, 4, 6, 3] (stride on the 3×3, "v1.5").
    #[serde(rename = "resnet50")]
    ResNet50,
    /// CIFAR ResNet-20: 3 stages of 3 basic blocks, widths 16/32/64, 3×3 stem.
    #[serde(rename = "cifar-resnet20")]
    Cifar20,
    /// CIFAR ResNet-56: 3 stages of 9 basic blocks.
    #[serde(rename = "cifar-resnet56")]
    Cifar56,
    /// ResNet-18 widths and blocks with the CIFAR 3×3 stem and no max-pool.
    #[serde(rename = "cifar-resnet18")]
    Cifar18,
}

impl ResNetKind {
    /// (bottleneck?, blocks per stage, widths per stage, stem width, ImageNet stem?).
    fn plan(self) -> (bool, &'static [usize], &'static [usize], usize, bool) {
        const W4: &[usize] = &[64, 128, 256, 512];
        match self {
            ResNetKind::ResNet18 => (false, &[2, 2, 2, 2], W4, 64, true),
            ResNetKind::ResNet34 => (false, &[3, 4, 6, 3], W4, 64, true),
            ResNetKind::ResNet50 => (true, &[3, 4, 6, 3], W4, 64, true),
            ResNetKind::Cifar20 => (false, &[3, 3, 3], &[16, 32, 64], 16, false),
            ResNetKind::Cifar56 => (false, &[9, 9, 9], &[16, 32, 64], 16, false),
            ResNetKind::Cifar18 => (false, &[2, 2, 2, 2], W4, 64, false),
        }
    }

    /// Every kind, in the order `--model` lists them.
    pub const ALL: [ResNetKind; 6] = [
        ResNetKind::ResNet18,
        ResNetKind::ResNet34,
        ResNetKind::ResNet50,
        ResNetKind::Cifar20,
        ResNetKind::Cifar56,
        ResNetKind::Cifar18,
    ];

    /// The registry name (`resnet18`, `cifar-resnet20`): `--model` and run files' `depth`.
    pub fn id(self) -> &'static str {
        match self {
            ResNetKind::ResNet18 => "resnet18",
            ResNetKind::ResNet34 => "resnet34",
            ResNetKind::ResNet50 => "resnet50",
            ResNetKind::Cifar20 => "cifar-resnet20",
            ResNetKind::Cifar56 => "cifar-resnet56",
            ResNetKind::Cifar18 => "cifar-resnet18",
        }
    }

    /// What `--help` says of it.
    fn about(self) -> &'static str {
        match self {
            ResNetKind::ResNet18 => "torchvision's ResNet-18 (ImageNet stem; torchvision weights import)",
            ResNetKind::ResNet34 => "torchvision's ResNet-34",
            ResNetKind::ResNet50 => "torchvision's ResNet-50 (bottlenecks)",
            ResNetKind::Cifar20 => "CIFAR ResNet-20 (3x3 stem, widths 16/32/64; small inputs)",
            ResNetKind::Cifar56 => "CIFAR ResNet-56",
            ResNetKind::Cifar18 => "ResNet-18 with the CIFAR 3x3 stem (small inputs)",
        }
    }

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            ResNetKind::ResNet18 => "ResNet-18",
            ResNetKind::ResNet34 => "ResNet-34",
            ResNetKind::ResNet50 => "ResNet-50",
            ResNetKind::Cifar20 => "CIFAR ResNet-20",
            ResNetKind::Cifar56 => "CIFAR ResNet-56",
            ResNetKind::Cifar18 => "CIFAR ResNet-18",
        }
    }
}

/// `(torchvision prefix, kiln prefix)` pairs of a ResNet's stem and stages, each ending in a dot
/// (`layerL.B.convJ` → `blocks.G.branch.J-1.conv`, `downsample.0/1` → `shortcut.conv/bn`).
fn resnet_prefixes(kind: ResNetKind) -> Vec<(String, String)> {
    let (_, depths, _, _, _) = kind.plan();
    let mut pairs = vec![
        ("conv1.".to_string(), "stem.conv.".to_string()),
        ("bn1.".to_string(), "stem.bn.".to_string()),
    ];
    let mut g = 0;
    for (l, &n) in depths.iter().enumerate() {
        for b in 0..n {
            let prefix = format!("layer{}.{b}.", l + 1);
            for j in 1..=3 {
                pairs.push((
                    format!("{prefix}conv{j}."),
                    format!("blocks.{g}.branch.{}.conv.", j - 1),
                ));
                pairs.push((
                    format!("{prefix}bn{j}."),
                    format!("blocks.{g}.branch.{}.bn.", j - 1),
                ));
            }
            pairs.push((
                format!("{prefix}downsample.0."),
                format!("blocks.{g}.shortcut.conv."),
            ));
            pairs.push((
                format!("{prefix}downsample.1."),
                format!("blocks.{g}.shortcut.bn."),
            ));
            g += 1;
        }
    }
    pairs
}

/// Configuration of [`ResNet`].
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Which ResNet.
    pub kind: ResNetKind,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Start the last BatchNorm γ of every residual branch at 0.
    #[config(default = false)]
    pub zero_init_residual: bool,
    /// Weight initialisation (torchvision's: Kaiming normal, fan_out, ReLU).
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
    /// BatchNorm after every convolution (false, for ablations: the convolutions get zero-initialised
    /// biases instead; torchvision weights then no longer fit).
    #[config(default = true)]
    pub batch_norm: bool,
}

/// One residual block: a chain of conv blocks plus an identity or projection shortcut.
#[derive(Module, Debug)]
pub struct ResBlock {
    branch: Vec<ConvBnAct>,
    shortcut: Option<ConvBnAct>,
}

impl ResBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let skip = match &self.shortcut {
            Some(s) => s.forward(x.clone()),
            None => x.clone(),
        };
        let y = self.branch.iter().fold(x, |h, b| b.forward(h));
        crate::kernels::add_relu(y, skip)
    }
}

/// A ResNet; see the [module docs](self).
#[derive(Module, Debug)]
pub struct ResNet {
    pub(crate) stem: ConvBnAct,
    pool: Option<MaxPool2d>,
    blocks: Vec<ResBlock>,
    avg: AdaptiveAvgPool2d,
    pub(crate) fc: Linear,
    #[module(skip)]
    kind: ResNetKind,
    #[module(skip)]
    in_channels: usize,
}

/// A ResNet without its pooling and classifier — the stem and the residual stages — whose
/// [`forward_stages`](Self::forward_stages) returns every stage's output: the body of a detection
/// backbone (torchvision's `IntermediateLayerGetter` over `layer1`..`layer4`).
#[derive(Module, Debug)]
pub struct ResNetBody {
    stem: ConvBnAct,
    pool: Option<MaxPool2d>,
    blocks: Vec<ResBlock>,
    #[module(skip)]
    kind: ResNetKind,
}

impl ResNetBody {
    /// `[N, C, H, W]` → each stage's output, in order (`layer1`..`layer4` for the ImageNet kinds).
    pub fn forward_stages(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.stem.forward(x);
        if let Some(p) = &self.pool {
            x = p.forward(x);
        }
        let (_, depths, _, _, _) = self.kind.plan();
        let mut blocks = self.blocks.iter();
        let mut out = Vec::with_capacity(depths.len());
        for &n in depths {
            for b in blocks.by_ref().take(n) {
                x = b.forward(x);
            }
            out.push(x.clone());
        }
        out
    }

    /// Output channels of each stage.
    pub fn stage_channels(&self) -> Vec<usize> {
        let (bottleneck, _, widths, _, _) = self.kind.plan();
        widths
            .iter()
            .map(|w| if bottleneck { w * 4 } else { *w })
            .collect()
    }

    /// Which ResNet it is the body of.
    pub fn kind(&self) -> ResNetKind {
        self.kind
    }

    /// `(torchvision prefix, kiln prefix)` pairs for the body under `tv` and `kiln` prefixes.
    pub(crate) fn torchvision_prefixes(&self, tv: &str, kiln: &str) -> Vec<(String, String)> {
        resnet_prefixes(self.kind)
            .into_iter()
            .map(|(t, k)| (format!("{tv}{t}"), format!("{kiln}{k}")))
            .collect()
    }
}

impl ResNetConfig {
    /// Builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes or zero input channels.
    pub fn init(&self, device: &Device) -> Result<ResNet, ModelError> {
        crate::error::check_num_classes(self.num_classes)?;
        if self.in_channels == 0 {
            return Err(ModelError::InvalidConfig {
                field: "in_channels",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let (bottleneck, depths, widths, stem_width, imagenet) = self.kind.plan();
        let conv = |c_in: usize, c_out: usize, k: usize, stride: usize, act: Activation, zero: bool| {
            ConvBnActConfig::new(c_in, c_out, k)
                .with_stride(stride)
                .with_activation(act)
                .with_zero_gamma(zero)
                .with_batch_norm(self.batch_norm)
                .with_init(self.init)
                .init(device)
        };
        let stem_k = if imagenet { 7 } else { 3 };
        let stem = conv(
            self.in_channels,
            stem_width,
            stem_k,
            if imagenet { 2 } else { 1 },
            Activation::Relu,
            false,
        );
        let pool = imagenet.then(|| {
            MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init()
        });
        let expansion = if bottleneck { 4 } else { 1 };
        let zero = self.zero_init_residual;
        let mut blocks = Vec::new();
        let mut c = stem_width;
        for (stage, (&n, &w)) in depths.iter().zip(widths).enumerate() {
            for b in 0..n {
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                let out = w * expansion;
                let branch = if bottleneck {
                    vec![
                        conv(c, w, 1, 1, Activation::Relu, false),
                        conv(w, w, 3, stride, Activation::Relu, false),
                        conv(w, out, 1, 1, Activation::Identity, zero),
                    ]
                } else {
                    vec![
                        conv(c, w, 3, stride, Activation::Relu, false),
                        conv(w, out, 3, 1, Activation::Identity, zero),
                    ]
                };
                let shortcut =
                    (stride != 1 || c != out).then(|| conv(c, out, 1, stride, Activation::Identity, false));
                blocks.push(ResBlock { branch, shortcut });
                c = out;
            }
        }
        // torchvision leaves `fc` at nn.Linear's default init.
        let fc = crate::init::classifier_head(c, self.num_classes, device);
        Ok(ResNet {
            stem,
            pool,
            blocks,
            avg: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc,
            kind: self.kind,
            in_channels: self.in_channels,
        })
    }
}

impl ResNet {
    /// `[N, C, H, W]` → `[N, classes]` logits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = self.stem.forward(x);
        if let Some(p) = &self.pool {
            x = p.forward(x);
        }
        for b in &self.blocks {
            x = b.forward(x);
        }
        let x: Tensor<2> = self.avg.forward(x).flatten(1, 3);
        self.fc.forward(x)
    }

    /// Which ResNet this is.
    pub fn kind(&self) -> ResNetKind {
        self.kind
    }

    /// The stem and stages without the pooling and classifier (for detection backbones).
    pub fn into_body(self) -> ResNetBody {
        ResNetBody {
            stem: self.stem,
            pool: self.pool,
            blocks: self.blocks,
            kind: self.kind,
        }
    }

    /// torchvision's state-dict names → this model's parameter paths, as `(regex, replacement)`
    /// pairs (`layerL.B.convJ` → `blocks.G.branch.J-1.conv`, `downsample.0/1` → `shortcut.conv/bn`).
    pub fn torchvision_key_map(&self) -> Vec<(String, String)> {
        crate::import::prefix_map(self.torchvision_prefixes(), false)
    }

    /// This model's parameter paths → torchvision's state-dict names: the inverse of
    /// [`torchvision_key_map`](Self::torchvision_key_map), used by the safetensors export.
    pub fn torchvision_export_key_map(&self) -> Vec<(String, String)> {
        crate::import::prefix_map(self.torchvision_prefixes(), true)
    }

    /// `(torchvision prefix, kiln prefix)` pairs, each ending in a dot.
    fn torchvision_prefixes(&self) -> Vec<(String, String)> {
        resnet_prefixes(self.kind)
    }

    /// Per-layer output shapes, parameters and MACs for an input of `[C, H, W]`.
    pub fn summary(&self, input: [usize; 3]) -> crate::Summary {
        let mut rows = Vec::new();
        let (row, mut shape) = self.stem.summarize(input);
        rows.push(row);
        if self.pool.is_some() {
            // 3x3, stride 2, padding 1.
            shape = [shape[0], (shape[1] + 2 - 3) / 2 + 1, (shape[2] + 2 - 3) / 2 + 1];
            rows.push(crate::Row {
                layer: "MaxPool3x3(stride 2)".into(),
                output: shape.to_vec(),
                params: 0,
                macs: 0,
            });
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let block_in = shape;
            for conv in &block.branch {
                let (mut row, out) = conv.summarize(shape);
                row.layer = format!("block {i}: {}", row.layer);
                rows.push(row);
                shape = out;
            }
            if let Some(s) = &block.shortcut {
                let (mut row, _) = s.summarize(block_in);
                row.layer = format!("block {i} shortcut: {}", row.layer);
                rows.push(row);
            }
        }
        rows.push(crate::summary::global_pool_row(shape[0]));
        rows.push(crate::summary::linear_row(&self.fc, |i, o| {
            format!("Linear({i}→{o}, bias)")
        }));
        crate::Summary {
            model: self.kind.name().to_string(),
            input,
            rows,
        }
    }
}

/// `[model] name = "resnet"`: a ResNet of the zoo, registered in [`crate::zoo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResNetArch {
    /// Which one.
    pub depth: ResNetKind,
    /// BatchNorm after every convolution.
    #[serde(default = "crate::zoo::yes")]
    pub batch_norm: bool,
    /// Weight initialisation (torchvision's Kaiming normal, fan-out, by default).
    #[serde(default)]
    pub init: Option<InitScheme>,
}

impl Architecture for ResNetArch {
    type Model = ResNet;

    fn presets() -> Vec<Preset<Self>> {
        ResNetKind::ALL
            .into_iter()
            .map(|kind| Preset {
                name: kind.id(),
                about: kind.about(),
                config: ResNetArch {
                    depth: kind,
                    batch_norm: true,
                    init: None,
                },
            })
            .collect()
    }

    fn build(
        &self,
        [c, _, _]: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<ResNet, ModelError> {
        let mut m = ResNetConfig::new(self.depth)
            .with_in_channels(c)
            .with_num_classes(num_classes)
            .with_batch_norm(self.batch_norm);
        if let Some(init) = self.init {
            m = m.with_init(init);
        }
        m.init(device)
    }

    fn id(&self) -> String {
        self.depth.id().to_string()
    }

    fn describe(&self, [c, h, w]: [usize; 3], num_classes: usize) -> String {
        format!(
            "{}({c}x{h}x{w} -> {num_classes} classes{})",
            self.depth.name(),
            crate::zoo::bn_note(self.batch_norm)
        )
    }

    fn default_input(&self) -> [usize; 3] {
        if self.depth.plan().4 {
            [3, 224, 224]
        } else {
            [3, 32, 32]
        }
    }

    fn batch_norm_mut(&mut self) -> &mut bool {
        &mut self.batch_norm
    }

    fn init_mut(&mut self) -> &mut Option<InitScheme> {
        &mut self.init
    }
}

impl ZooModel for ResNet {
    fn onnx(&self, g: &mut crate::onnx::OnnxGraph, x: &str) -> Result<String, ModelError> {
        use crate::onnx::OnnxLayer;
        let mut x = self.stem.onnx(g, "stem", x)?;
        if let Some(p) = &self.pool {
            x = p.onnx(g, "pool", &x)?;
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let scope = format!("blocks.{i}");
            let skip = match &block.shortcut {
                Some(s) => s.onnx(g, &format!("{scope}.shortcut"), &x)?,
                None => x.clone(),
            };
            let mut y = x;
            for (j, conv) in block.branch.iter().enumerate() {
                y = conv.onnx(g, &format!("{scope}.branch.{j}"), &y)?;
            }
            let sum = g.node("Add", &format!("{scope}.add"), &[&y, &skip], Vec::new());
            x = g.node("Relu", &format!("{scope}.relu"), &[&sum], Vec::new());
        }
        x = self.avg.onnx(g, "avg", &x)?;
        x = crate::onnx::flatten(g, "", &x);
        self.fc.onnx(g, "fc", &x)
    }

    fn torchvision_key_map(&self) -> Option<Vec<(String, String)>> {
        Some(ResNet::torchvision_key_map(self))
    }

    fn torchvision_export_key_map(&self) -> Option<Vec<(String, String)>> {
        Some(ResNet::torchvision_export_key_map(self))
    }
}

impl Classifier for ResNet {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        // Global average pooling takes any size the strides leave at least 1x1 of.
        let min = if self.pool.is_some() { 32 } else { 8 };
        crate::error::check_nchw(dims, "ResNet", self.in_channels, min)
    }

    fn summary(&self, input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(ResNet::summary(self, input_chw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;

    #[test]
    fn parameter_counts_equal_torchvision() {
        // sum(p.numel() for p in torchvision.models.resnetXX(num_classes=1000).parameters()) and the
        // BatchNorm running mean/var buffers, which Burn's num_params also counts:
        //   resnet18 11,689,512 + 9,600; resnet34 21,797,672 + 17,024; resnet50 25,557,032 + 53,120.
        // CIFAR (10 classes; same blocks in PyTorch, 1x1 projection shortcuts):
        //   resnet20 272,474 + 1,568; resnet56 855,770 + 4,256; CIFAR resnet18 11,173,962 + 9,600.
        let d = Device::flex();
        let count = |kind, classes| {
            ResNetConfig::new(kind)
                .with_num_classes(classes)
                .init(&d)
                .unwrap()
                .num_params()
        };
        assert_eq!(count(ResNetKind::ResNet18, 1000), 11_689_512 + 9_600);
        assert_eq!(count(ResNetKind::ResNet34, 1000), 21_797_672 + 17_024);
        assert_eq!(count(ResNetKind::ResNet50, 1000), 25_557_032 + 53_120);
        assert_eq!(count(ResNetKind::Cifar20, 10), 272_474 + 1_568);
        assert_eq!(count(ResNetKind::Cifar56, 10), 855_770 + 4_256);
        assert_eq!(count(ResNetKind::Cifar18, 10), 11_173_962 + 9_600);
    }

    #[test]
    fn forward_shapes_and_zero_init_residual() {
        let d = Device::flex();
        let r18 = ResNetConfig::new(ResNetKind::ResNet18)
            .with_num_classes(7)
            .init(&d)
            .unwrap();
        assert_eq!(r18.logits(Tensor::<4>::zeros([1, 3, 64, 64], &d)).dims(), [1, 7]);
        assert!(r18.check_input(&[1, 3, 16, 16]).is_err());
        let c20 = ResNetConfig::new(ResNetKind::Cifar20)
            .with_zero_init_residual(true)
            .init(&d)
            .unwrap();
        assert_eq!(c20.logits(Tensor::<4>::ones([1, 3, 32, 32], &d)).dims(), [1, 10]);
        // With the last γ at 0 a block with an identity shortcut is relu(x + 0) at start.
        d.seed(4);
        let x = Tensor::<4>::random([1, 16, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &d);
        let y = c20.blocks[0].forward(x.clone());
        let diff = (y - relu(x)).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
        assert!(
            ResNetConfig::new(ResNetKind::Cifar20)
                .with_num_classes(1)
                .init(&d)
                .is_err()
        );
        // Without BatchNorm every conv gains a bias (c_out) and loses γ, β and the running mean and
        // variance (4·c_out): 3·c_out fewer per conv.
        let with_bn = ResNetConfig::new(ResNetKind::Cifar20).init(&d).unwrap();
        let plain = ResNetConfig::new(ResNetKind::Cifar20)
            .with_batch_norm(false)
            .init(&d)
            .unwrap();
        let bn_channels: usize = 16 + 6 * 16 + 6 * 32 + 6 * 64 + 32 + 64; // stem, branches, 2 shortcuts
        assert_eq!(plain.num_params(), with_bn.num_params() - 3 * bn_channels);
        assert_eq!(
            plain.logits(Tensor::<4>::ones([1, 3, 32, 32], &d)).dims(),
            [1, 10]
        );
    }

    #[test]
    fn summary_totals_match_the_model_and_known_macs() {
        let d = Device::flex();
        let r18 = ResNetConfig::new(ResNetKind::ResNet18)
            .with_num_classes(1000)
            .init(&d)
            .unwrap();
        let s = r18.summary([3, 224, 224]);
        assert_eq!(s.params(), r18.num_params(), "every parameter is in a row");
        // torchvision resnet18 at 224x224: 1.814 GMACs (fvcore / ptflops report 1.82 G),
        // conv and linear layers only.
        let gmacs = s.macs() as f64 / 1e9;
        assert!((gmacs - 1.814).abs() < 0.01, "{gmacs}");
        assert_eq!(s.rows[1].output, vec![64, 56, 56], "after the stem and max-pool");
        assert_eq!(s.rows.last().unwrap().output, vec![1000]);
        let text = s.to_string();
        assert!(
            text.contains("block 2 shortcut: Conv1x1(64→128, stride 2, no bias)"),
            "{text}"
        );
        let c20 = ResNetConfig::new(ResNetKind::Cifar20)
            .init(&d)
            .unwrap()
            .summary([3, 32, 32]);
        // He et al.'s ResNet-20: about 41 MMACs at 32x32 (0.27 M parameters).
        assert!((c20.macs() as f64 / 1e6 - 41.0).abs() < 1.0, "{}", c20.macs());
    }
}
