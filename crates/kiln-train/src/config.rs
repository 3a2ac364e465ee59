//! The run file: every setting of a training run in one TOML file (`kiln train --config run.toml`).
//!
//! ```toml
//! [data]
//! format = "fashion-mnist"           # idx files (gzipped or raw)
//! path = "../data/fashion-mnist-mini" # relative to this file's folder
//! val_fraction = 0.1
//!
//! [transforms]
//! normalization = { preset = "fashion-mnist" }
//! train = [
//!   { op = "random-crop", height = 28, width = 28, padding = 2 },
//!   { op = "horizontal-flip", p = 0.5 },
//! ]
//!
//! [model]
//! name = "reference-cnn"
//!
//! [train]
//! epochs = 10
//! lr = 0.05
//! schedule = { schedule = { name = "cosine" }, warmup = { length = 1, unit = "epoch", start_factor = 0.1 } }
//!
//! [run]
//! device = "flex"
//! ```
//!
//! Every section and key is optional (defaults in `docs/config.md`). An unknown key or a wrong type
//! is a [`ConfigError`] naming the file, the line and column, and the closest valid key.
//! [`RunFile::load`] applies `--set section.key=value` overrides after the file, so a command
//! line can change one setting without editing it.

use std::path::{Path, PathBuf};

use kiln_transforms::NormalizationSpec;
use kiln_transforms::compose::{Compose, Stage};
use serde::{Deserialize, Serialize};

use crate::{DeviceSpec, OnBadSample, TrainConfig, TrainError};

/// A run file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error(
        "{path}{}: {message}{}",
        if *line > 0 { format!(":{line}:{column}") } else { String::new() },
        hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default()
    )]
    Invalid {
        /// The file (or `--set` for an override).
        path: PathBuf,
        /// 1-based line (0 when the position is unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
        /// The closest valid key or value, when there is one.
        hint: Option<String>,
    },
    /// A `--set` that is not `section.key=value`.
    #[error("--set {given}: {reason}")]
    Override {
        /// The override as given.
        given: String,
        /// Why it cannot be applied.
        reason: String,
    },
}

/// Which dataset format `[data] path` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataFormat {
    /// Decided from the files in `path` ([`RunFile::resolve_data`]; idx files are taken as
    /// Fashion-MNIST). Until then the methods below answer as for Fashion-MNIST, the vendored
    /// default.
    #[default]
    Auto,
    /// Fashion-MNIST's four idx files (gzipped or raw), 28×28 grey, 10 classes.
    FashionMnist,
    /// MNIST's four idx files.
    Mnist,
    /// CIFAR-10's binary version (`data_batch_1..5.bin`, `test_batch.bin`), 32×32 colour.
    Cifar10,
    /// Class folders of images, in one of two layouts: `path/<class>/*.jpg` alone (train,
    /// validation and test drawn from it: `val_fraction`, `test_fraction`, stratified, seeded), or
    /// torchvision's `path/train/<class>/*.jpg` + `path/val/<class>/*.jpg` (+ `path/test/...`;
    /// without it `val/` is the test split and validation is held out of `train/`). Images of any
    /// size: `[transforms] eval` must end in a fixed size (by default the model's input size).
    ImageFolder,
    /// COCO detection: `path` is the images folder, `annotations` the instances JSON. Detection
    /// data is inspected (`kiln inspect`: a sample's boxes and the first padded detection batch)
    /// and batched in code (`examples/detection.rs`); kiln's training loop trains classifiers.
    Coco,
}

impl std::str::FromStr for DataFormat {
    type Err = String;

    /// The run file's names: `auto`, `fashion-mnist`, `mnist`, `cifar10`, `image-folder`, `coco`.
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            format!("unknown format `{s}`: use auto, fashion-mnist, mnist, cifar10, image-folder or coco")
        })
    }
}

