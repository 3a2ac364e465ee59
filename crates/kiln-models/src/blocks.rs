//! The BatchNorm blocks: conv/linear **without bias** → BatchNorm → activation.
//!
//! The bias of a layer followed by BatchNorm is wasted (BatchNorm subtracts the mean), so it is left
//! out; built without BatchNorm (for an ablation), the layer gets its bias back. Weights follow the
//! chosen [`InitScheme`] with PyTorch's fans; biases start at zero unless the scheme is
//! `pytorch-default`; BatchNorm starts at γ = 1, β = 0 (optionally γ = 0, for the last BatchNorm of
//! a residual branch).
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::blocks::{Activation, ConvBnActConfig};
//!
//! let device = Device::flex();
//! let block = ConvBnActConfig::new(3, 16, 3).with_stride(2).init(&device);
//! let y = block.forward(Tensor::<4>::zeros([2, 3, 32, 32], &device));
//! assert_eq!(y.dims(), [2, 16, 16, 16]);
//! assert!(block.describe().starts_with("Conv3x3(3→16, stride 2, no bias) → BatchNorm → ReLU"));
//! # let _ = Activation::Gelu;
//! ```

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{hard_sigmoid, leaky_relu, relu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::init::{Fans, InitScheme};

/// The activation after a block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// `max(0, x)`.
    #[default]
    Relu,
    /// `x` for `x ≥ 0`, `slope·x` otherwise.
    LeakyRelu {
        /// The negative slope.
        negative_slope: f64,
    },
    /// The exact (erf) GELU, PyTorch's default.
    Gelu,
    /// `x·sigmoid(x)` (a.k.a. swish).
    Silu,
    /// `x·relu6(x + 3)/6` (MobileNetV3's hard swish, PyTorch's `nn.Hardswish`).
    HardSwish,
    /// `relu6(x + 3)/6` (PyTorch's `nn.Hardsigmoid`; MobileNetV3's squeeze-excitation gate).
    HardSigmoid,
    /// `1/(1 + e^−x)` (EfficientNet's squeeze-excitation gate).
    Sigmoid,
    /// No activation (e.g. the last BatchNorm of a residual branch, before the addition).
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => relu(x),
            Activation::LeakyRelu { negative_slope } => leaky_relu(x, negative_slope),
            Activation::Gelu => crate::kernels::gelu(x),
            Activation::Silu => crate::kernels::silu(x),
            Activation::HardSwish => crate::kernels::hard_swish(x),
            Activation::HardSigmoid => hard_sigmoid(x, 1.0 / 6.0, 0.5),
            Activation::Sigmoid => sigmoid(x),
            Activation::Identity => x,
        }
    }

    fn name(self) -> String {
        match self {
            Activation::Relu => "ReLU".into(),
            Activation::LeakyRelu { negative_slope } => format!("LeakyReLU({negative_slope})"),
            Activation::Gelu => "GELU".into(),
            Activation::Silu => "SiLU".into(),
            Activation::HardSwish => "Hardswish".into(),
            Activation::HardSigmoid => "Hardsigmoid".into(),
            Activation::Sigmoid => "Sigmoid".into(),
            Activation::Identity => "identity".into(),
        }
    }
}

/// Configuration of [`ConvBnAct`].
#[derive(Config, Debug, PartialEq)]
pub struct ConvBnActConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride.
    #[config(default = 1)]
    pub stride: usize,
    /// Groups (depthwise: `groups = in_channels`).
    #[config(default = 1)]
    pub groups: usize,
    /// BatchNorm after the convolution (false: the convolution keeps its bias).
    #[config(default = true)]
    pub batch_norm: bool,
    /// Start the BatchNorm's γ at 0 (the last block of a residual branch).
    #[config(default = false)]
    pub zero_gamma: bool,
    /// Activation after the BatchNorm.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Weight initialisation.
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
    /// BatchNorm's ε (PyTorch's default 1e-5; MobileNetV3 uses 1e-3).
    #[config(default = 1e-5)]
    pub bn_eps: f64,
    /// BatchNorm's running-statistics momentum, PyTorch's convention (default 0.1; MobileNetV3
    /// uses 0.01).
    #[config(default = 0.1)]
    pub bn_momentum: f64,
}

