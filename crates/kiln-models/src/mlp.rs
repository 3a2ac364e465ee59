//! A multilayer perceptron on flattened images: `[Linear → BatchNorm1d → ReLU] × widths → Linear`.
//!
//! ```
//! use burn::prelude::*;
//! use kiln_models::{Classifier, MlpConfig};
//!
//! let device = Device::flex();
//! let mlp = MlpConfig::new(vec![256, 128]).init(&device)?; // 1x28x28 in, 10 classes out
//! assert_eq!(mlp.logits(Tensor::<4>::zeros([3, 1, 28, 28], &device)).dims(), [3, 10]);
//! assert_eq!(mlp.layers().len(), 3);
//! # Ok::<(), kiln_models::ModelError>(())
//! ```

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use crate::blocks::{Activation, LinearBnAct, LinearBnActConfig};
use crate::init::InitScheme;
use crate::zoo::{Architecture, Preset, ZooModel};
use crate::{Classifier, ModelError};

/// Configuration of [`Mlp`].
#[derive(Config, Debug, PartialEq)]
pub struct MlpConfig {
    /// Width of each hidden layer (may be empty: a linear classifier).
    pub widths: Vec<usize>,
    /// Number of output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Input `[C, H, W]`.
    #[config(default = "[1, 28, 28]")]
    pub input_chw: [usize; 3],
    /// BatchNorm1d after each hidden linear layer (false: the layers keep their biases).
    #[config(default = true)]
    pub batch_norm: bool,
    /// Activation of the hidden layers.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Weight initialisation.
    #[config(default = "InitScheme::KaimingNormalFanOutRelu")]
    pub init: InitScheme,
}

/// The MLP; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<LinearBnAct>,
    pub(crate) head: Linear,
    #[module(skip)]
    input_chw: [usize; 3],
    #[module(skip)]
    pub(crate) layers: Vec<String>,
}

impl MlpConfig {
    /// Checks the config and builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for fewer than two classes, a zero width or an empty input.
    pub fn init(&self, device: &Device) -> Result<Mlp, ModelError> {
        crate::error::check_num_classes(self.num_classes)?;
        if let Some(&w) = self.widths.iter().find(|&&w| w == 0) {
            return Err(ModelError::InvalidConfig {
                field: "widths",
                value: w.to_string(),
                reason: "every hidden layer needs at least 1 unit",
            });
        }
        let d_in: usize = self.input_chw.iter().product();
        if d_in == 0 {
            return Err(ModelError::InvalidConfig {
                field: "input_chw",
                value: format!("{:?}", self.input_chw),
                reason: "the input must have at least one value",
            });
        }
        let mut hidden = Vec::new();
        let mut layers = Vec::new();
        let mut d = d_in;
        for &w in &self.widths {
            let block = LinearBnActConfig::new(d, w)
                .with_batch_norm(self.batch_norm)
                .with_activation(self.activation)
                .with_init(self.init)
                .init(device);
            layers.push(block.describe().to_string());
            hidden.push(block);
            d = w;
        }
        let head = crate::init::classifier_head(d, self.num_classes, device);
        layers.push(format!("Linear({d}→{}, bias)", self.num_classes));
        Ok(Mlp {
            hidden,
            head,
            input_chw: self.input_chw,
            layers,
        })
    }
}

impl Mlp {
    /// `[N, C, H, W]` → `[N, classes]` logits.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x: Tensor<2> = images.flatten(1, 3);
        for block in &self.hidden {
            x = block.forward(x);
        }
        self.head.forward(x)
    }

    /// One line per layer.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// Per-layer output shapes, parameters and MACs.
    pub fn summary(&self) -> crate::Summary {
        let mut rows: Vec<crate::Row> = self.hidden.iter().map(LinearBnAct::summarize).collect();
        let [d_in, d_out] = crate::summary::lazy_dims(&self.head.weight);
        rows.push(crate::Row {
            layer: format!("Linear({d_in}→{d_out}, bias)"),
            output: vec![d_out],
            params: self.head.num_params(),
            macs: (d_in * d_out) as u64,
        });
        crate::Summary {
            model: "Mlp".into(),
            input: self.input_chw,
            rows,
        }
    }
}