impl DataFormat {
    /// The dataset's own normalization preset (statistics of its training split).
    pub fn normalization(self) -> NormalizationSpec {
        match self {
            DataFormat::Auto | DataFormat::FashionMnist => NormalizationSpec::FashionMnist,
            DataFormat::Mnist => NormalizationSpec::Mnist,
            DataFormat::Cifar10 => NormalizationSpec::Cifar10,
            DataFormat::ImageFolder | DataFormat::Coco => NormalizationSpec::TorchImagenet,
        }
    }

    /// Class names, in label order (ImageFolder: found in the data, empty here).
    pub fn class_names(self) -> Vec<String> {
        match self {
            DataFormat::ImageFolder | DataFormat::Coco => Vec::new(),
            DataFormat::Auto | DataFormat::FashionMnist => kiln_data::FASHION_MNIST_CLASSES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            DataFormat::Mnist => (0..10).map(|d| d.to_string()).collect(),
            DataFormat::Cifar10 => kiln_data::CIFAR10_CLASSES.iter().map(|c| c.to_string()).collect(),
        }
    }

    /// The images' `[channels, height, width]` (ImageFolder: colour, the size `[transforms] eval`
    /// gives; `[3, 0, 0]` here).
    pub fn input_chw(self) -> [usize; 3] {
        match self {
            DataFormat::Auto | DataFormat::FashionMnist | DataFormat::Mnist => [1, 28, 28],
            DataFormat::Cifar10 => [3, 32, 32],
            DataFormat::ImageFolder | DataFormat::Coco => [3, 0, 0],
        }
    }
}

/// `[data]`: where the images are and how they are split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// The dataset's format.
    pub format: DataFormat,
    /// Its folder, relative to the config file's folder; absent: the vendored Fashion-MNIST subset.
    pub path: Option<PathBuf>,
    /// Fraction of the training split held out for validation (seeded by `train.seed`).
    pub val_fraction: f64,
    /// An image folder of class folders alone (no `train/`): the fraction of each class kept
    /// for the test split (seeded by `train.seed`, before validation is drawn).
    pub test_fraction: f64,
    /// A sample that cannot be read or transformed: `"error"` stops, `"skip"` leaves it out and
    /// lists it in the run report.
    pub on_bad_sample: OnBadSample,
    /// Under `"skip"`, the fraction of bad samples beyond which the run stops anyway.
    pub max_bad_fraction: f64,
    /// `format = "coco"` only: the annotations JSON, relative to the config file's folder.
    pub annotations: Option<PathBuf>,
    /// The most pixels one image may have (width × height, from its header, before decoding):
    /// larger files are refused naming them. PIL's decompression-bomb limit by default.
    pub max_image_pixels: u64,
    /// Image folders: decode a JPEG at 1/2, 1/4 or 1/8 of its size when the first transform stage
    /// resizes it at least that much (PIL's `Image.draft`): faster and smaller for datasets of
    /// large photos; pixels then differ slightly from a full decode (`docs/data.md`). Off by default.
    pub jpeg_draft: bool,
    /// The folder relative paths were resolved against (the run file's), for messages.
    #[serde(skip)]
    pub relative_to: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            format: DataFormat::Auto,
            path: None,
            val_fraction: 0.1,
            test_fraction: 0.1,
            on_bad_sample: OnBadSample::Error,
            max_bad_fraction: 0.01,
            annotations: None,
            max_image_pixels: kiln_data::decode::DEFAULT_MAX_PIXELS,
            jpeg_draft: false,
            relative_to: None,
        }
    }
}

/// `[transforms]`: normalization and training augmentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TransformsConfig {
    /// The normalization of every split; absent: the dataset's own statistics
    /// ([`DataFormat::normalization`]).
    pub normalization: Option<NormalizationSpec>,
    /// Augmentation stages of training batches, in order (none by default).
    pub train: Vec<Stage>,
    /// Probability of random erasing after normalization (training only).
    pub erasing: f64,
    /// Stages applied to every unaugmented image (validation, test, predict): e.g. resize then
    /// centre crop, for datasets whose images differ in size. None by default.
    pub eval: Vec<Stage>,
}