/// Conv (no bias) → BatchNorm → activation, "same" padding `kernel/2` (PyTorch's usual explicit
/// padding, not TF-style `Same`).
#[derive(Module, Debug)]
pub struct ConvBnAct {
    pub(crate) conv: Conv2d,
    pub(crate) bn: Option<BatchNorm>,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    description: String,
    /// `[c_in, c_out, kernel, stride, groups]`, for summaries.
    #[module(skip)]
    spec: [usize; 5],
}

impl ConvBnActConfig {
    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> ConvBnAct {
        let k = self.kernel;
        let pad = k / 2;
        let fans = Fans::conv2d(self.in_channels, self.out_channels, [k, k], self.groups);
        let mut conv = Conv2dConfig::new([self.in_channels, self.out_channels], [k, k])
            .with_stride([self.stride, self.stride])
            .with_groups(self.groups)
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .with_bias(!self.batch_norm)
            .with_initializer(self.init.weight_initializer_for(fans))
            .init(device);
        if conv.bias.is_some() && self.init.zero_bias() {
            conv.bias = Some(Initializer::Zeros.init([self.out_channels], device));
        }
        let bn = self.batch_norm.then(|| {
            let mut bn = BatchNormConfig::new(self.out_channels)
                .with_epsilon(self.bn_eps)
                .with_momentum(self.bn_momentum)
                .init(device);
            if self.zero_gamma {
                bn.gamma = Param::from_tensor(Tensor::zeros([self.out_channels], device));
            }
            bn
        });
        let description = format!(
            "Conv{k}x{k}({}→{}{}{}, {}) → {}{}",
            self.in_channels,
            self.out_channels,
            if self.stride > 1 {
                format!(", stride {}", self.stride)
            } else {
                String::new()
            },
            if self.groups > 1 {
                format!(", groups {}", self.groups)
            } else {
                String::new()
            },
            if self.batch_norm { "no bias" } else { "bias" },
            if self.batch_norm {
                if self.zero_gamma {
                    "BatchNorm(γ=0) → "
                } else {
                    "BatchNorm → "
                }
            } else {
                ""
            },
            self.activation.name()
        );
        ConvBnAct {
            conv,
            bn,
            activation: self.activation,
            description,
            spec: [self.in_channels, self.out_channels, k, self.stride, self.groups],
        }
    }
}

impl ConvBnAct {
    /// `[N, C_in, H, W]` → `[N, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = crate::kernels::conv2d(&self.conv, x);
        match (&self.bn, self.activation) {
            (Some(bn), Activation::Relu) => crate::kernels::batch_norm_act(bn, x, true),
            (Some(bn), Activation::Identity) => crate::kernels::batch_norm_act(bn, x, false),
            // Other activations after kiln's BatchNorm (Burn's copies the layout twice).
            (Some(bn), act) => act.apply(crate::kernels::batch_norm_act(bn, x, false)),
            (None, act) => act.apply(x),
        }
    }

    /// What the block is, in one line (for model summaries).
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The summary row of this block for an input of `[C, H, W]`, and its output `[C, H, W]`.
    pub fn summarize(&self, input: [usize; 3]) -> (crate::summary::Row, [usize; 3]) {
        let [c_in, c_out, k, stride, groups] = self.spec;
        let pad = k / 2;
        let out_hw = |n: usize| (n + 2 * pad).saturating_sub(k) / stride.max(1) + 1;
        let out = [c_out, out_hw(input[1]), out_hw(input[2])];
        let macs = (k * k * c_in / groups.max(1) * c_out * out[1] * out[2]) as u64;
        let row = crate::summary::Row {
            layer: self.description.clone(),
            output: out.to_vec(),
            params: self.num_params(),
            macs,
        };
        (row, out)
    }
}

