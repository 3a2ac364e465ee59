//! The reference CNN for 28×28 grey images (Fashion-MNIST, MNIST).
//!
//! ```text
//! Conv3×3(C→32, no bias) → BatchNorm → ReLU → MaxPool2
//! Conv3×3(32→64, no bias) → BatchNorm → ReLU → MaxPool2
//! Flatten → Linear(64·H/4·W/4 → 128, no bias) → BatchNorm1d → ReLU
//! Linear(128 → classes)
//! ```
//!
//! Identical to `Net` in `shared/bench/torch_fmnist.py` (the PyTorch peer), so their accuracy and
//! speed compare like for like.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{InitScheme, ModelError, kernels};

/// Configuration of [`ReferenceCnn`].
#[derive(Config, Debug, PartialEq)]
pub struct ReferenceCnnConfig {
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input channels (1 for grey images).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Input height in pixels.
    #[config(default = 28)]
    pub height: usize,
    /// Input width in pixels.
    #[config(default = 28)]
    pub width: usize,
    /// Width of the hidden linear layer.
    #[config(default = 128)]
    pub hidden: usize,
    /// Weight initialisation.
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
    /// BatchNorm after each conv and the hidden linear layer (false, for ablations: those layers
    /// get their biases back, zero-initialised under a named init scheme).
    #[config(default = true)]
    pub batch_norm: bool,
}

/// The reference CNN; see the [module docs](self).
#[derive(Module, Debug)]
pub struct ReferenceCnn {
    conv1: Conv2d,
    bn1: Option<BatchNorm>,
    conv2: Conv2d,
    bn2: Option<BatchNorm>,
    fc1: Linear,
    bn3: Option<BatchNorm>,
    pub(crate) fc2: Linear,
    pool: MaxPool2d,
    in_channels: usize,
    height: usize,
    width: usize,
}

impl ReferenceCnnConfig {
    /// Checks the config and builds the model on `device` (parameters are drawn lazily, on first
    /// use, from the device's seeded generator).
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes, zero channels or hidden units, or an
    /// input smaller than 4×4 (two 2×2 poolings).
    pub fn init(&self, device: &Device) -> Result<ReferenceCnn, ModelError> {
        let invalid = |field, value: usize, reason| {
            Err(ModelError::InvalidConfig {
                field,
                value: value.to_string(),
                reason,
            })
        };
        if self.num_classes < 2 {
            return invalid(
                "num_classes",
                self.num_classes,
                "a classifier needs at least 2 classes",
            );
        }
        if self.in_channels == 0 {
            return invalid("in_channels", 0, "must be at least 1");
        }
        if self.hidden == 0 {
            return invalid("hidden", 0, "must be at least 1");
        }
        if self.height < 4 {
            return invalid("height", self.height, "must be at least 4 (two 2x2 max-pools)");
        }
        if self.width < 4 {
            return invalid("width", self.width, "must be at least 4 (two 2x2 max-pools)");
        }
        let w_init = self.init.weight_initializer();
        let bias = !self.batch_norm;
        let zero_bias = bias && self.init.zero_bias();
        let conv = |c_in, c_out| {
            let mut c = Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(bias)
                .with_initializer(w_init.clone())
                .init(device);
            if zero_bias {
                c.bias = Some(Initializer::Zeros.init([c_out], device));
            }
            c
        };
        let bn = |n: usize| self.batch_norm.then(|| BatchNormConfig::new(n).init(device));
        let flat = 64 * (self.height / 4) * (self.width / 4);
        let fc2 = crate::init::classifier_head(self.hidden, self.num_classes, device);
        let mut fc1 = LinearConfig::new(flat, self.hidden)
            .with_bias(bias)
            .with_initializer(w_init.clone())
            .init(device);
        if zero_bias {
            fc1.bias = Some(Initializer::Zeros.init([self.hidden], device));
        }
        Ok(ReferenceCnn {
            conv1: conv(self.in_channels, 32),
            bn1: bn(32),
            conv2: conv(32, 64),
            bn2: bn(64),
            fc1,
            bn3: bn(self.hidden),
            fc2,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            in_channels: self.in_channels,
            height: self.height,
            width: self.width,
        })
    }
}

