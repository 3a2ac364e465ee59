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

use serde::Serialize;

use crate::config::RunFile;
use crate::{BatchSource, ConfusionMatrix, EvalMetrics, TrainError};

/// What `kiln eval` reports: the figures of weights on a split, per class and as a confusion
/// matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The weights evaluated.
    pub weights: PathBuf,
    /// The dataset folder.
    pub data: PathBuf,
    /// The split (`test`).
    pub split: &'static str,
    /// Loss, top-1 and top-5 accuracy, samples.
    #[serde(flatten)]
    pub metrics: EvalMetrics,
    /// Each class's accuracy (recall), by name.
    pub per_class: Vec<ClassAccuracy>,
    /// Rows: true class, columns: predicted. In JSON `{"classes": N, "cells": [[true,
    /// predicted, count], ...]}` (the non-zero cells: it scales to any number of classes).
    #[serde(serialize_with = "confusion_json")]
    pub confusion: ConfusionMatrix,
}

fn confusion_json<S: serde::Serializer>(m: &ConfusionMatrix, s: S) -> Result<S::Ok, S::Error> {
    let cells: Vec<[u64; 3]> = m.cells().map(|((t, p), n)| [t as u64, p as u64, n]).collect();
    serde::Serialize::serialize(
        &serde_json::json!({"classes": m.num_classes(), "cells": cells}),
        s,
    )
}

/// One class's accuracy in an [`EvalReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassAccuracy {
    /// The class name.
    pub class: String,
    /// Its accuracy; `None` without samples.
    pub accuracy: Option<f64>,
}

impl EvalReport {
    /// The report of `metrics` and `confusion` (classes named by `names`) of the test split.
    pub fn test(
        weights: PathBuf,
        data: PathBuf,
        metrics: EvalMetrics,
        confusion: &ConfusionMatrix,
        names: &[String],
    ) -> Self {
        Self {
            weights,
            data,
            split: "test",
            metrics,
            per_class: names
                .iter()
                .zip(confusion.per_class_accuracy())
                .map(|(c, a)| ClassAccuracy {
                    class: c.clone(),
                    accuracy: a,
                })
                .collect(),
            confusion: confusion.clone(),
        }
    }
}

/// Classes listed by name when there are too many for the whole matrix.
pub const WORST_SHOWN: usize = 20;

/// The lines `kiln eval` prints.
impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.metrics;
        writeln!(
            f,
            "kiln eval: {} on {} ({} split, {} images)",
            self.weights.display(),
            self.data.display(),
            self.split,
            m.samples
        )?;
        writeln!(
            f,
            "loss={:.4} accuracy={:.4} top5={:.4}",
            m.loss, m.accuracy, m.top5
        )?;
        let names: Vec<String> = self.per_class.iter().map(|c| c.class.clone()).collect();
        let classes = self.confusion.num_classes();
        if classes > crate::metrics::FULL_MATRIX_UP_TO {
            // Thousands of classes would print hundreds of megabytes.
            writeln!(
                f,
                "the {} of {classes} classes with the lowest accuracy (`--confusion FILE.csv` writes every cell):",
                WORST_SHOWN.min(classes)
            )?;
            return f.write_str(&self.confusion.worst_classes_markdown(&names, WORST_SHOWN));
        }
        writeln!(f, "per-class accuracy:")?;
        for c in &self.per_class {
            match c.accuracy {
                Some(a) => writeln!(f, "  {:<12} {a:.4}", c.class)?,
                None => writeln!(f, "  {:<12} (no samples)", c.class)?,
            }
        }
        writeln!(f, "confusion matrix (rows: true class, columns: predicted):")?;
        f.write_str(&self.confusion.to_markdown(&names))
    }
}

/// What [`import_torchvision`] writes: torchvision weights as a kiln checkpoint.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The architecture (a `--model` name's config).
    pub architecture: ModelConfig,
    /// The state dict (`.pth` or `.safetensors`).
    pub weights: PathBuf,
    /// The folder to write `model.bpk` and its spec into (created; must not hold a `model.bpk`).
    pub out: PathBuf,
    /// Classes of the weights' classifier.
    pub classes: usize,
    /// The normalization they were trained with.
    pub normalization: kiln_transforms::NormalizationSpec,
    /// Their input size (default: the architecture's).
    pub input_size: Option<[usize; 2]>,
    /// Class names, one per class, or none.
    pub class_names: Vec<String>,
}