impl TransformsConfig {
    /// The normalization for data in `format`: the configured one, else the dataset's preset.
    pub fn normalization(&self, format: DataFormat) -> NormalizationSpec {
        self.normalization
            .clone()
            .unwrap_or_else(|| format.normalization())
    }

    /// The evaluation pipeline for data in `format`, when `eval` has stages.
    pub fn eval_compose(&self, format: DataFormat) -> Option<Compose> {
        (!self.eval.is_empty()).then(|| Compose {
            stages: self.eval.clone(),
            normalization: self.normalization(format),
            erasing: 0.0,
        })
    }

    /// The `[height, width]` the evaluation stages end with, when the last size-setting stage
    /// fixes it (resize, centre crop, a fixed-size crop).
    pub fn eval_size(&self) -> Option<[usize; 2]> {
        for stage in self.eval.iter().rev() {
            match *stage {
                Stage::Resize { height, width }
                | Stage::CenterCrop { height, width }
                | Stage::RandomResizedCrop { height, width }
                | Stage::RandomCrop { height, width, .. } => return Some([height, width]),
                // The size depends on the image.
                Stage::ResizeShorter { .. } => return None,
                _ => {}
            }
        }
        None
    }

    /// The training augmentation for data in `format` as a [`Compose`], when there is any.
    pub fn augmentation(&self, format: DataFormat) -> Option<Compose> {
        (!self.train.is_empty() || self.erasing > 0.0).then(|| Compose {
            stages: self.train.clone(),
            normalization: self.normalization(format),
            erasing: self.erasing,
        })
    }
}

/// `[model]`: the model registry's config (re-exported from kiln-models).
pub use kiln_models::{AnyModel, ModelConfig};

/// `[checkpoints]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointsConfig {
    /// Epoch checkpoints to keep (the best model is kept either way).
    pub keep_last: usize,
    /// A checkpoint that cannot be written (disk full, permissions): `"stop"` the run (default)
    /// or `"continue"` without it. Reported at once either way; earlier checkpoints stay intact.
    pub on_error: crate::OnCheckpointError,
}

impl Default for CheckpointsConfig {
    fn default() -> Self {
        Self {
            keep_last: 2,
            on_error: crate::OnCheckpointError::Stop,
        }
    }
}

/// `[run]`: where it runs and where it writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunSection {
    /// The device (`flex`, `wgpu`, `cuda:N`, `ndarray`).
    pub device: DeviceSpec,
    /// Several devices for data parallelism (overrides `device`; see `docs/gpu.md`).
    pub devices: Vec<DeviceSpec>,
    /// The run directory (must be empty or absent); absent: `runs/run-<UTC time>`.
    pub out: Option<PathBuf>,
    /// Start from these weights (a kiln `.bpk` of the same architecture; with a
    /// `<weights>.kiln.json` spec whose class count differs from the data's, the classifier head
    /// is replaced by a fresh one — see `[finetune]`).
    pub init_from: Option<PathBuf>,
    /// A TensorBoard log folder: the run's event file goes to `<tensorboard>/<run folder name>/`
    /// (`tensorboard --logdir <tensorboard>` then compares runs). Absent: none written.
    pub tensorboard: Option<PathBuf>,
}

/// `[finetune]`: how weights loaded with `run.init_from` are trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FineTuneConfig {
    /// Train only the classifier head: the backbone gets no gradients and its BatchNorm layers
    /// keep the pretrained running statistics (PyTorch's `requires_grad = False` **and**
    /// `backbone.eval()`).
    pub freeze_backbone: bool,
    /// The backbone's learning rate as a fraction of the head's (e.g. 0.1); 1 trains both alike.
    pub backbone_lr_factor: f64,
    /// Layer-wise learning-rate decay (ConvNeXt and ViT, grouped as timm groups them): the head
    /// learns at the learning rate, the layer before it at `layer_decay` times it, the one
    /// before that at `layer_decay²`, down to the stem. Typical: 0.65–0.9. Absent: none.
    pub layer_decay: Option<f64>,
}

