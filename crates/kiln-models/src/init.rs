//! Initialisation schemes with PyTorch's formulas.
//!
//! | scheme | weights | PyTorch |
//! |---|---|---|
//! | `pytorch-default` | `U(±1/√fan_in)` (bias too) | the layer default, `kaiming_uniform_(a=√5)` |
//! | `kaiming-normal` | `N(0, gain/√fan)` | `kaiming_normal_(w, mode, nonlinearity)` |
//! | `kaiming-uniform` | `U(±gain·√(3/fan))` | `kaiming_uniform_(w, mode, nonlinearity)` |
//! | `xavier-normal` | `N(0, gain·√(2/(fan_in+fan_out)))` | `xavier_normal_(w, gain)` |
//! | `xavier-uniform` | `U(±gain·√(6/(fan_in+fan_out)))` | `xavier_uniform_(w, gain)` |
//!
//! Fans are PyTorch's: a conv weight `[c_out, c_in/groups, k_h, k_w]` has
//! `fan_in = c_in/groups·k_h·k_w` and `fan_out = c_out·k_h·k_w` (Burn divides `fan_out` by the
//! groups too, so kiln computes the distribution itself for grouped convolutions). Gains are
//! `torch.nn.init.calculate_gain`'s: relu √2, leaky_relu √(2/(1+a²)), tanh 5/3, linear/sigmoid 1.
//!
//! When a scheme other than `pytorch-default` is chosen, biases start at zero (torchvision's
//! ResNet does this; Burn's `with_initializer` would draw the bias from the weight's scheme) and
//! BatchNorm starts at γ = 1, β = 0.

use burn::nn::Initializer;
use serde::{Deserialize, Serialize};

/// Which fan the Kaiming schemes normalise by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FanMode {
    /// Preserves the variance of activations in the forward pass (PyTorch's default).
    #[default]
    FanIn,
    /// Preserves the variance of gradients in the backward pass (torchvision's ResNet).
    FanOut,
}

/// The nonlinearity after a layer, for the Kaiming gain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Nonlinearity {
    /// Gain √2.
    #[default]
    Relu,
    /// Gain √(2 / (1 + a²)).
    LeakyRelu {
        /// The negative slope `a`.
        negative_slope: f64,
    },
    /// Gain 5/3.
    Tanh,
    /// Gain 1 (also conv and sigmoid in PyTorch's table).
    Linear,
    /// Gain 1.
    Sigmoid,
}

impl Nonlinearity {
    /// `torch.nn.init.calculate_gain`.
    pub fn gain(self) -> f64 {
        match self {
            Nonlinearity::Relu => 2f64.sqrt(),
            Nonlinearity::LeakyRelu { negative_slope } => {
                (2.0 / (1.0 + negative_slope * negative_slope)).sqrt()
            }
            Nonlinearity::Tanh => 5.0 / 3.0,
            Nonlinearity::Linear | Nonlinearity::Sigmoid => 1.0,
        }
    }
}

/// How conv and linear weights start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InitScheme {
    /// PyTorch's layer default, `U(±1/√fan_in)` for weight and bias.
    PytorchDefault,
    /// `kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`, torchvision's ResNet choice (the
    /// same as `KaimingNormal { mode: FanOut, nonlinearity: Relu }`).
    #[default]
    KaimingNormalFanOutRelu,
    /// `kaiming_normal_(w, mode, nonlinearity)`.
    KaimingNormal {
        /// Fan to normalise by.
        #[serde(default)]
        mode: FanMode,
        /// Nonlinearity after the layer.
        #[serde(default)]
        nonlinearity: Nonlinearity,
    },
    /// `kaiming_uniform_(w, mode, nonlinearity)`.
    KaimingUniform {
        /// Fan to normalise by.
        #[serde(default)]
        mode: FanMode,
        /// Nonlinearity after the layer.
        #[serde(default)]
        nonlinearity: Nonlinearity,
    },
    /// `xavier_normal_(w, gain)`.
    XavierNormal {
        /// Gain.
        gain: f64,
    },
    /// `xavier_uniform_(w, gain)`.
    XavierUniform {
        /// Gain.
        gain: f64,
    },
}

/// PyTorch's fans of a layer's weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fans {
    /// Inputs feeding one output.
    pub fan_in: usize,
    /// Outputs fed by one input (PyTorch: not divided by the groups).
    pub fan_out: usize,
}

impl Fans {
    /// A linear layer `d_in → d_out`.
    pub fn linear(d_in: usize, d_out: usize) -> Self {
        Self {
            fan_in: d_in,
            fan_out: d_out,
        }
    }

