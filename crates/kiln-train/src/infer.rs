//! Using trained weights: the model rebuilt from what its spec records (no run file needed),
//! evaluated on a split or asked for class probabilities.
//!
//! ```no_run
//! use burn::prelude::*;
//! use kiln_train::infer::Trained;
//!
//! let device = Device::flex();
//! let trained = Trained::open("runs/x/model.bpk".as_ref(), None)?;
//! let [c, h, w] = trained.spec.input_chw;
//! let images = Tensor::<4>::zeros([1, c, h, w], &device);
//! let probs = trained.probabilities(images, &device)?;
//! println!("{:?}", &probs[..trained.spec.num_classes]);
//! # Ok::<(), kiln_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use burn::prelude::*;
use kiln_models::zoo::{ModelFn, ZooModel};
use kiln_models::{ModelConfig, PretrainedSpec};

use crate::{BatchSource, ConfusionMatrix, EvalMetrics, TrainError};

/// Weights with what they need to be used: the architecture and the spec saved next to them.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The weights file (a kiln `.bpk`).
    pub path: PathBuf,
    /// The architecture.
    pub architecture: ModelConfig,
    /// What the weights expect (normalization, input size, classes).
    pub spec: PretrainedSpec,
}

impl Trained {
    /// The weights at `path` and their spec (`<weights>.kiln.json`). The architecture is the
    /// spec's; `fallback` (a run file's `[model]`) serves for specs that do not record it.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] when the weights or their spec are missing, or nothing says
    /// which architecture they are.
    pub fn open(path: &Path, fallback: Option<&ModelConfig>) -> Result<Self, TrainError> {
        let invalid = |reason: String| TrainError::InvalidConfig {
            field: "weights",
            value: path.display().to_string(),
            reason,
        };
        if !path.is_file() {
            return Err(invalid("no such file".into()));
        }
        let sidecar = PretrainedSpec::sidecar_path(path);
        if !sidecar.is_file() {
            return Err(invalid(format!(
                "no {} next to the weights to say what they are (kiln writes one with every model it saves; `kiln import` writes one for torchvision weights)",
                sidecar.display()
            )));
        }
        let spec = PretrainedSpec::load_next_to(path)?;
        let architecture = match (&spec.architecture, fallback) {
            (Some(a), _) => a.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => ModelConfig::from_name(&spec.model).map_err(|_| {
                invalid(format!(
                    "{} names the model `{}` but not its settings; give the run file it was trained with",
                    sidecar.display(),
                    spec.model
                ))
            })?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            architecture,
            spec,
        })
    }

    /// The class name of `label`: the spec's, or the label itself when the weights have none.
    pub fn class_name(&self, label: usize) -> String {
        self.spec
            .class_names
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    }

    /// Loss, accuracy and the confusion matrix on `source` (batches of `batch_size`).
    ///
    /// # Errors
    ///
    /// Loading the weights, the data, a label outside the model's classes.
    pub fn evaluate(
        &self,
        source: &dyn BatchSource,
        batch_size: usize,
        device: &Device,
    ) -> Result<(EvalMetrics, ConfusionMatrix), TrainError> {
        self.with_model(
            device,
            Evaluate {
                source,
                batch_size,
                device,
            },
        )?
    }

    /// Softmax probabilities `[N, classes]`, row-major, for model-ready `images` `[N, C, H, W]`.
    ///
    /// # Errors
    ///
    /// Loading the weights; an input shape the model cannot take.
    pub fn probabilities(&self, images: Tensor<4>, device: &Device) -> Result<Vec<f32>, TrainError> {
        self.with_model(device, Probabilities { images })?
    }

    fn with_model<F: ModelFn>(&self, device: &Device, f: F) -> Result<F::Output, TrainError> {
        self.architecture.build_with(
            self.spec.input_chw,
            self.spec.num_classes,
            device,
            Loaded { path: &self.path, f },
        )?
    }
}

/// Loads the weights into the built model, in evaluation mode, and runs `f` on it.
struct Loaded<'a, F> {
    path: &'a Path,
    f: F,
}

impl<F: ModelFn> ModelFn for Loaded<'_, F> {
    type Output = Result<F::Output, TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        let (model, _) = kiln_models::weights::load_weights(model, self.path)?;
        Ok(self.f.call(model.valid()))
    }
}

struct Evaluate<'a> {
    source: &'a dyn BatchSource,
    batch_size: usize,
    device: &'a Device,
}

impl ModelFn for Evaluate<'_> {
    type Output = Result<(EvalMetrics, ConfusionMatrix), TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        crate::evaluate_with_confusion(&model, self.source, self.batch_size, self.device)
    }
}

struct Probabilities {
    images: Tensor<4>,
}

impl ModelFn for Probabilities {
    type Output = Result<Vec<f32>, TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        model.check_input(&self.images.dims())?;
        let probs = burn::tensor::activation::softmax(model.logits(self.images), 1);
        probs
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::InvalidConfig {
                field: "weights",
                value: String::new(),
                reason: format!("{e:?}"),
            })
    }
}