/// Imports torchvision weights as a kiln checkpoint `out/model.bpk` with its spec (the
/// architecture, normalization, input size, classes and torchvision's evaluation recipe), which
/// [`Trained::open`] reads without a run file. Returns it opened.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for class names that do not match the classes or an `out`
/// that holds a `model.bpk`; the import's errors (missing or unused tensors).
pub fn import_torchvision(r: &ImportRequest, device: &Device) -> Result<Trained, TrainError> {
    let model_path = import_target(&r.out, r.classes, &r.class_names)?;
    let [c, dh, dw] = r.architecture.default_input();
    let [h, w] = r.input_size.unwrap_or([dh, dw]);
    let spec = PretrainedSpec::torchvision(
        r.architecture.clone(),
        r.normalization.clone(),
        [c, h, w],
        r.classes,
        r.class_names.clone(),
    );
    let path = kiln_models::import::import_torchvision(&r.weights, &spec, &model_path, device)?;
    Ok(Trained {
        path,
        architecture: r.architecture.clone(),
        spec,
    })
}

/// `out/model.bpk` for an import, checked: the class names (if any) one per class, no
/// `model.bpk` there yet; `out` created.
pub(crate) fn import_target(
    out: &Path,
    classes: usize,
    class_names: &[String],
) -> Result<PathBuf, TrainError> {
    let invalid = |field, value: String, reason: String| TrainError::InvalidConfig { field, value, reason };
    if !class_names.is_empty() && class_names.len() != classes {
        return Err(invalid(
            "class_names",
            format!("{} names", class_names.len()),
            format!("the weights have {classes} classes"),
        ));
    }
    let model_path = out.join("model.bpk");
    if model_path.exists() {
        return Err(invalid(
            "out",
            model_path.display().to_string(),
            "exists already; choose another folder".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::Write {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(model_path)
}

/// One input's most probable classes ([`Trained::predict`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The input's name: its file, or `file.npy[i]`.
    pub input: String,
    /// The `k` most probable classes, most probable first.
    pub top_k: Vec<ClassProbability>,
}

/// A class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassProbability {
    /// The class index (the label).
    pub index: usize,
    /// Its name (the index when the weights have no class names).
    pub class: String,
    /// Softmax probability.
    pub probability: f32,
}

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
        file.model = kiln_models::AnyModel::Classifier(self.architecture.clone());
        file.transforms.normalization = Some(self.spec.normalization.clone());
        file.transforms.eval = self.spec.eval.clone();
        file.data.jpeg_draft = self.spec.jpeg_draft;
        file
    }

    /// For image folders whose evaluation stages end at another size than the weights' input:
    /// torchvision's resize-shorter (size / 0.875) + centre crop to the weights' input size.
    pub fn fit_eval_stages(&self, file: &mut crate::config::RunFile) {
        let [_, h, w] = self.spec.input_chw;
        if file.data.format == crate::config::DataFormat::ImageFolder
            && file.transforms.eval_size() != Some([h, w])
        {
            file.transforms.eval = kiln_transforms::compose::Stage::torchvision_eval([h, w]);
        }
    }

    /// The weights' figures on the test split of `file`'s data (resolved; for image folders,
    /// evaluated at the weights' input size), in batches of `batch_size` (default: the run
    /// file's `train.batch_size`). Returns the report and the data's warnings.
    ///
    /// # Errors
    ///
    /// A normalization that differs from the weights', data with another number of classes than
    /// the weights' outputs, the data's and the evaluation's errors.
    pub fn evaluate_run_file(
        &self,
        file: &RunFile,
        batch_size: Option<usize>,
        device: &Device,
    ) -> Result<(EvalReport, Vec<String>), TrainError> {
        let mut file = file.clone();
        self.fit_eval_stages(&mut file);
        self.check_run_file(&file)?;
        let data = crate::data::Splits::open(&file)?;
        if data.classes.len() != self.spec.num_classes {
            return Err(TrainError::InvalidConfig {
                field: "data",
                value: data.root.display().to_string(),
                reason: format!(
                    "it has {} classes but the weights {} outputs",
                    data.classes.len(),
                    self.spec.num_classes
                ),
            });
        }
        let (metrics, confusion) = self.evaluate(
            data.test.as_ref(),
            batch_size.unwrap_or(file.train.batch_size),
            device,
        )?;
        let report = EvalReport::test(
            self.path.clone(),
            data.root.clone(),
            metrics,
            &confusion,
            &data.classes,
        );
        Ok((report, data.warnings))
    }

    /// The normalization `file` applies (its data resolved), checked against the one the
    /// weights were trained with.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the weights when the two differ; an unresolvable
    /// normalization.
    pub fn check_run_file(&self, file: &RunFile) -> Result<Normalization, TrainError> {
        let norm = file.transforms.normalization(file.data.format).resolve()?;
        self.spec
            .check_normalization(&norm, false)
            .map_err(|e| TrainError::InvalidConfig {
                field: "weights",
                value: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
        Ok(norm)
    }

    /// Class probabilities for an image file, a folder of images or a `.npy` of model-ready
    /// inputs, preprocessed as the weights expect: their spec's normalization (which `file`, the
    /// run file they were trained with, when given and resolved, must agree on) and evaluation
    /// stages (`file`'s, when it has some). Returns the `top_k` classes of each input, and every
    /// probability (`[N, classes]`, row-major).
    ///
    /// # Errors
    ///
    /// A normalization that differs from the weights', the inputs' errors ([`inputs`]), loading
    /// the weights.
    pub fn predict(
        &self,
        input: &Path,
        file: Option<&RunFile>,
        top_k: usize,
        device: &Device,
    ) -> Result<(Vec<Prediction>, Vec<f32>), TrainError> {
        let norm = match file {
            Some(f) => {
                kiln_data::decode::set_max_pixels(f.data.max_image_pixels);
                self.check_run_file(f)?
            }
            None => self.spec.normalization.resolve()?,
        };
        let [c, h, w] = self.spec.input_chw;
        let stages = match file {
            Some(f) if !f.transforms.eval.is_empty() => f.transforms.eval.clone(),
            _ => self.spec.eval.clone(),
        };
        let eval = (!stages.is_empty()).then(|| Compose {
            stages,
            normalization: self.spec.normalization.clone(),
            erasing: 0.0,
        });
        // JPEGs decoded at reduced size as in evaluation, when the weights were evaluated so.
        let jpeg_draft = file.map_or(self.spec.jpeg_draft, |f| f.data.jpeg_draft);
        let draft = eval.as_ref().filter(|_| jpeg_draft).and_then(Compose::draft);
        let (names, data, n) = inputs(input, &norm, eval.as_ref(), draft.as_ref(), [c, h, w])?;
        let images = Tensor::<4>::from_data(TensorData::new(data, [n, c, h, w]), device);
        let probs = self.probabilities(images, device)?;
        let classes = self.spec.num_classes;
        let k = top_k.clamp(1, classes.max(1));
        let predictions = names
            .into_iter()
            .zip(probs.chunks(classes.max(1)))
            .map(|(input, row)| {
                let mut order: Vec<usize> = (0..row.len()).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                Prediction {
                    input,
                    top_k: order[..k.min(row.len())]
                        .iter()
                        .map(|&j| ClassProbability {
                            index: j,
                            class: self.class_name(j),
                            probability: row[j],
                        })
                        .collect(),
                }
            })
            .collect();
        Ok((predictions, probs))
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
/// resized to the input size, and normalised (colour JPEGs decoded at reduced size where `draft`
/// allows: [`kiln_data::decode::imread_draft`]); a `.npy` file is taken as model-ready already
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
    draft: Option<&kiln_data::decode::DraftSize>,
    chw: [usize; 3],
) -> Result<(Vec<String>, Vec<f32>, usize), TrainError> {
    if input.extension().is_some_and(|e| e == "npy") {
        // A model-ready array, and nothing else: float32, normalised, finite, [N,] C, H, W.
        let a = kiln_data::npy::read(input)?;
        if a.dtype != "float32" {
            return Err(invalid_input(
                input,
                format!(
                    "it holds {} values; a .npy is taken as model-ready input: float32, normalised as the weights expect, [N,] C, H, W (what `kiln transform --out x.npy` writes). For raw pixels give the image files instead",
                    a.dtype
                ),
            ));
        }
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
        if n == 0 {
            return Err(invalid_input(
                input,
                format!("shape {:?} holds no samples", a.shape),
            ));
        }
        // "value V of sample S is X": where in the array a bad value sits.
        let per = chw.iter().product::<usize>();
        let at = |i: usize| format!("value {} of sample {} is {}", i % per, i / per, a.data[i]);
        if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
            return Err(invalid_input(
                input,
                format!("{}: model-ready input must be finite", at(i)),
            ));
        }
        // Pixels normalised this way lie in [lo, hi]; far outside, the array is raw pixels (0-255
        // as float) or normalised otherwise.
        let top = match norm.scale {
            kiln_transforms::Scale::Unit => 1.0,
            kiln_transforms::Scale::Byte => 255.0,
        };
        let ends = norm
            .mean
            .iter()
            .zip(&norm.std)
            .flat_map(|(m, s)| [-m / s, (top - m) / s]);
        let (lo, hi) = ends.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        // Generous (a span each way: noise-like test inputs pass); 0-255 floats never do.
        let slack = hi - lo;
        if let Some(i) = a.data.iter().position(|v| *v < lo - slack || *v > hi + slack) {
            return Err(invalid_input(
                input,
                format!(
                    "{}, far outside [{lo:.3}, {hi:.3}] where pixels normalised by '{}' lie: the array is not model-ready (raw 0-255 pixels, or another normalization?); `kiln transform --out x.npy` writes model-ready arrays, or give the image files",
                    at(i),
                    norm.name
                ),
            ));
        }
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
        let x = preprocess(f, norm, eval, draft, chw)?;
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
    draft: Option<&kiln_data::decode::DraftSize>,
    [c, h, w]: [usize; 3],
) -> Result<Vec<f32>, TrainError> {
    let mut rng = kiln_data::SampleRng::new(0);
    let colour = |path: &Path| match draft {
        Some(draft) => kiln_data::decode::imread_draft(path, draft),
        None => kiln_data::decode::imread(path),
    };
    Ok(match (c, eval) {
        (1, Some(e)) => e
            .apply::<kiln_data::Gray>(&kiln_data::decode::imread_gray(path)?, &mut rng)?
            .into_vec(),
        (3, Some(e)) => e.apply::<kiln_data::Bgr>(&colour(path)?, &mut rng)?.into_vec(),
        (1, None) => resize_normalize(&kiln_data::decode::imread_gray(path)?, h, w, norm)?.into_vec(),
        (3, None) => resize_normalize(&colour(path)?, h, w, norm)?.into_vec(),
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

/// The formats [`Trained::export`] writes.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportFormat {
    /// An ONNX model (any registered architecture): `input` → `logits`, `probabilities`, with
    /// the preprocessing in its metadata ([`kiln_models::onnx`]).
    Onnx(kiln_models::onnx::OnnxOptions),
    /// torchvision's state-dict layout as `.safetensors` (the ResNets), for PyTorch's
    /// `load_state_dict`.
    TorchvisionSafetensors,
}

/// What [`Trained::export`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Exported {
    /// The file.
    pub path: PathBuf,
    /// `onnx` or `safetensors`.
    pub format: &'static str,
    /// Its size.
    pub bytes: u64,
    /// The graph's nodes by operator, in first-use order (ONNX only).
    pub operators: Vec<OperatorCount>,
}

/// How many nodes of one operator an exported graph has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorCount {
    /// The ONNX operator (`Conv`).
    pub op: String,
    /// Its nodes.
    pub count: usize,
}

impl Trained {
    /// Writes the weights as `format` to `out` (atomically: a failed write leaves any previous
    /// file whole). The model is rebuilt from the spec, loaded on the CPU.
    ///
    /// # Errors
    ///
    /// The load's errors; [`kiln_models::ModelError::Export`] naming a layer without an ONNX
    /// form or a model torchvision does not have; [`kiln_models::ModelError::InvalidConfig`]
    /// for unusable ONNX options; the write's errors.
    pub fn export(&self, format: &ExportFormat, out: &Path) -> Result<Exported, TrainError> {
        let device = Device::flex();
        let f = Export {
            format,
            spec: &self.spec,
            out,
        };
        let loaded = Loaded { path: &self.path, f };
        let operators = self.architecture.build_with(
            self.spec.input_chw,
            self.spec.num_classes,
            &device,
            loaded,
        )???;
        let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
        Ok(Exported {
            path: out.to_path_buf(),
            format: match format {
                ExportFormat::Onnx(_) => "onnx",
                ExportFormat::TorchvisionSafetensors => "safetensors",
            },
            bytes,
            operators,
        })
    }
}

struct Export<'a> {
    format: &'a ExportFormat,
    spec: &'a PretrainedSpec,
    out: &'a Path,
}

impl ModelFn for Export<'_> {
    type Output = Result<Vec<OperatorCount>, TrainError>;

    fn call<M: ZooModel>(self, model: M) -> Self::Output {
        match self.format {
            ExportFormat::Onnx(options) => {
                use prost::Message;
                let onnx =
                    kiln_models::onnx::export_proto(&model, self.spec.input_chw, options, Some(self.spec))?;
                let mut operators: Vec<OperatorCount> = Vec::new();
                for node in onnx.graph.iter().flat_map(|g| &g.node) {
                    match operators.iter_mut().find(|o| o.op == node.op_type()) {
                        Some(o) => o.count += 1,
                        None => operators.push(OperatorCount {
                            op: node.op_type().to_string(),
                            count: 1,
                        }),
                    }
                }
                kiln_data::paths::write_file(self.out, &onnx.encode_to_vec())?;
                Ok(operators)
            }
            ExportFormat::TorchvisionSafetensors => {
                kiln_models::weights::export_torchvision_safetensors(&model, self.out, Some(self.spec))?;
                Ok(Vec::new())
            }
        }
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