    /// A 2-D convolution `c_in → c_out` with kernel `k` and `groups`.
    pub fn conv2d(c_in: usize, c_out: usize, k: [usize; 2], groups: usize) -> Self {
        let receptive = k[0] * k[1];
        Self {
            fan_in: c_in / groups.max(1) * receptive,
            fan_out: c_out * receptive,
        }
    }
}

impl InitScheme {
    /// The Burn initializer for a weight with PyTorch's `fans`. It is an explicit `Normal` or
    /// `Uniform` with the formula's std or bound, so Burn's own fan rules never apply.
    pub fn weight_initializer_for(self, fans: Fans) -> Initializer {
        let (fi, fo) = (fans.fan_in.max(1) as f64, fans.fan_out.max(1) as f64);
        let kaiming_fan = |mode: FanMode| if mode == FanMode::FanIn { fi } else { fo };
        match self {
            InitScheme::PytorchDefault => uniform(1.0 / fi.sqrt()),
            InitScheme::KaimingNormalFanOutRelu => Initializer::Normal {
                mean: 0.0,
                std: 2f64.sqrt() / fo.sqrt(),
            },
            InitScheme::KaimingNormal { mode, nonlinearity } => Initializer::Normal {
                mean: 0.0,
                std: nonlinearity.gain() / kaiming_fan(mode).sqrt(),
            },
            InitScheme::KaimingUniform { mode, nonlinearity } => {
                uniform(nonlinearity.gain() * (3.0 / kaiming_fan(mode)).sqrt())
            }
            InitScheme::XavierNormal { gain } => Initializer::Normal {
                mean: 0.0,
                std: gain * (2.0 / (fi + fo)).sqrt(),
            },
            InitScheme::XavierUniform { gain } => uniform(gain * (6.0 / (fi + fo)).sqrt()),
        }
    }

    /// The Burn initializer for weights under this scheme, leaving fans to Burn (identical to
    /// PyTorch's for ungrouped layers). Kept for the reference CNN; new code uses
    /// [`InitScheme::weight_initializer_for`].
    pub fn weight_initializer(self) -> Initializer {
        match self {
            // Burn's default is KaimingUniform with gain 1/√3, i.e. bound 1/√fan_in (PyTorch's).
            InitScheme::PytorchDefault => Initializer::KaimingUniform {
                gain: 1.0 / 3f64.sqrt(),
                fan_out_only: false,
            },
            InitScheme::KaimingNormalFanOutRelu => Initializer::KaimingNormal {
                gain: 2f64.sqrt(),
                fan_out_only: true,
            },
            InitScheme::KaimingNormal { mode, nonlinearity } => Initializer::KaimingNormal {
                gain: nonlinearity.gain(),
                fan_out_only: mode == FanMode::FanOut,
            },
            InitScheme::KaimingUniform { mode, nonlinearity } => Initializer::KaimingUniform {
                gain: nonlinearity.gain(),
                fan_out_only: mode == FanMode::FanOut,
            },
            InitScheme::XavierNormal { gain } => Initializer::XavierNormal { gain },
            InitScheme::XavierUniform { gain } => Initializer::XavierUniform { gain },
        }
    }

    /// Whether biases are zeroed (instead of drawn like the weights, which Burn's
    /// `with_initializer` would otherwise do).
    pub fn zero_bias(self) -> bool {
        !matches!(self, InitScheme::PytorchDefault)
    }
}

/// A classifier head: `nn.Linear(d_in, classes)` with PyTorch's default init (weight and bias
/// uniform in ±1/√d_in), whatever scheme the rest of the model uses — as torchvision's ResNet,
/// whose init loop touches only convolutions and BatchNorm. A Kaiming fan-out head on a 128→10
/// layer starts at a loss of ≈ 4.6 instead of ln 10 ≈ 2.3 (measured by `kiln_train::diagnose::doctor`).
pub fn classifier_head(d_in: usize, classes: usize, device: &burn::prelude::Device) -> burn::nn::Linear {
    burn::nn::LinearConfig::new(d_in, classes)
        .with_initializer(InitScheme::PytorchDefault.weight_initializer_for(Fans::linear(d_in, classes)))
        .init(device)
}