impl Default for FineTuneConfig {
    fn default() -> Self {
        Self {
            freeze_backbone: false,
            backbone_lr_factor: 1.0,
            layer_decay: None,
        }
    }
}

impl FineTuneConfig {
    /// Whether anything differs from training every parameter alike.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A whole run file. Every section is optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RunFile {
    /// `[data]`.
    pub data: DataConfig,
    /// `[transforms]`.
    pub transforms: TransformsConfig,
    /// `[model]`.
    pub model: AnyModel,
    /// `[train]`: the [`TrainConfig`] fields.
    pub train: TrainConfig,
    /// `[checkpoints]`.
    pub checkpoints: CheckpointsConfig,
    /// `[finetune]` (with `run.init_from`).
    pub finetune: FineTuneConfig,
    /// `[run]`.
    pub run: RunSection,
}

impl RunFile {
    /// `[model]` as a classifier, for what trains or evaluates classifiers only (`what`, e.g.
    /// `"kiln doctor"`).
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] when `[model]` is a detector.
    pub fn classifier(&self, what: &str) -> Result<&ModelConfig, TrainError> {
        self.model.classifier().ok_or_else(|| TrainError::InvalidConfig {
            field: "model.name",
            value: self.model.id(),
            reason: format!("{what} works on classifiers; {} is a detector", self.model.id()),
        })
    }

    /// Checks every setting that can be checked without the data: the `[train]` fields,
    /// the split fractions, and `[finetune]` against `run.init_from`.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.train.validate()?;
        let bad = |field: &'static str, value: String, reason: String| {
            Err(TrainError::InvalidConfig { field, value, reason })
        };
        let (val, test) = (self.data.val_fraction, self.data.test_fraction);
        if !(0.0..1.0).contains(&val) {
            return bad("data.val_fraction", val.to_string(), "must be in [0, 1)".into());
        }
        if self.data.max_image_pixels == 0 {
            return bad("data.max_image_pixels", "0".into(), "must be at least 1".into());
        }
        if self.data.jpeg_draft && !matches!(self.data.format, DataFormat::Auto | DataFormat::ImageFolder) {
            return bad(
                "data.jpeg_draft",
                "true".into(),
                "applies to image folders of JPEG files (data.format = \"image-folder\")".into(),
            );
        }
        if !(0.0..1.0).contains(&test) {
            return bad("data.test_fraction", test.to_string(), "must be in [0, 1)".into());
        }
        // The test fraction only applies where the test split is drawn from the training images
        // (an image folder without its own test/); the split's size is checked once it is known.
        if self.data.format == DataFormat::ImageFolder && val + test >= 1.0 {
            return bad(
                "data.val_fraction",
                val.to_string(),
                format!("with data.test_fraction = {test} it leaves no training images"),
            );
        }
        for (section, stages) in [
            ("transforms.train", &self.transforms.train),
            ("transforms.eval", &self.transforms.eval),
        ] {
            for (i, stage) in stages.iter().enumerate() {
                if let Err(reason) = stage.check() {
                    return Err(TrainError::InvalidConfig {
                        field: section,
                        value: format!("stage {i}: {}", toml_text(stage)),
                        reason,
                    });
                }
            }
        }
        if self.run.init_from.is_none() && !self.finetune.is_default() {
            return bad(
                "finetune",
                toml_text(&self.finetune),
                "[finetune] settings need weights to start from: set run.init_from".into(),
            );
        }
        let f = self.finetune.backbone_lr_factor;
        if !(f.is_finite() && f > 0.0) {
            return bad(
                "finetune.backbone_lr_factor",
                f.to_string(),
                "must be a positive number (0.1 gives the backbone a tenth of the head's learning rate); to train the head alone use finetune.freeze_backbone = true".into(),
            );
        }
        if let Some(d) = self.finetune.layer_decay {
            if !(d.is_finite() && d > 0.0 && d <= 1.0) {
                return bad(
                    "finetune.layer_decay",
                    d.to_string(),
                    "must be in (0, 1] (0.75 gives each layer three quarters of the next one's learning rate)".into(),
                );
            }
            if f != 1.0 || self.finetune.freeze_backbone {
                return bad(
                    "finetune.layer_decay",
                    d.to_string(),
                    "sets every layer's learning rate itself: leave finetune.backbone_lr_factor at 1 and finetune.freeze_backbone off".into(),
                );
            }
        }
        Ok(())
    }

    /// Reads `path`, applies `overrides` (`section.key=value`, the value in TOML syntax, a bare
    /// word taken as a string) and resolves relative paths against the file's folder.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file, line, column and the closest valid key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut file = Self::parse(&text, path, overrides)?;
        let dir = path.parent().unwrap_or(Path::new(""));
        file.resolve_paths(dir);
        Ok(file)
    }

    /// Parses `text` (as if read from `path`) and applies `overrides`; paths stay as written.
    ///
    /// # Errors
    ///
    /// As [`RunFile::load`].
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        // Deserialise the text itself first: its errors carry positions (a table built from it
        // would not), so a mistake in the file is reported against the file, not `--set`.
        let file: Self = toml::from_str(text).map_err(|e| invalid(path, Some(text), &e))?;
        if overrides.is_empty() {
            return Ok(file);
        }
        let mut table: toml::Table = toml::from_str(text).map_err(|e| invalid(path, Some(text), &e))?;
        for given in overrides {
            apply_override(&mut table, given)?;
        }
        toml::Table::try_into::<Self>(table).map_err(|e| invalid(Path::new("--set"), None, &e))
    }

    /// Makes relative paths (data, output, initial weights) relative to `dir` instead.
    pub fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if self.data.path.as_ref().is_some_and(|p| p.is_relative()) {
            self.data.relative_to = Some(dir.to_path_buf());
        }
        self.data.path.as_mut().map(fix);
        self.data.annotations.as_mut().map(fix);
        self.run.out.as_mut().map(fix);
        self.run.init_from.as_mut().map(fix);
        self.run.tensorboard.as_mut().map(fix);
    }

    /// This file as TOML (what a run directory keeps as `config.toml`).
    ///
    /// # Errors
    ///
    /// A value TOML cannot hold (a non-finite number).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: PathBuf::from("config.toml"),
            line: 0,
            column: 0,
            message: e.to_string(),
            hint: None,
        })
    }
}

