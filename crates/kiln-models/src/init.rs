//! Initialisation schemes with PyTorch's formulas.

use burn::nn::Initializer;
use serde::{Deserialize, Serialize};

/// How conv and linear weights start.
///
/// Biases, where a layer has one, start at zero under every scheme but `PytorchDefault` (as in
/// torchvision's ResNet); BatchNorm starts at γ = 1, β = 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InitScheme {
    /// PyTorch's layer default, `U(±1/√fan_in)` for weight and bias.
    PytorchDefault,
    /// `torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")`:
    /// `N(0, 2/fan_out)`, fan_out = `c_out·k_h·k_w` (conv) or `d_out` (linear).
    #[default]
    KaimingNormalFanOutRelu,
}

impl InitScheme {
    /// The Burn initializer for weights under this scheme.
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
        }
    }

    /// Whether biases are zeroed (instead of drawn like the weights, which Burn's
    /// `with_initializer` would otherwise do).
    pub fn zero_bias(self) -> bool {
        !matches!(self, InitScheme::PytorchDefault)
    }
}