fn uniform(bound: f64) -> Initializer {
    Initializer::Uniform {
        min: -bound,
        max: bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;

    /// Empirical (std, max |x|) of a large tensor drawn with `init`.
    fn draw(init: Initializer, shape: [usize; 2]) -> (f64, f64) {
        let device = Device::flex();
        device.seed(3);
        let t: Tensor<2> = init.init(shape, &device).val();
        let v = t.into_data().try_into_vec_as::<f64>().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
        (std, v.iter().fold(0.0f64, |m, x| m.max(x.abs())))
    }

    #[test]
    fn gains_are_pytorchs() {
        // torch.nn.init.calculate_gain("relu") = 1.4142135623730951, ("leaky_relu", 0.2) =
        // 1.3867504905630728, ("tanh") = 1.6666666666666667, ("linear") = 1.
        assert_eq!(
            Nonlinearity::Relu.gain(),
            std::f64::consts::SQRT_2,
            "1.4142135623730951"
        );
        assert!(
            (Nonlinearity::LeakyRelu { negative_slope: 0.2 }.gain() - 1.386_750_490_563_072_8).abs() < 1e-15
        );
        assert!((Nonlinearity::Tanh.gain() - 5.0 / 3.0).abs() < 1e-15);
        assert_eq!(Nonlinearity::Linear.gain(), 1.0);
    }

    #[test]
    fn drawn_weights_follow_the_formulas() {
        // 1,000,000 draws: the empirical std is within 1% of the formula's.
        let fans = Fans::linear(500, 2000);
        let shape = [500, 2000];
        let close = |got: f64, want: f64| (got / want - 1.0).abs() < 0.01;
        let (std, _) = draw(
            InitScheme::KaimingNormal {
                mode: FanMode::FanIn,
                nonlinearity: Nonlinearity::Relu,
            }
            .weight_initializer_for(fans),
            shape,
        );
        assert!(
            close(std, 2f64.sqrt() / 500f64.sqrt()),
            "kaiming normal fan_in: {std}"
        );
        let (std, _) = draw(
            InitScheme::KaimingNormalFanOutRelu.weight_initializer_for(fans),
            shape,
        );
        assert!(
            close(std, 2f64.sqrt() / 2000f64.sqrt()),
            "kaiming normal fan_out: {std}"
        );
        let bound = Nonlinearity::Tanh.gain() * (3.0f64 / 500.0).sqrt();
        let (std, max) = draw(
            InitScheme::KaimingUniform {
                mode: FanMode::FanIn,
                nonlinearity: Nonlinearity::Tanh,
            }
            .weight_initializer_for(fans),
            shape,
        );
        assert!(max <= bound && max > 0.999 * bound, "bound {bound}, max {max}");
        assert!(close(std, bound / 3f64.sqrt()), "uniform std {std}");
        let (std, _) = draw(
            InitScheme::XavierNormal { gain: 1.0 }.weight_initializer_for(fans),
            shape,
        );
        assert!(close(std, (2.0f64 / 2500.0).sqrt()), "xavier normal {std}");
        let bound = 0.5 * (6.0f64 / 2500.0).sqrt();
        let (_, max) = draw(
            InitScheme::XavierUniform { gain: 0.5 }.weight_initializer_for(fans),
            shape,
        );
        assert!(
            max <= bound && max > 0.999 * bound,
            "xavier uniform bound {bound}, max {max}"
        );
        let (_, max) = draw(InitScheme::PytorchDefault.weight_initializer_for(fans), shape);
        assert!(max <= 1.0 / 500f64.sqrt() && max > 0.999 / 500f64.sqrt());
    }

    #[test]
    fn grouped_conv_fans_are_pytorchs() {
        // nn.Conv2d(64, 128, 3, groups=4).weight: shape [128, 16, 3, 3];
        // torch.nn.init._calculate_fan_in_and_fan_out gives fan_in 144, fan_out 1152.
        assert_eq!(
            Fans::conv2d(64, 128, [3, 3], 4),
            Fans {
                fan_in: 144,
                fan_out: 1152
            }
        );
        let init =
            InitScheme::KaimingNormalFanOutRelu.weight_initializer_for(Fans::conv2d(64, 128, [3, 3], 4));
        assert_eq!(
            init,
            Initializer::Normal {
                mean: 0.0,
                std: 2f64.sqrt() / 1152f64.sqrt()
            }
        );
    }

    #[test]
    fn schemes_serialise_by_name() {
        let s: InitScheme =
            serde_json::from_str(r#"{"kaiming-uniform": {"mode": "fan-out", "nonlinearity": {"leaky-relu": {"negative_slope": 0.1}}}}"#)
                .unwrap();
        assert_eq!(
            s,
            InitScheme::KaimingUniform {
                mode: FanMode::FanOut,
                nonlinearity: Nonlinearity::LeakyRelu { negative_slope: 0.1 }
            }
        );
        assert_eq!(
            serde_json::to_string(&InitScheme::KaimingNormalFanOutRelu).unwrap(),
            "\"kaiming-normal-fan-out-relu\""
        );
    }
}