impl ReferenceCnn {
    /// Logits for a batch of images.
    ///
    /// # Shapes
    ///
    /// `[N, C, H, W]` → `[N, classes]`.
    ///
    /// # Panics
    ///
    /// On an input of another shape (Burn's layers assert); call [`ReferenceCnn::check_input`]
    /// first on anything a user supplies.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        // kiln's kernels on flex (conv, fused BatchNorm + ReLU + 2×2 pool), Burn's layers elsewhere.
        let x = self.bn_relu_pool(&self.bn1, kernels::conv2d(&self.conv1, x));
        let x = self.bn_relu_pool(&self.bn2, kernels::conv2d(&self.conv2, x));
        let x = x.flatten::<2>(1, 3);
        let x = bn_relu(&self.bn3, self.fc1.forward(x));
        self.fc2.forward(x)
    }

    /// Checks that `dims` is `[N, C, H, W]` with the configured C, H and W and N ≥ 1.
    ///
    /// # Errors
    ///
    /// [`ModelError::InputShape`] otherwise.
    pub fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        let expected = [self.in_channels, self.height, self.width];
        if dims.len() == 4 && dims[0] > 0 && dims[1..] == expected {
            Ok(())
        } else {
            Err(ModelError::InputShape {
                model: "ReferenceCnn",
                expected_chw: expected,
                found: dims.to_vec(),
            })
        }
    }
}

impl ReferenceCnn {
    /// Per-layer output shapes, parameters (BatchNorm's running statistics included, as Burn
    /// counts them) and multiply-accumulates for one sample.
    pub fn summary(&self) -> crate::Summary {
        let (h, w) = (self.height, self.width);
        let bn_params = |bn: &Option<BatchNorm>| bn.as_ref().map_or(0, |b| b.num_params());
        let bn_name = |bn: &Option<BatchNorm>, bias: bool| match (bn.is_some(), bias) {
            (true, _) => "no bias) → BatchNorm",
            (false, true) => "bias)",
            (false, false) => "no bias)",
        };
        let conv_row = |conv: &Conv2d, bn: &Option<BatchNorm>, out_hw: [usize; 2]| {
            let [c_out, c_in, kh, kw] = crate::summary::lazy_dims(&conv.weight);
            crate::Row {
                layer: format!(
                    "Conv3x3({c_in}→{c_out}, {} → ReLU → MaxPool2",
                    bn_name(bn, conv.bias.is_some())
                ),
                output: vec![c_out, out_hw[0] / 2, out_hw[1] / 2],
                params: conv.num_params() + bn_params(bn),
                macs: (c_out * c_in * kh * kw * out_hw[0] * out_hw[1]) as u64,
            }
        };
        let linear_row = |fc: &Linear, bn: &Option<BatchNorm>, act: &str| {
            let [d_in, d_out] = crate::summary::lazy_dims(&fc.weight);
            crate::Row {
                layer: format!("Linear({d_in}→{d_out}, {}{act}", bn_name(bn, fc.bias.is_some())),
                output: vec![d_out],
                params: fc.num_params() + bn_params(bn),
                macs: (d_in * d_out) as u64,
            }
        };
        crate::Summary {
            model: "ReferenceCnn".into(),
            input: [self.in_channels, h, w],
            rows: vec![
                conv_row(&self.conv1, &self.bn1, [h, w]),
                conv_row(&self.conv2, &self.bn2, [h / 2, w / 2]),
                linear_row(&self.fc1, &self.bn3, " → ReLU"),
                linear_row(&self.fc2, &None, ""),
            ],
        }
    }
}

impl ReferenceCnn {
    /// `pool(relu(bn(x)))`, or `pool(relu(x))` without BatchNorm.
    fn bn_relu_pool(&self, bn: &Option<BatchNorm>, x: Tensor<4>) -> Tensor<4> {
        match bn {
            Some(b) => kernels::batch_norm_relu_max_pool(b, &self.pool, x),
            None => kernels::max_pool2d(&self.pool, relu(x)),
        }
    }
}