impl crate::onnx::OnnxLayer for ConvBnAct {
    fn onnx(
        &self,
        g: &mut crate::onnx::OnnxGraph,
        scope: &str,
        x: &str,
    ) -> Result<String, crate::ModelError> {
        let (conv, bn) = (crate::onnx::path(scope, "conv"), crate::onnx::path(scope, "bn"));
        let y = crate::onnx::conv_bn(
            g,
            &conv,
            &self.conv,
            self.bn.as_ref().map(|b| (bn.as_str(), b)),
            x,
        )?;
        self.activation.onnx(g, scope, &y)
    }
}

/// Configuration of [`LinearBnAct`].
#[derive(Config, Debug, PartialEq)]
pub struct LinearBnActConfig {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// BatchNorm1d after the linear layer (false: the layer keeps its bias).
    #[config(default = true)]
    pub batch_norm: bool,
    /// Activation after the BatchNorm.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Weight initialisation.
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
}

/// Linear (no bias) → BatchNorm1d → activation.
#[derive(Module, Debug)]
pub struct LinearBnAct {
    linear: Linear,
    bn: Option<BatchNorm>,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    description: String,
}

impl LinearBnActConfig {
    /// Builds the block on `device`.
    pub fn init(&self, device: &Device) -> LinearBnAct {
        let fans = Fans::linear(self.d_in, self.d_out);
        let mut linear = LinearConfig::new(self.d_in, self.d_out)
            .with_bias(!self.batch_norm)
            .with_initializer(self.init.weight_initializer_for(fans))
            .init(device);
        if linear.bias.is_some() && self.init.zero_bias() {
            linear.bias = Some(Initializer::Zeros.init([self.d_out], device));
        }
        let bn = self
            .batch_norm
            .then(|| BatchNormConfig::new(self.d_out).init(device));
        let description = format!(
            "Linear({}→{}, {}) → {}{}",
            self.d_in,
            self.d_out,
            if self.batch_norm { "no bias" } else { "bias" },
            if self.batch_norm { "BatchNorm1d → " } else { "" },
            self.activation.name()
        );
        LinearBnAct {
            linear,
            bn,
            activation: self.activation,
            description,
        }
    }
}

impl LinearBnAct {
    /// `[N, d_in]` → `[N, d_out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = self.linear.forward(x);
        // Burn's BatchNorm takes [N, C, ...]: a length-1 axis gives BatchNorm1d semantics.
        match (&self.bn, self.activation) {
            (Some(bn), Activation::Relu) => {
                crate::kernels::batch_norm_act(bn, x.unsqueeze_dim::<3>(2), true).squeeze_dim::<2>(2)
            }
            (Some(bn), act) => act.apply(bn.forward(x.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2)),
            (None, act) => act.apply(x),
        }
    }

    /// What the block is, in one line.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The summary row of this block.
    pub fn summarize(&self) -> crate::summary::Row {
        let [d_in, d_out] = crate::summary::lazy_dims(&self.linear.weight);
        crate::summary::Row {
            layer: self.description.clone(),
            output: vec![d_out],
            params: self.num_params(),
            macs: (d_in * d_out) as u64,
        }
    }
}

impl crate::onnx::OnnxLayer for LinearBnAct {
    fn onnx(
        &self,
        g: &mut crate::onnx::OnnxGraph,
        scope: &str,
        x: &str,
    ) -> Result<String, crate::ModelError> {
        let (linear, bn) = (crate::onnx::path(scope, "linear"), crate::onnx::path(scope, "bn"));
        let y = crate::onnx::linear_bn(
            g,
            &linear,
            &self.linear,
            self.bn.as_ref().map(|b| (bn.as_str(), b)),
            x,
        )?;
        self.activation.onnx(g, scope, &y)
    }
}

/// Squeeze-excitation (torchvision's `SqueezeExcitation`): global average → 1×1 conv → `act` →
/// 1×1 conv → `gate`, times the input. MobileNetV3 gates with hard sigmoid after ReLU,
/// EfficientNet with sigmoid after SiLU.
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    pub(crate) fc1: Conv2d,
    pub(crate) fc2: Conv2d,
    #[module(skip)]
    act: Activation,
    #[module(skip)]
    gate: Activation,
}