impl Classifier for Mlp {
    fn name(&self) -> &'static str {
        "Mlp"
    }

    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn check_input(&self, dims: &[usize]) -> Result<(), ModelError> {
        if dims.len() == 4 && dims[0] > 0 && dims[1..] == self.input_chw {
            Ok(())
        } else {
            Err(ModelError::InputShape {
                model: "Mlp",
                expected_chw: self.input_chw,
                found: dims.to_vec(),
            })
        }
    }

    fn summary(&self, _input_chw: [usize; 3]) -> Option<crate::Summary> {
        Some(Mlp::summary(self))
    }
}

/// `[model] name = "mlp"`, registered in [`crate::zoo`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpArch {
    /// Hidden layer widths.
    pub widths: Vec<usize>,
    /// BatchNorm1d after each hidden layer.
    #[serde(default = "crate::zoo::yes")]
    pub batch_norm: bool,
    /// Weight initialisation.
    #[serde(default)]
    pub init: Option<InitScheme>,
}

impl Architecture for MlpArch {
    type Model = Mlp;

    fn presets() -> Vec<Preset<Self>> {
        vec![Preset {
            name: "mlp",
            about: "a multi-layer perceptron (hidden widths 256, 128; set [model] widths)",
            config: MlpArch {
                widths: vec![256, 128],
                batch_norm: true,
                init: None,
            },
        }]
    }

    fn build(&self, input_chw: [usize; 3], num_classes: usize, device: &Device) -> Result<Mlp, ModelError> {
        let mut m = MlpConfig::new(self.widths.clone())
            .with_input_chw(input_chw)
            .with_num_classes(num_classes)
            .with_batch_norm(self.batch_norm);
        if let Some(init) = self.init {
            m = m.with_init(init);
        }
        m.init(device)
    }

    fn id(&self) -> String {
        "mlp".into()
    }

    fn describe(&self, [c, h, w]: [usize; 3], num_classes: usize) -> String {
        format!(
            "Mlp({} -> {:?} -> {num_classes}{})",
            c * h * w,
            self.widths,
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

impl ZooModel for Mlp {
    fn onnx(&self, g: &mut crate::onnx::OnnxGraph, x: &str) -> Result<String, ModelError> {
        use crate::onnx::OnnxLayer;
        let mut x = crate::onnx::flatten(g, "", x);
        for (i, block) in self.hidden.iter().enumerate() {
            x = block.onnx(g, &format!("hidden.{i}"), &x)?;
        }
        self.head.onnx(g, "head", &x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_count_matches_pytorch() {
        // torch: nn.Sequential(nn.Flatten(), nn.Linear(784, 256, bias=False), nn.BatchNorm1d(256),
        //   nn.ReLU(), nn.Linear(256, 10)) has 784·256 + 2·256 + 256·10 + 10 = 203,786 parameters;
        // Burn also counts BatchNorm's running mean and variance: + 2·256.
        let m = MlpConfig::new(vec![256]).init(&Device::flex()).unwrap();
        assert_eq!(m.num_params(), 203_786 + 512);
        let no_bn = MlpConfig::new(vec![256])
            .with_batch_norm(false)
            .init(&Device::flex())
            .unwrap();
        // 784·256 + 256 + 256·10 + 10 = 203,530
        assert_eq!(no_bn.num_params(), 203_530);
        assert_eq!(
            no_bn.layers(),
            ["Linear(784→256, bias) → ReLU", "Linear(256→10, bias)"]
        );
    }

    #[test]
    fn bad_configs_and_inputs_are_errors() {
        let d = Device::flex();
        assert!(matches!(
            MlpConfig::new(vec![0]).init(&d),
            Err(ModelError::InvalidConfig { field: "widths", .. })
        ));
        assert!(matches!(
            MlpConfig::new(vec![]).with_num_classes(1).init(&d),
            Err(ModelError::InvalidConfig {
                field: "num_classes",
                ..
            })
        ));
        let m = MlpConfig::new(vec![]).init(&d).unwrap();
        assert!(matches!(
            m.check_input(&[2, 3, 28, 28]),
            Err(ModelError::InputShape { .. })
        ));
        assert!(m.check_input(&[2, 1, 28, 28]).is_ok());
    }
}