/// `relu(bn(x))`, or `relu(x)` without BatchNorm.
fn bn_relu<const D: usize>(bn: &Option<BatchNorm>, x: Tensor<D>) -> Tensor<D> {
    match bn {
        Some(b) => kernels::batch_norm_act(b, x, true),
        None => relu(x),
    }
}

/// `[model] name = "reference-cnn"`, registered in [`crate::zoo`]; the input size and class
/// count come from the data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceCnnArch {
    /// BatchNorm after each conv and the hidden layer.
    #[serde(default = "crate::zoo::yes")]
    pub batch_norm: bool,
    /// Weight initialisation (Kaiming normal, fan-out, by default).
    #[serde(default)]
    pub init: Option<InitScheme>,
}

impl Default for ReferenceCnnArch {
    fn default() -> Self {
        Self {
            batch_norm: true,
            init: None,
        }
    }
}

impl Architecture for ReferenceCnnArch {
    type Model = ReferenceCnn;

    fn presets() -> Vec<Preset<Self>> {
        vec![Preset {
            name: "reference-cnn",
            about: "two Conv-BN-ReLU-pool blocks and a hidden linear layer (the default)",
            config: Self::default(),
        }]
    }

    fn build(
        &self,
        [c, h, w]: [usize; 3],
        num_classes: usize,
        device: &Device,
    ) -> Result<ReferenceCnn, ModelError> {
        let mut m = ReferenceCnnConfig::new()
            .with_in_channels(c)
            .with_height(h)
            .with_width(w)
            .with_num_classes(num_classes)
            .with_batch_norm(self.batch_norm);
        if let Some(init) = self.init {
            m = m.with_init(init);
        }
        m.init(device)
    }

    fn id(&self) -> String {
        "reference-cnn".into()
    }

    fn describe(&self, [c, h, w]: [usize; 3], num_classes: usize) -> String {
        format!(
            "ReferenceCnn({c}x{h}x{w} -> {num_classes} classes{})",
            crate::zoo::bn_note(self.batch_norm)
        )
    }

    fn default_input(&self) -> [usize; 3] {
        [1, 28, 28]
    }

    fn batch_norm_mut(&mut self) -> &mut bool {
        &mut self.batch_norm
    }

    fn init_mut(&mut self) -> &mut Option<InitScheme> {
        &mut self.init
    }
}