impl SqueezeExcitation {
    /// `channels → squeeze → channels`; both 1×1 convolutions have biases (zero) and weights
    /// drawn by `init`.
    pub fn new(
        channels: usize,
        squeeze: usize,
        [act, gate]: [Activation; 2],
        init: InitScheme,
        device: &Device,
    ) -> Self {
        let fc = |a: usize, b: usize| {
            let mut c = Conv2dConfig::new([a, b], [1, 1])
                .with_initializer(init.weight_initializer_for(Fans::conv2d(a, b, [1, 1], 1)))
                .init(device);
            c.bias = Some(Param::from_tensor(Tensor::zeros([b], device)));
            c
        };
        SqueezeExcitation {
            fc1: fc(channels, squeeze),
            fc2: fc(squeeze, channels),
            act,
            gate,
        }
    }

    /// `x · gate(fc2(act(fc1(mean over H, W of x))))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s = x.clone().mean_dim(2).mean_dim(3);
        let s = self.act.apply(self.fc1.forward(s));
        x * self.gate.apply(self.fc2.forward(s))
    }

    fn summarize(&self, shape: [usize; 3]) -> crate::summary::Row {
        let [c, _, _] = shape;
        let squeeze = crate::summary::lazy_dims(&self.fc1.weight)[0];
        crate::summary::Row {
            layer: format!(
                "SqueezeExcitation({c}→{squeeze}→{c}, {}, {})",
                self.act.name(),
                self.gate.name()
            ),
            output: shape.to_vec(),
            params: self.num_params(),
            macs: (2 * c * squeeze) as u64,
        }
    }
}

impl crate::onnx::OnnxLayer for SqueezeExcitation {
    fn onnx(
        &self,
        g: &mut crate::onnx::OnnxGraph,
        scope: &str,
        x: &str,
    ) -> Result<String, crate::ModelError> {
        let path = |leaf: &str| crate::onnx::path(scope, leaf);
        let p = g.node("GlobalAveragePool", &path("pool"), &[x], Vec::new());
        let h = self.fc1.onnx(g, &path("fc1"), &p)?;
        let h = self.act.onnx(g, &path("fc1"), &h)?;
        let h = self.fc2.onnx(g, &path("fc2"), &h)?;
        let gate = self.gate.onnx(g, &path("fc2"), &h)?;
        Ok(g.node("Mul", &path("scale"), &[x, &gate], Vec::new()))
    }
}

/// Stochastic depth, torchvision's "row" mode: in training, each sample's residual branch is
/// dropped with probability `prob` and the kept ones are scaled by `1/(1 − prob)`; identity in
/// inference (and on a frozen subtree).
#[derive(Module, Debug)]
pub struct StochasticDepth {
    #[module(skip)]
    prob: f64,
    training: Param<burn::module::Flag>,
}

impl StochasticDepth {
    /// Drops with probability `prob` (in `[0, 1)`; the caller checks).
    pub fn new(prob: f64) -> Self {
        StochasticDepth {
            prob,
            training: Param::from_bool(true),
        }
    }

    /// The drop probability.
    pub fn prob(&self) -> f64 {
        self.prob
    }

    /// `[N, ...]` → the same, each sample kept or zeroed as a whole.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if self.prob == 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.prob;
        let n = x.dims()[0];
        let mask = Tensor::<4>::random(
            [n, 1, 1, 1],
            burn::tensor::Distribution::Bernoulli(keep),
            &x.device(),
        );
        x * mask.div_scalar(keep)
    }
}

/// An inverted residual (MobileNetV2/V3's and EfficientNet's MBConv): optional 1×1 expansion,
/// depthwise k×k, optional squeeze-excitation, linear 1×1 projection; the input is added back
/// (after stochastic depth, when there is one) when the shape allows.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub(crate) expand: Option<ConvBnAct>,
    pub(crate) depthwise: ConvBnAct,
    pub(crate) se: Option<SqueezeExcitation>,
    pub(crate) project: ConvBnAct,
    pub(crate) drop: Option<StochasticDepth>,
    #[module(skip)]
    pub(crate) residual: bool,
}