/// A setting as the run file writes it (TOML: `{ op = "resize", height = 0, width = 32 }`), for
/// messages (never Rust's debug text).
pub(crate) fn toml_text<T: Serialize + ?Sized>(value: &T) -> String {
    toml::Value::try_from(value).map_or_else(|e| e.to_string(), |v| v.to_string())
}

/// `--set a.b.c=value` into `table`.
fn apply_override(table: &mut toml::Table, given: &str) -> Result<(), ConfigError> {
    let fail = |reason: &str| ConfigError::Override {
        given: given.to_string(),
        reason: reason.to_string(),
    };
    let (key, value) = given
        .split_once('=')
        .ok_or_else(|| fail("expected section.key=value, e.g. train.lr=0.1"))?;
    let keys: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(fail("empty key; expected section.key=value"));
    }
    let value = value.trim();
    // A TOML value (number, bool, array, inline table, quoted string), else a bare string.
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, parents) = keys.split_last().ok_or_else(|| fail("empty key"))?;
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry((*k).to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| fail(&format!("`{k}` is not a section")))?;
    }
    cur.insert((*last).to_string(), parsed);
    Ok(())
}

/// A TOML error as [`ConfigError::Invalid`], with a position when the text is known and a hint
/// for an unknown key or variant.
fn invalid(path: &Path, text: Option<&str>, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match (text, e.span()) {
        (Some(text), Some(span)) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        _ => (0, 0),
    };
    let message = e.message().trim().to_string();
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        hint: closest_hint(&message),
        message,
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"), the
/// closest expected name.
fn closest_hint(message: &str) -> Option<String> {
    let kind = ["unknown field `", "unknown variant `"]
        .into_iter()
        .find(|k| message.contains(k))?;
    let rest = &message[message.find(kind)? + kind.len()..];
    let given = &rest[..rest.find('`')?];
    let expected = &rest[rest.find("expected")?..];
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(given, c), *c))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    // The message lists every valid name already; hint only at a close one.
    (best.0 >= 0.4).then(|| format!("did you mean `{}`?", best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunFile, ConfigError> {
        RunFile::parse(text, Path::new("run.toml"), &[])
    }

    #[test]
    fn settings_in_messages_read_as_the_run_file_writes_them() {
        let stages = vec![Stage::Resize { height: 0, width: 32 }];
        // Keys in name order (toml sorts them).
        assert_eq!(
            toml_text(&stages),
            r#"[{ height = 0, op = "resize", width = 32 }]"#
        );
    }

    #[test]
    fn formats_parse_by_their_run_file_names() {
        for (name, format) in [
            ("auto", DataFormat::Auto),
            ("fashion-mnist", DataFormat::FashionMnist),
            ("mnist", DataFormat::Mnist),
            ("cifar10", DataFormat::Cifar10),
            ("image-folder", DataFormat::ImageFolder),
            ("coco", DataFormat::Coco),
        ] {
            assert_eq!(name.parse::<DataFormat>(), Ok(format));
            // The same name the run file's `format = "…"` takes.
            assert_eq!(
                parse(&format!("[data]\nformat = \"{name}\""))
                    .unwrap()
                    .data
                    .format,
                format
            );
        }
        let err = "jpeg".parse::<DataFormat>().unwrap_err();
        assert!(
            err.contains("unknown format `jpeg`") && err.contains("image-folder"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_file_is_every_default() {
        assert_eq!(parse("").unwrap(), RunFile::default());
    }

    #[test]
    fn a_full_file_reads_every_section() {
        let f = parse(
            r#"
[data]
format = "mnist"
path = "data/mnist"
val_fraction = 0.2

[transforms]
normalization = { preset = "mnist" }
train = [{ op = "random-crop", height = 28, width = 28, padding = 2 }, { op = "horizontal-flip", p = 0.5 }]
erasing = 0.1

[model]
name = "mlp"
widths = [256, 128]
batch_norm = false

[train]
epochs = 3
lr = 0.1
optimizer = { name = "adamw", weight_decay = 0.05 }

[checkpoints]
keep_last = 5
on_error = "continue"

[run]
devices = ["flex", "flex"]
"#,
        )
        .unwrap();
        assert_eq!(f.data.format, DataFormat::Mnist);
        assert_eq!(f.data.val_fraction, 0.2);
        assert_eq!(f.transforms.train.len(), 2);
        let aug = f.transforms.augmentation(f.data.format).unwrap();
        assert_eq!((aug.erasing, aug.normalization), (0.1, NormalizationSpec::Mnist));
        assert_eq!(
            f.model,
            AnyModel::Classifier(ModelConfig::Mlp(kiln_models::mlp::MlpArch {
                widths: vec![256, 128],
                batch_norm: false,
                init: None
            }))
        );
        assert_eq!((f.train.epochs, f.train.lr), (3, 0.1));
        assert_eq!(f.train.batch_size, TrainConfig::default().batch_size);
        assert_eq!(f.checkpoints.keep_last, 5);
        assert_eq!(f.checkpoints.on_error, crate::OnCheckpointError::Continue);
        assert_eq!(
            RunFile::default().checkpoints.on_error,
            crate::OnCheckpointError::Stop
        );
        assert_eq!(f.run.devices, vec![DeviceSpec::Flex, DeviceSpec::Flex]);
    }

    #[test]
    fn an_unknown_key_names_file_line_column_and_the_closest_key() {
        let err = parse("[train]\nepochs = 3\nlearning_rate = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("run.toml:3:1: unknown field `learning_rate`"),
            "{err}"
        );
        // `lr` is far from `learning_rate` by edit distance: no guess, the valid keys are listed.
        assert!(!err.contains("did you mean") && err.contains("`lr`"), "{err}");
        let err = parse("[train]\nepoch = 3\n").unwrap_err().to_string();
        assert!(err.contains("did you mean `epochs`?"), "{err}");
        let err = parse("[trian]\n").unwrap_err().to_string();
        assert!(err.contains("did you mean `train`?"), "{err}");
    }

    #[test]
    fn a_wrong_type_or_variant_is_an_error_with_its_position() {
        let err = parse("[train]\n\nepochs = \"ten\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("run.toml:3:10:") && err.contains("expected usize"),
            "{err}"
        );
        let err = parse("[model]\nname = \"resnet-19\"\n").unwrap_err().to_string();
        assert!(
            err.contains("unknown variant `resnet-19`")
                && err.contains("reference-cnn")
                && err.contains("`fcos`"),
            "{err}"
        );
        assert!(err.contains("did you mean `resnet`?"), "{err}");
        // A detector's table is read by its name, its fields checked as a classifier's are.
        let f = parse("[model]\nname = \"fcos\"\nbackbone = \"resnet18\"\nmin_size = 128\n").unwrap();
        let d = f.model.detector().unwrap();
        assert_eq!(d.input_sizes(), [128, 1333]);
        assert!(
            f.classifier("kiln doctor")
                .unwrap_err()
                .to_string()
                .contains("detector")
        );
        let again = RunFile::parse(&f.to_toml().unwrap(), Path::new("again.toml"), &[]).unwrap();
        assert_eq!(again, f);
        let err = parse("[model]\nname = \"fcos\"\nmin_sise = 128\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_sise") && err.contains("min_size"), "{err}");
        let err = parse("[train]\noptimizer = { name = \"adamx\" }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("did you mean `adam`?") || err.contains("did you mean `adamw`?"),
            "{err}"
        );
    }

    #[test]
    fn overrides_apply_after_the_file_and_are_checked_too() {
        let f = RunFile::parse(
            "[train]\nlr = 0.05\n",
            Path::new("run.toml"),
            &[
                "train.lr=0.1".into(),
                "train.epochs = 7".into(),
                "run.device=flex".into(),
                "transforms.train=[{ op = \"horizontal-flip\", p = 0.5 }]".into(),
            ],
        )
        .unwrap();
        assert_eq!((f.train.lr, f.train.epochs), (0.1, 7));
        assert_eq!(f.transforms.train, vec![Stage::HorizontalFlip { p: 0.5 }]);
        let err = RunFile::parse("", Path::new("run.toml"), &["train.lrr=0.1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--set: unknown field `lrr`") && err.contains("did you mean `lr`?"),
            "{err}"
        );
        let err = RunFile::parse("", Path::new("run.toml"), &["train.lr".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected section.key=value"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("configs/run.toml");
        std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
        std::fs::write(
            &cfg,
            "[data]\npath = \"../data/fmnist\"\n[run]\nout = \"/abs/run\"\n",
        )
        .unwrap();
        let f = RunFile::load(&cfg, &[]).unwrap();
        assert_eq!(f.data.path.unwrap(), dir.path().join("configs/../data/fmnist"));
        assert_eq!(f.run.out.unwrap(), PathBuf::from("/abs/run"));
        let err = RunFile::load(&dir.path().join("missing.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read the config") && err.contains("missing.toml"),
            "{err}"
        );
    }

    #[test]
    fn a_file_survives_a_round_trip_through_toml() {
        let f = parse("[model]\nname = \"mlp\"\nwidths = [64]\n[transforms]\ntrain = [{ op = \"horizontal-flip\", p = 0.5 }]\n").unwrap();
        let back = parse(&f.to_toml().unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