impl ZooModel for ReferenceCnn {
    fn onnx(&self, g: &mut crate::onnx::OnnxGraph, x: &str) -> Result<String, ModelError> {
        use crate::blocks::Activation::Relu;
        use crate::onnx::{OnnxLayer, conv_bn, linear_bn};
        let mut x = x.to_string();
        for (i, (conv, bn)) in [(&self.conv1, &self.bn1), (&self.conv2, &self.bn2)]
            .into_iter()
            .enumerate()
        {
            let (c, b) = (format!("conv{}", i + 1), format!("bn{}", i + 1));
            x = conv_bn(g, &c, conv, bn.as_ref().map(|bn| (b.as_str(), bn)), &x)?;
            x = Relu.onnx(g, &c, &x)?;
            x = self.pool.onnx(g, &format!("pool{}", i + 1), &x)?;
        }
        x = crate::onnx::flatten(g, "", &x);
        x = linear_bn(g, "fc1", &self.fc1, self.bn3.as_ref().map(|bn| ("bn3", bn)), &x)?;
        x = Relu.onnx(g, "fc1", &x)?;
        self.fc2.onnx(g, "fc2", &x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_pytorch() {
        // sum(p.numel() for p in Net().parameters()) for Net in shared/bench/torch_fmnist.py:
        // 288 + 64 + 18432 + 128 + 401408 + 256 + 1280 + 10 = 421,866. PyTorch keeps BatchNorm's
        // running mean/var as buffers; Burn's num_params counts them too: + 2·(32 + 64 + 128).
        let model = ReferenceCnnConfig::new().init(&Device::flex()).unwrap();
        assert_eq!(model.num_params(), 421_866 + 448);
        // Without BatchNorm (the ablation): no γ/β/statistics, biases back on conv1, conv2, fc1:
        // 421,866 − 2·(32 + 64 + 128) + (32 + 64 + 128) = 421,642.
        let d = Device::flex();
        let plain = ReferenceCnnConfig::new().with_batch_norm(false).init(&d).unwrap();
        assert_eq!(plain.num_params(), 421_642);
        let b = plain
            .conv1
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
        assert_eq!(plain.forward(Tensor::zeros([2, 1, 28, 28], &d)).dims(), [2, 10]);
    }

    #[test]
    fn summary_counts_every_parameter_and_the_conv_macs() {
        let d = Device::flex();
        let model = ReferenceCnnConfig::new().init(&d).unwrap();
        let s = model.summary();
        // Describing the model draws no weights: they are drawn lazily, at the first forward,
        // and drawing them earlier would change a seeded run (kiln train prints the summary).
        assert!(!model.conv1.weight.is_initialized() && !model.fc2.weight.is_initialized());
        assert_eq!(s.params(), model.num_params());
        let outputs: Vec<_> = s.rows.iter().map(|r| r.output.clone()).collect();
        assert_eq!(
            outputs,
            vec![vec![32, 14, 14], vec![64, 7, 7], vec![128], vec![10]]
        );
        // MACs by hand (as fvcore/thop count them: conv k·k·C_in·C_out·H_out·W_out, linear in·out):
        // conv1 32·1·9·28·28 = 225,792; conv2 64·32·9·14·14 = 3,612,672;
        // fc1 3136·128 = 401,408; fc2 128·10 = 1,280; total 4,241,152.
        let macs: Vec<u64> = s.rows.iter().map(|r| r.macs).collect();
        assert_eq!(macs, vec![225_792, 3_612_672, 401_408, 1_280]);
        assert_eq!(s.macs(), 4_241_152);
        assert!(
            s.to_string()
                .contains("Conv3x3(1→32, no bias) → BatchNorm → ReLU → MaxPool2"),
            "{s}"
        );
        let plain = ReferenceCnnConfig::new()
            .with_batch_norm(false)
            .with_in_channels(3)
            .with_height(32)
            .with_width(32)
            .init(&d)
            .unwrap()
            .summary();
        assert_eq!(plain.rows[0].layer, "Conv3x3(3→32, bias) → ReLU → MaxPool2");
        assert_eq!(plain.rows[2].output, vec![128]);
        assert_eq!(plain.rows[2].macs, (64 * 8 * 8 * 128) as u64);
    }

    #[test]
    fn kaiming_fan_out_std_on_conv2() {
        // torch: w = torch.empty(64, 32, 3, 3); nn.init.kaiming_normal_(w, mode="fan_out",
        // nonlinearity="relu"); w.std() ≈ sqrt(2 / (64·9)) = 0.0589
        let device = Device::flex();
        device.seed(1);
        let model = ReferenceCnnConfig::new().init(&device).unwrap();
        let w = model.conv2.weight.val().flatten::<1>(0, 3);
        let std = w.clone().var(0).sqrt().into_scalar::<f32>();
        let mean = w.mean().into_scalar::<f32>();
        let want = (2.0f32 / (64.0 * 9.0)).sqrt();
        // 18,432 draws: the sample std is within ~1% of the true one; 5% leaves no flakiness.
        assert!((std - want).abs() / want < 0.05, "std {std} vs {want}");
        assert!(mean.abs() < 0.003, "mean {mean}");
        // The head keeps nn.Linear's default: U(±1/√128) = U(±0.0884), bias included.
        let bias = model
            .fc2
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(
            bias.iter().all(|&b| b.abs() <= 0.0884) && bias.iter().any(|&b| b != 0.0),
            "{bias:?}"
        );
    }

    #[test]
    fn invalid_configs_and_inputs_are_errors() {
        let d = Device::flex();
        assert!(matches!(
            ReferenceCnnConfig::new().with_num_classes(1).init(&d),
            Err(ModelError::InvalidConfig {
                field: "num_classes",
                ..
            })
        ));
        let m = ReferenceCnnConfig::new().init(&d).unwrap();
        assert!(m.check_input(&[8, 1, 28, 28]).is_ok());
        let err = m.check_input(&[8, 3, 32, 32]).unwrap_err();
        assert!(err.to_string().contains("[8, 3, 32, 32]"), "{err}");
    }
}