impl InvertedResidual {
    /// `[N, C_in, H, W]` → `[N, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        y = self.depthwise.forward(y);
        if let Some(se) = &self.se {
            y = se.forward(y);
        }
        y = self.project.forward(y);
        if !self.residual {
            return y;
        }
        match &self.drop {
            Some(d) => d.forward(y) + x,
            None => y + x,
        }
    }

    /// torchvision's `(prefix, kiln prefix)` pairs for this block: `{tv}.{j}` is its j-th part
    /// in order (expansion, depthwise, squeeze-excitation, projection; absent ones skipped).
    pub(crate) fn torchvision_prefixes(&self, tv: &str, kiln: &str, pairs: &mut Vec<(String, String)>) {
        let mut j = 0;
        let conv_bn = |pairs: &mut Vec<(String, String)>, part: &str, j: usize| {
            pairs.push((format!("{tv}.{j}.0."), format!("{kiln}.{part}.conv.")));
            pairs.push((format!("{tv}.{j}.1."), format!("{kiln}.{part}.bn.")));
        };
        if self.expand.is_some() {
            conv_bn(pairs, "expand", j);
            j += 1;
        }
        conv_bn(pairs, "depthwise", j);
        j += 1;
        if self.se.is_some() {
            pairs.push((format!("{tv}.{j}."), format!("{kiln}.se.")));
            j += 1;
        }
        conv_bn(pairs, "project", j);
    }

    /// Summary rows, named `block {i}: …`, for an input of `[C, H, W]`; returns the output shape.
    pub(crate) fn summarize(
        &self,
        i: usize,
        mut shape: [usize; 3],
        rows: &mut Vec<crate::summary::Row>,
    ) -> [usize; 3] {
        for conv in [self.expand.as_ref(), Some(&self.depthwise)]
            .into_iter()
            .flatten()
        {
            let (mut row, out) = conv.summarize(shape);
            row.layer = format!("block {i}: {}", row.layer);
            rows.push(row);
            shape = out;
        }
        if let Some(se) = &self.se {
            let mut row = se.summarize(shape);
            row.layer = format!("block {i}: {}", row.layer);
            rows.push(row);
        }
        let (mut row, out) = self.project.summarize(shape);
        row.layer = format!(
            "block {i}: {}{}",
            row.layer,
            if self.residual { " (+ input)" } else { "" }
        );
        rows.push(row);
        out
    }
}

/// The rows of an MBConv network's body (stem, blocks, last 1×1 convolution, global pooling) for
/// an input of `[C, H, W]`.
pub(crate) fn mbconv_body_rows(
    stem: &ConvBnAct,
    blocks: &[InvertedResidual],
    last: &ConvBnAct,
    input: [usize; 3],
) -> Vec<crate::summary::Row> {
    let mut rows = Vec::new();
    let (row, mut shape) = stem.summarize(input);
    rows.push(row);
    for (i, block) in blocks.iter().enumerate() {
        shape = block.summarize(i, shape, &mut rows);
    }
    let (row, out) = last.summarize(shape);
    rows.push(row);
    rows.push(crate::summary::global_pool_row(out[0]));
    rows
}

/// The ONNX nodes of an MBConv network's body, up to the flattened pooled features.
pub(crate) fn mbconv_body_onnx(
    g: &mut crate::onnx::OnnxGraph,
    [stem, last]: [&ConvBnAct; 2],
    blocks: &[InvertedResidual],
    avg: &burn::nn::pool::AdaptiveAvgPool2d,
    x: &str,
) -> Result<String, crate::ModelError> {
    use crate::onnx::OnnxLayer;
    let mut x = stem.onnx(g, "stem", x)?;
    for (i, block) in blocks.iter().enumerate() {
        x = block.onnx(g, &format!("blocks.{i}"), &x)?;
    }
    x = last.onnx(g, "last", &x)?;
    x = avg.onnx(g, "avg", &x)?;
    Ok(crate::onnx::flatten(g, "", &x))
}

