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
use kiln_transforms::compose::Compose;
use kiln_transforms::{Normalization, resize_normalize};

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

    /// A run file for evaluating these weights on the dataset folder `data` with nothing but
    /// their spec: its architecture, normalization and evaluation stages (resolve it next).
    pub fn run_file_on(&self, data: &Path) -> crate::config::RunFile {
        let mut file = crate::config::RunFile::default();
        file.data.path = Some(data.to_path_buf());
        file.model = self.architecture.clone();
        file.transforms.normalization = Some(self.spec.normalization.clone());
        file.transforms.eval = self.spec.eval.clone();
        file
    }

    /// For image folders whose evaluation stages end at another size than the weights' input:
    /// torchvision's resize-shorter (size / 0.875) + centre crop to the weights' input size.
    pub fn fit_eval_stages(&self, file: &mut crate::config::RunFile) {
        use kiln_transforms::compose::Stage;
        let [_, h, w] = self.spec.input_chw;
        if file.data.format == crate::config::DataFormat::ImageFolder
            && file.transforms.eval_size() != Some([h, w])
        {
            file.transforms.eval = vec![
                Stage::ResizeShorter {
                    size: ((h.max(w) as f64) / 0.875).round() as usize,
                },
                Stage::CenterCrop { height: h, width: w },
            ];
        }
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

/// Model-ready inputs and their names: images go through the run file's evaluation stages, or are
/// resized to the input size, and normalised; a `.npy` file is taken as model-ready already
/// (`[N, C, H, W]` or `[C, H, W]`, as `kiln transform` writes it). Returns the names, the values
/// (`[N, C, H, W]` row-major) and N.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for an array of another shape or an empty folder; the files'
/// decoding and transform errors.
pub fn inputs(
    input: &Path,
    norm: &Normalization,
    eval: Option<&Compose>,
    chw: [usize; 3],
) -> Result<(Vec<String>, Vec<f32>, usize), TrainError> {
    if input.extension().is_some_and(|e| e == "npy") {
        let a = kiln_data::npy::read(input)?;
        let n = match a.shape.as_slice() {
            [c, h, w] if [*c, *h, *w] == chw => 1,
            [n, c, h, w] if [*c, *h, *w] == chw => *n,
            other => {
                return Err(invalid_input(
                    input,
                    format!(
                        "shape {other:?} does not fit the model's input [N, {}, {}, {}]",
                        chw[0], chw[1], chw[2]
                    ),
                ));
            }
        };
        let names = (0..n).map(|i| format!("{}[{i}]", input.display())).collect();
        return Ok((names, a.data, n));
    }
    let files: Vec<PathBuf> = if input.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(input)
            .map_err(|e| kiln_data::DataError::Io {
                path: input.to_path_buf(),
                source: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![input.to_path_buf()]
    };
    if files.is_empty() {
        return Err(invalid_input(input, "no files to predict".into()));
    }
    let mut data = Vec::with_capacity(files.len() * chw.iter().product::<usize>());
    for f in &files {
        let x = preprocess(f, norm, eval, chw)?;
        if x.len() != chw.iter().product::<usize>() {
            return Err(invalid_input(
                f,
                format!(
                    "the evaluation stages give {} values, the model takes {chw:?}",
                    x.len()
                ),
            ));
        }
        data.extend_from_slice(&x);
    }
    Ok((
        files.iter().map(|p| p.display().to_string()).collect(),
        data,
        files.len(),
    ))
}

/// One image file as the model's input: decoded as grey (1 channel) or colour (3, converted from
/// the decoder's BGR to RGB), through the evaluation stages when there are any (else resized,
/// bilinear, to the input size), normalised.
fn preprocess(
    path: &Path,
    norm: &Normalization,
    eval: Option<&Compose>,
    [c, h, w]: [usize; 3],
) -> Result<Vec<f32>, TrainError> {
    let mut rng = kiln_data::SampleRng::new(0);
    Ok(match (c, eval) {
        (1, Some(e)) => e
            .apply::<kiln_data::Gray>(&kiln_data::decode::imread_gray(path)?, &mut rng)?
            .into_vec(),
        (3, Some(e)) => e
            .apply::<kiln_data::Bgr>(&kiln_data::decode::imread(path)?, &mut rng)?
            .into_vec(),
        (1, None) => resize_normalize(&kiln_data::decode::imread_gray(path)?, h, w, norm)?.into_vec(),
        (3, None) => resize_normalize(&kiln_data::decode::imread(path)?, h, w, norm)?.into_vec(),
        _ => {
            return Err(invalid_input(
                path,
                format!("a model with {c} input channels takes no image files; give a .npy"),
            ));
        }
    })
}

fn invalid_input(path: &Path, reason: String) -> TrainError {
    TrainError::InvalidConfig {
        field: "input",
        value: path.display().to_string(),
        reason,
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