impl crate::onnx::OnnxLayer for InvertedResidual {
    fn onnx(
        &self,
        g: &mut crate::onnx::OnnxGraph,
        scope: &str,
        x: &str,
    ) -> Result<String, crate::ModelError> {
        let path = |leaf: &str| crate::onnx::path(scope, leaf);
        let mut y = match &self.expand {
            Some(e) => e.onnx(g, &path("expand"), x)?,
            None => x.to_string(),
        };
        y = self.depthwise.onnx(g, &path("depthwise"), &y)?;
        if let Some(se) = &self.se {
            y = se.onnx(g, &path("se"), &y)?;
        }
        y = self.project.onnx(g, &path("project"), &y)?;
        // Stochastic depth is the identity in inference.
        Ok(if self.residual {
            g.node("Add", &path("add"), &[&y, x], Vec::new())
        } else {
            y
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn conv_block_has_no_bias_with_bn_and_a_zero_bias_without() {
        let device = Device::flex();
        let with = ConvBnActConfig::new(4, 8, 3).init(&device);
        assert!(with.conv.bias.is_none() && with.bn.is_some());
        let without = ConvBnActConfig::new(4, 8, 3).with_batch_norm(false).init(&device);
        let bias = without.conv.bias.as_ref().map(|b| values(b.val())).unwrap();
        assert_eq!(bias, vec![0.0; 8], "a chosen scheme zeroes the bias");
        assert!(without.bn.is_none());
        assert_eq!(without.describe(), "Conv3x3(4→8, bias) → ReLU");
        let default = ConvBnActConfig::new(4, 8, 3)
            .with_batch_norm(false)
            .with_init(InitScheme::PytorchDefault)
            .init(&device);
        let bias = default.conv.bias.as_ref().map(|b| values(b.val())).unwrap();
        assert!(bias.iter().any(|&b| b != 0.0), "pytorch-default draws the bias");
        assert!(
            bias.iter().all(|b| b.abs() <= 1.0 / 36f32.sqrt()),
            "U(±1/√fan_in), fan_in 4·3·3"
        );
    }

    #[test]
    fn zero_gamma_and_shapes() {
        let device = Device::flex();
        let b = ConvBnActConfig::new(3, 6, 3)
            .with_zero_gamma(true)
            .with_activation(Activation::Identity)
            .with_groups(3)
            .init(&device);
        assert_eq!(values(b.bn.as_ref().unwrap().gamma.val()), vec![0.0; 6]);
        // γ = 0 and β = 0: the branch outputs exactly zero at first (in eval mode too).
        let y = b.forward(Tensor::<4>::ones([1, 3, 5, 5], &device));
        assert_eq!(y.dims(), [1, 6, 5, 5]);
        assert!(values(y).iter().all(|&v| v == 0.0));
        assert_eq!(
            b.describe(),
            "Conv3x3(3→6, groups 3, no bias) → BatchNorm(γ=0) → identity"
        );
    }

    #[test]
    fn linear_block_and_activations() {
        let device = Device::flex();
        device.seed(1);
        let b = LinearBnActConfig::new(5, 7).init(&device);
        assert!(b.linear.bias.is_none());
        let y = b.forward(Tensor::<2>::random(
            [4, 5],
            burn::tensor::Distribution::Default,
            &device,
        ));
        assert_eq!(y.dims(), [4, 7]);
        assert!(values(y).iter().all(|&v| v >= 0.0), "ReLU output");
        assert_eq!(b.describe(), "Linear(5→7, no bias) → BatchNorm1d → ReLU");
        let x = Tensor::<1>::from_floats([-2.0, 0.0, 1.0], &device);
        // torch: F.leaky_relu(x, 0.1) = [-0.2, 0, 1]; F.silu(x) = [-0.2384, 0, 0.7311];
        // F.gelu(x) = [-0.0455, 0, 0.8413]
        let close = |a: Vec<f32>, b: [f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4);
        assert!(close(
            values(Activation::LeakyRelu { negative_slope: 0.1 }.apply(x.clone())),
            [-0.2, 0.0, 1.0]
        ));
        assert!(close(
            values(Activation::Silu.apply(x.clone())),
            [-0.2384, 0.0, 0.7311]
        ));
        assert!(close(values(Activation::Gelu.apply(x)), [-0.0455, 0.0, 0.8413]));
    }
}
