//! A run's data: the format of `[data] path` decided once ([`RunFile::resolve_data`]), and its
//! train / validation / test splits as batch sources ([`Splits::open`]), whatever the format.
//!
//! ```no_run
//! use kiln_train::config::RunFile;
//! use kiln_train::data::Splits;
//!
//! let mut file = RunFile::default();
//! file.data.path = Some("my-images".into()); // DIR/<class>/*.jpg
//! for note in file.resolve_data()? {
//!     println!("{note}"); // what was found, and the defaults it brought
//! }
//! let splits = Splits::open(&file)?;
//! println!("{} classes, {} training images", splits.classes.len(), splits.train.len());
//! # Ok::<(), kiln_train::TrainError>(())
//! ```

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use kiln_data::format::{FolderLayout, Found};
use kiln_data::{MnistDataset, MnistSplit, random_split, stratified_split};
use kiln_transforms::compose::Stage;

use crate::config::{DataFormat, RunFile};
use crate::source::OnBadSample;
use crate::{BatchSource, ClassificationSource, TrainError};

/// One split of any format, as the loop sees it.
pub type Source = Box<dyn BatchSource>;

/// A dataset's three splits as batch sources, whatever its format.
pub struct Splits {
    /// Training batches (augmentation and the bad-sample policy applied).
    pub train: Source,
    /// Validation batches (may be empty).
    pub val: Source,
    /// Test batches.
    pub test: Source,
    /// The folder the files were read from (canonical where it could be resolved).
    pub root: PathBuf,
    /// The model's input `[C, H, W]`.
    pub chw: [usize; 3],
    /// Class names by label.
    pub classes: Vec<String>,
    /// How images are stored after decoding (`"grey"`, `"BGR"`), for descriptions.
    pub stored: &'static str,
    /// What the scan of the files found worth saying (unreadable entries, skipped files).
    pub warnings: Vec<String>,
    /// Image folders whose every file's header [`Splits::check_headers`] reads.
    folders: Vec<kiln_data::ImageFolder>,
}

impl Splits {
    /// Reads the header of every file of an image folder (not the pixels), under the
    /// `"error"` bad-sample policy: a garbage file, one cut before its size, or a decompression
    /// bomb is found before the run writes anything, rather than when its split is first read
    /// (the test split: after every epoch). Other formats are read whole when opened.
    ///
    /// # Errors
    ///
    /// The first bad file, with its index.
    pub fn check_headers(&self) -> Result<(), TrainError> {
        for set in &self.folders {
            set.check_headers()?;
        }
        Ok(())
    }
}

impl RunFile {
    /// Decides `data.format` from the files in `data.path` when it is `auto`, and checks a
    /// requested format against them; for image folders, fills the evaluation stages with the
    /// model's input size when there are none. Returns what it found and decided, in words.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] when `data.path` is missing or holds another format than the
    /// one requested (saying both); the folder's own errors when nothing is recognised.
    pub fn resolve_data(&mut self) -> Result<Vec<String>, TrainError> {
        let Some(dir) = self.data.path.clone() else {
            return Err(TrainError::InvalidConfig {
                field: "data.path",
                value: "(none)".into(),
                reason: "the dataset's folder is needed".into(),
            });
        };
        // A run file's relative path was joined to its folder: say so, not "the current directory".
        if let Some(base) = &self.data.relative_to
            && !dir.is_dir()
        {
            return Err(kiln_data::DataError::RootNotFound {
                given: dir.strip_prefix(base).unwrap_or(&dir).to_path_buf(),
                resolved: std::path::absolute(&dir).unwrap_or_else(|_| dir.clone()),
                also_tried: Vec::new(),
                cwd: std::env::current_dir().unwrap_or_default(),
                hint: format!(
                    "data.path in a run file (and in its --set overrides) is relative to the run file's folder ({}); pass an absolute path",
                    base.display()
                ),
            }
            .into());
        }
        let requested = self.data.format;
        if self.model.detector().is_some() {
            if !matches!(requested, DataFormat::Auto | DataFormat::Coco) {
                return Err(TrainError::InvalidConfig {
                    field: "data.format",
                    value: format_name(requested),
                    reason: format!("{} is a detector: it trains on COCO data", self.model.id()),
                });
            }
            let layout = crate::detection_run::DetectionLayout::find(&dir, self.data.annotations.as_deref())?;
            self.data.format = DataFormat::Coco;
            let split = |s: &Option<crate::detection_run::CocoSplit>| {
                s.as_ref()
                    .map_or("none".to_string(), |s| s.annotations.display().to_string())
            };
            return Ok(vec![format!(
                "found COCO detection data in {}: train {}, val {}, test {}",
                dir.display(),
                layout.train.annotations.display(),
                split(&layout.val),
                split(&layout.test)
            )]);
        }
        let found = match kiln_data::format::detect(&dir) {
            Ok(found) => found,
            // A requested format reports its own missing files (they name what it expects).
            Err(_) if requested != DataFormat::Auto => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let fits = |formats: &[DataFormat]| formats.contains(&requested);
        let format = match &found {
            Found::Idx if fits(&[DataFormat::Mnist]) => DataFormat::Mnist,
            Found::Idx if fits(&[DataFormat::Auto, DataFormat::FashionMnist]) => DataFormat::FashionMnist,
            Found::Cifar10 if fits(&[DataFormat::Auto, DataFormat::Cifar10]) => DataFormat::Cifar10,
            Found::ImageFolder(_) if fits(&[DataFormat::Auto, DataFormat::ImageFolder]) => {
                DataFormat::ImageFolder
            }
            Found::Coco { .. } | Found::CocoSplits { .. } if fits(&[DataFormat::Auto, DataFormat::Coco]) => {
                DataFormat::Coco
            }
            _ => {
                return Err(TrainError::InvalidConfig {
                    field: "data.format",
                    value: format_name(requested),
                    reason: format!(
                        "{} holds {}, not {}; set data.format to match, or leave it out to use what is found",
                        dir.display(),
                        found.describe(),
                        format_name(requested)
                    ),
                });
            }
        };
        self.data.format = format;
        if self.data.jpeg_draft && format != DataFormat::ImageFolder {
            return Err(TrainError::InvalidConfig {
                field: "data.jpeg_draft",
                value: "true".into(),
                reason: format!(
                    "applies to image folders of JPEG files; {} holds {}",
                    dir.display(),
                    found.describe()
                ),
            });
        }
        let mut notes = vec![format!(
            "found {} in {}: data.format = {}",
            found.describe(),
            dir.display(),
            format_name(format)
        )];
        if let (Found::Coco { annotations }, None) = (&found, &self.data.annotations) {
            self.data.annotations = Some(annotations.clone());
        }
        if format == DataFormat::ImageFolder && self.transforms.eval.is_empty() {
            // torchvision's evaluation recipe at the model's input size: the shorter side to
            // size / 0.875, then the centre crop.
            let [_, h, w] = self.classifier("an image folder")?.default_input();
            self.transforms.eval = Stage::torchvision_eval([h, w]);
            let shorter = match self.transforms.eval.first() {
                Some(Stage::ResizeShorter { size }) => *size,
                _ => h.max(w),
            };
            notes.push(format!(
                "evaluation images: shorter side resized to {shorter}, centre crop {h}x{w} (the input size of {}; set [transforms] eval to change)",
                self.model.id()
            ));
        }
        if format == DataFormat::ImageFolder && self.transforms.normalization.is_none() {
            notes.push(
                "normalization: torch-imagenet (ImageNet statistics; `kiln stats` computes the folder's own)"
                    .into(),
            );
        }
        if let Found::ImageFolder(FolderLayout::Classes) = found {
            notes.push(format!(
                "splits: test {} and validation {} of each class, drawn with seed {}",
                self.data.test_fraction, self.data.val_fraction, self.train.seed
            ));
        }
        Ok(notes)
    }
}

/// `fashion-mnist`, as a run file spells it.
fn format_name(format: DataFormat) -> String {
    serde_json::to_value(format)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{format:?}"))
}

/// Which samples of a dataset a split takes.
enum Part {
    All,
    Indices(Vec<usize>),
}

impl Splits {
    /// The training split (validation held out, augmentation and the bad-sample policy applied),
    /// the validation split and the test split of `file`'s data. Call
    /// [`RunFile::resolve_data`] first.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] for COCO data (a detection format) and image folders whose
    /// evaluation stages do not end in a fixed size; the data's own errors.
    pub fn open(file: &RunFile) -> Result<Splits, TrainError> {
        let dir = file.data.path.clone().ok_or_else(|| TrainError::InvalidConfig {
            field: "data.path",
            value: "(none)".into(),
            reason: "the dataset's folder is needed".into(),
        })?;
        let format = file.data.format;
        kiln_data::decode::set_max_pixels(file.data.max_image_pixels);
        let canonical = |d: &Path| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
        let mut warnings = Vec::new();
        let mut folders = Vec::new();
        let (train, val, test, root, chw, classes) = match format {
            DataFormat::Auto | DataFormat::FashionMnist | DataFormat::Mnist => {
                let train = MnistDataset::from_dir(&dir, MnistSplit::Train)?;
                let test = MnistDataset::from_dir(&dir, MnistSplit::Test)?;
                let root = train
                    .images_path()
                    .parent()
                    .unwrap_or(Path::new(""))
                    .to_path_buf();
                let (a, b, c) = held_out::<_, _, kiln_data::Gray>(train, test, file)?;
                (a, b, c, root, format.input_chw(), format.class_names())
            }
            DataFormat::Cifar10 => {
                let train = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Train)?;
                let test = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Test)?;
                let (a, b, c) = held_out::<_, _, kiln_data::Bgr>(train, test, file)?;
                (a, b, c, canonical(&dir), format.input_chw(), format.class_names())
            }
            DataFormat::Coco => {
                return Err(TrainError::InvalidConfig {
                    field: "data.format",
                    value: "coco".into(),
                    reason: format!(
                        "COCO is detection data and {} is a classifier: train a detector on it ([model] name = \"fcos\", or --model fcos); `kiln inspect` shows a sample's boxes and the first padded batch",
                        file.model.id()
                    ),
                });
            }
            DataFormat::ImageFolder => {
                let [h, w] = file.transforms.eval_size().ok_or_else(|| TrainError::InvalidConfig {
                    field: "transforms.eval",
                    value: crate::config::toml_text(&file.transforms.eval),
                    reason: "an image folder needs evaluation stages that end in a fixed size, e.g. eval = [{ op = \"resize-shorter\", size = 36 }, { op = \"center-crop\", height = 32, width = 32 }] (left out, they default to the model's input size)".into(),
                })?;
                let (a, b, c, classes) = image_folder(&dir, file, &mut warnings, &mut folders)?;
                (a, b, c, canonical(&dir), [3, h, w], classes)
            }
        };
        Ok(Splits {
            train,
            val,
            test,
            root,
            chw,
            classes,
            stored: if chw[0] == 1 { "grey" } else { "BGR" },
            warnings,
            folders,
        })
    }
}

/// The splits of an image folder in either layout.
fn image_folder(
    dir: &Path,
    file: &RunFile,
    warnings: &mut Vec<String>,
    folders: &mut Vec<kiln_data::ImageFolder>,
) -> Result<(Source, Source, Source, Vec<String>), TrainError> {
    let mut open = |d: PathBuf, warnings: &mut Vec<String>| -> Result<kiln_data::ImageFolder, TrainError> {
        let set = kiln_data::ImageFolder::new(d)?;
        warnings.extend(set.warnings().iter().map(ToString::to_string));
        // Every split's files are checked before anything is written (under "skip" they are
        // left out later).
        if file.data.on_bad_sample == OnBadSample::Error {
            folders.push(set.clone());
        }
        Ok(set)
    };
    let same_classes = |a: &kiln_data::ImageFolder, b: &kiln_data::ImageFolder, name: &str| {
        if a.classes() == b.classes() {
            Ok(())
        } else {
            Err(TrainError::InvalidConfig {
                field: "data.path",
                value: dir.display().to_string(),
                reason: format!(
                    "train/ has classes {:?} but {name}/ has {:?}; every split needs the same class folders",
                    a.classes(),
                    b.classes()
                ),
            })
        }
    };
    let layout = match kiln_data::format::detect(dir)? {
        Found::ImageFolder(layout) => layout,
        // Requested explicitly on another layout: the torchvision one reports what is missing.
        _ => FolderLayout::Splits { test: false },
    };
    match layout {
        FolderLayout::Classes => {
            let set = open(dir.to_path_buf(), warnings)?;
            let classes = set.classes().to_vec();
            let targets = set.targets();
            let seed = file.train.seed;
            let (rest, test_idx) = stratified_split(&targets, file.data.test_fraction, seed);
            let rest_targets: Vec<u32> = rest.iter().map(|&i| targets[i]).collect();
            // Validation as a fraction of the whole folder, drawn from what the test left.
            let val_share = file.data.val_fraction / (1.0 - file.data.test_fraction);
            let (train_pos, val_pos) = stratified_split(&rest_targets, val_share, seed.wrapping_add(1));
            let pick = |pos: Vec<usize>| pos.into_iter().map(|p| rest[p]).collect::<Vec<_>>();
            // Each split decodes as its own pipelines allow (`drafted`).
            let split = |positions: Vec<usize>, training: bool| {
                let set = drafted(set.clone(), file, training);
                source::<_, _, kiln_data::Bgr>(set, Part::Indices(positions), file, training)
            };
            let train = split(pick(train_pos), true)?;
            let val = split(pick(val_pos), false)?;
            let test = split(test_idx, false)?;
            Ok((train, val, test, classes))
        }
        FolderLayout::Splits { test: true } => {
            let train = open(dir.join("train"), warnings)?;
            let val = open(dir.join("val"), warnings)?;
            let test = open(dir.join("test"), warnings)?;
            same_classes(&train, &val, "val")?;
            same_classes(&train, &test, "test")?;
            let classes = train.classes().to_vec();
            Ok((
                source::<_, _, kiln_data::Bgr>(drafted(train, file, true), Part::All, file, true)?,
                source::<_, _, kiln_data::Bgr>(drafted(val, file, false), Part::All, file, false)?,
                source::<_, _, kiln_data::Bgr>(drafted(test, file, false), Part::All, file, false)?,
                classes,
            ))
        }
        FolderLayout::Splits { test: false } => {
            let train = open(dir.join("train"), warnings)?;
            let test = open(dir.join("val"), warnings)?;
            same_classes(&train, &test, "val")?;
            let classes = train.classes().to_vec();
            // Training and validation share one set: its images may go through either pipeline.
            let (a, b, c) = held_out::<_, _, kiln_data::Bgr>(
                drafted(train, file, true),
                drafted(test, file, false),
                file,
            )?;
            Ok((a, b, c, classes))
        }
    }
}

/// How a split decodes its JPEGs ([`kiln_data::decode::imread_draft`]): when `data.jpeg_draft` is
/// on and every pipeline the split's images may go through (the evaluation stages, and for
/// training the augmentation) starts with a resize, no smaller than the largest size any of them
/// needs; `None` (full decoding) otherwise. The splits and `kiln transform` both ask here.
fn split_draft(file: &RunFile, training: bool) -> Option<kiln_data::decode::DraftSize> {
    use kiln_data::decode::DraftSize;
    if !file.data.jpeg_draft {
        return None;
    }
    let format = file.data.format;
    let mut composes = vec![file.transforms.eval_compose(format)];
    if training {
        composes.push(file.transforms.augmentation(format));
    }
    let drafts: Vec<DraftSize> = composes
        .into_iter()
        .flatten()
        .map(|c| c.draft())
        .collect::<Option<_>>()?;
    (!drafts.is_empty()).then(|| {
        DraftSize::new(move |hw| {
            drafts.iter().try_fold([0, 0], |most, d| {
                d.need(hw).map(|n| [most[0].max(n[0]), most[1].max(n[1])])
            })
        })
    })
}

/// `set` decoding as [`split_draft`] says.
fn drafted(set: kiln_data::ImageFolder, file: &RunFile, training: bool) -> kiln_data::ImageFolder {
    match split_draft(file, training) {
        Some(draft) => set.with_draft(draft),
        None => set,
    }
}

/// Train and validation from `train_set` (a seeded `val_fraction` held out), test from `test_set`.
fn held_out<D, I, C>(
    train_set: D,
    test_set: D,
    file: &RunFile,
) -> Result<(Source, Source, Source), TrainError>
where
    D: Dataset<I, kiln_data::DataError> + Clone + Send + Sync + 'static,
    I: kiln_data::LabeledImage<C> + 'static,
    C: kiln_transforms::ModelColor + 'static,
{
    let (train_idx, val_idx) = random_split(train_set.len(), file.data.val_fraction, file.train.seed);
    let train = source::<D, I, C>(train_set.clone(), Part::Indices(train_idx), file, true)?;
    let val = source::<D, I, C>(train_set, Part::Indices(val_idx), file, false)?;
    let test = source::<D, I, C>(test_set, Part::All, file, false)?;
    Ok((train, val, test))
}

/// One split's source: the run's normalization, evaluation stages and bad-sample policy, and for
/// training the augmentation.
fn source<D, I, C>(set: D, part: Part, file: &RunFile, training: bool) -> Result<Source, TrainError>
where
    D: Dataset<I, kiln_data::DataError> + Send + Sync + 'static,
    I: kiln_data::LabeledImage<C> + 'static,
    C: kiln_transforms::ModelColor + 'static,
{
    let format = file.data.format;
    let norm = file.transforms.normalization(format).resolve()?;
    let src = match part {
        Part::All => ClassificationSource::new(set, norm),
        Part::Indices(indices) => ClassificationSource::subset(set, indices, norm)?,
    };
    let mut src = src.on_bad_sample(file.data.on_bad_sample, file.data.max_bad_fraction)?;
    if let Some(compose) = file.transforms.eval_compose(format) {
        src = src.with_eval_transform(compose)?;
    }
    if training && let Some(compose) = file.transforms.augmentation(format) {
        src = src.with_augmentation(compose, file.train.seed)?;
    }
    Ok(Box::new(src))
}

/// A dataset's images as stored, for statistics and inspection: the training pool of each
/// format (the training file, `train/`, or every image of a class-folder set or a COCO set).
pub struct RawSample {
    /// The file it came from (the dataset file for idx and CIFAR).
    pub file: PathBuf,
    /// Its label (`None` for detection data).
    pub label: Option<u32>,
    /// Class name of the label.
    pub class: String,
    /// `[H, W, C]` as decoded.
    pub shape_hwc: [usize; 3],
    /// `"grey"` or `"BGR"`.
    pub order: &'static str,
    /// The pixels, HWC.
    pub pixels: Vec<u8>,
}

/// What `kiln stats` reports: the per-channel mean and std of a dataset's training images.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatsReport {
    /// The dataset folder.
    pub data: PathBuf,
    /// The split measured (`train`).
    pub split: &'static str,
    /// Images measured.
    pub images: u64,
    /// The scale of the figures.
    pub scale: kiln_transforms::Scale,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    pub std: Vec<f64>,
    /// The channel order (`rgb`, `gray`).
    #[serde(skip)]
    pub order: &'static str,
}

/// The lines `kiln stats` prints, the last one ready to paste into a run file.
impl std::fmt::Display for StatsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scale = match self.scale {
            kiln_transforms::Scale::Unit => "unit",
            kiln_transforms::Scale::Byte => "byte",
        };
        writeln!(
            f,
            "kiln stats: {} ({} training images, {:?} scale)",
            self.data.display(),
            self.images,
            self.scale
        )?;
        writeln!(f, "mean = {:?}", self.mean)?;
        writeln!(f, "std  = {:?}", self.std)?;
        writeln!(f, "# for a run file's [transforms]:")?;
        let f32s = |v: &[f64]| v.iter().map(|x| *x as f32).collect::<Vec<_>>();
        writeln!(
            f,
            "normalization = {{ preset = \"custom\", mean = {:?}, std = {:?}, scale = \"{scale}\", order = \"{}\" }}",
            f32s(&self.mean),
            f32s(&self.std),
            self.order
        )
    }
}

/// [`channel_stats`] of `file`'s training images as mean and std on `scale`.
///
/// # Errors
///
/// As [`channel_stats`].
pub fn stats_report(
    file: &RunFile,
    scale: kiln_transforms::Scale,
    progress: impl FnMut(usize, usize),
) -> Result<StatsReport, TrainError> {
    let (n, s, order) = channel_stats(file, progress)?;
    let (mean, std) = s.mean_std(scale)?;
    Ok(StatsReport {
        data: file.data.path.clone().unwrap_or_default(),
        split: "train",
        images: n as u64,
        scale,
        mean,
        std,
        order,
    })
}

/// Per-plane mean and (population) standard deviation of planar data, one plane of `plane`
/// values per channel (a transformed image's channel statistics).
pub fn plane_mean_std(data: &[f32], plane: usize) -> (Vec<f64>, Vec<f64>) {
    data.chunks(plane.max(1))
        .map(|c| {
            let n = c.len().max(1) as f64;
            let mean = c.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = c.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            (mean, var.sqrt())
        })
        .unzip()
}

/// Per-channel statistics of the training pool of `file`'s data (resolved), in the model's
/// channel order, with the number of images and that order (`"gray"`, `"rgb"`). `progress` is
/// called with (done, total).
///
/// # Errors
///
/// The data's own errors.
pub fn channel_stats(
    file: &RunFile,
    mut progress: impl FnMut(usize, usize),
) -> Result<(usize, kiln_transforms::stats::ChannelStats, &'static str), TrainError> {
    use kiln_transforms::stats::{ChannelStats, dataset_stats};
    let dir = file.data.path.clone().unwrap_or_default();
    // Images of any size are accumulated one by one.
    fn each<I>(
        n: usize,
        mut get: impl FnMut(usize) -> Result<I, kiln_data::DataError>,
        pixels: impl Fn(&I) -> &[u8],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<ChannelStats, TrainError> {
        let mut s = ChannelStats::new(3);
        for i in 0..n {
            s.add_hwc::<kiln_data::Bgr>(pixels(&get(i)?));
            progress(i + 1, n);
        }
        Ok(s)
    }
    Ok(match file.data.format {
        DataFormat::Auto | DataFormat::FashionMnist | DataFormat::Mnist => {
            let train = MnistDataset::from_dir(&dir, MnistSplit::Train)?;
            (train.len(), dataset_stats(train, 2, progress)?, "gray")
        }
        DataFormat::Cifar10 => {
            let train = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Train)?;
            (train.len(), dataset_stats(train, 2, progress)?, "rgb")
        }
        DataFormat::ImageFolder => {
            let set = image_folder_pool(&dir)?;
            let n = set.len();
            (
                n,
                each(n, |i| set.get(i), |it| it.image.as_bytes(), &mut progress)?,
                "rgb",
            )
        }
        DataFormat::Coco => {
            let set = coco(file)?;
            let n = set.len();
            (
                n,
                each(n, |i| set.get(i), |it| it.image.as_bytes(), &mut progress)?,
                "rgb",
            )
        }
    })
}

/// `dataset[index]` of the training pool as decoded, and the pool's size; `None` past the end.
///
/// # Errors
///
/// The data's own errors.
pub fn raw_sample(file: &RunFile, index: usize) -> Result<(usize, Option<RawSample>), TrainError> {
    let dir = file.data.path.clone().unwrap_or_default();
    let names = file.data.format.class_names();
    let name = |names: &[String], l: u32| names.get(l as usize).cloned().unwrap_or_default();
    fn sample<C: kiln_data::ColorOrder>(
        img: kiln_data::Image<kiln_data::Hwc, C>,
        file: PathBuf,
        label: Option<u32>,
        class: String,
    ) -> RawSample {
        RawSample {
            file,
            label,
            class,
            shape_hwc: [img.height(), img.width(), C::CHANNELS],
            order: if C::CHANNELS == 1 { "grey" } else { "BGR" },
            pixels: img.as_slice().to_vec(),
        }
    }
    Ok(match file.data.format {
        DataFormat::Auto | DataFormat::FashionMnist | DataFormat::Mnist => {
            let set = MnistDataset::from_dir(&dir, MnistSplit::Train)?;
            let path = set.images_path().to_path_buf();
            let n = set.len();
            let item = (index < n)
                .then(|| set.get(index))
                .transpose()?
                .map(|i| sample(i.image, path, Some(i.label), name(&names, i.label)));
            (n, item)
        }
        DataFormat::Cifar10 => {
            let set = kiln_data::CifarDataset::cifar10(&dir, kiln_data::CifarSplit::Train)?;
            let n = set.len();
            let item = (index < n)
                .then(|| set.get(index))
                .transpose()?
                .map(|i| sample(i.image, dir.clone(), Some(i.label), name(&names, i.label)));
            (n, item)
        }
        DataFormat::ImageFolder => {
            let set = image_folder_pool(&dir)?;
            let classes = set.classes().to_vec();
            let n = set.len();
            let item = (index < n)
                .then(|| set.get(index))
                .transpose()?
                .map(|i| sample(i.image, i.path, Some(i.label), name(&classes, i.label)));
            (n, item)
        }
        DataFormat::Coco => {
            let set = coco(file)?;
            let n = set.len();
            let item = (index < n)
                .then(|| set.get(index))
                .transpose()?
                .map(|i| sample(i.image, i.path, None, String::new()));
            (n, item)
        }
    })
}

/// The images statistics and inspection read from an image folder: `train/` of the torchvision
/// layout, every image of class folders alone.
fn image_folder_pool(dir: &Path) -> Result<kiln_data::ImageFolder, TrainError> {
    let root = match kiln_data::format::detect(dir)? {
        Found::ImageFolder(FolderLayout::Classes) => dir.to_path_buf(),
        _ => dir.join("train"),
    };
    Ok(kiln_data::ImageFolder::new(root)?)
}

/// The COCO set of `file`: images in `data.path`, boxes in `data.annotations`; without
/// `data.annotations`, the training split of a detection dataset folder
/// ([`DetectionLayout`](crate::detection_run::DetectionLayout)).
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] without `data.annotations` or splits; the set's own errors.
pub fn coco(file: &RunFile) -> Result<kiln_data::CocoDetection, TrainError> {
    let dir = file.data.path.clone().unwrap_or_default();
    if let Some(annotations) = &file.data.annotations {
        return Ok(kiln_data::CocoDetection::new(coco_images(&dir), annotations)?);
    }
    // A detection dataset folder (train/ + val/, COCO 2017's layout): its training split.
    let layout = crate::detection_run::DetectionLayout::find(&dir, None).map_err(|_| TrainError::InvalidConfig {
        field: "data.annotations",
        value: "(none)".into(),
        reason: "data.format = \"coco\" needs data.annotations, the instances JSON (e.g. annotations = \"annotations/instances_val2017.json\"), or a folder with train/ and val/ COCO folders".into(),
    })?;
    Ok(kiln_data::CocoDetection::new(
        layout.train.images,
        layout.train.annotations,
    )?)
}

/// Where a COCO folder's images are: its `images/` when it has one and no images of its own,
/// else the folder itself.
pub(crate) fn coco_images(dir: &Path) -> PathBuf {
    if dir.join("images").is_dir() && !has_images(dir) {
        dir.join("images")
    } else {
        dir.to_path_buf()
    }
}

fn has_images(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.path().extension().and_then(|x| x.to_str()).is_some_and(|x| {
                kiln_data::folder::IMAGE_EXTENSIONS
                    .iter()
                    .any(|i| i.eq_ignore_ascii_case(x))
            })
        })
    })
}

/// One image file through `file`'s pipeline as the model gets it, `[C, H, W]` and its values:
/// the training augmentation as drawn for dataset index 0 in `epoch` (`train`), else the
/// evaluation stages (or just the normalization); grey or colour as the data's format says.
///
/// # Errors
///
/// The file's decoding errors, the pipeline's.
pub fn transform_image(
    file: &RunFile,
    input: &Path,
    train: bool,
    epoch: u64,
) -> Result<([usize; 3], Vec<f32>), TrainError> {
    use kiln_data::{Bgr, Gray, Hwc, Image};
    use kiln_transforms::resize_normalize;
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    // The generator a training sample with dataset index 0 gets in `epoch`.
    let mut rng = kiln_data::SampleRng::new(kiln_data::loader::sample_seed(file.train.seed, epoch, 0));
    // --train: the augmentation; otherwise the evaluation stages (when the run file has any).
    let compose = if train {
        file.transforms.augmentation(file.data.format)
    } else {
        file.transforms.eval_compose(file.data.format)
    };
    let (shape, data) = if file.data.format.input_chw()[0] == 1 {
        let img: Image<Hwc, Gray> = kiln_data::decode::imread_gray(input)?;
        let out = match &compose {
            Some(c) => c.apply::<Gray>(&img, &mut rng)?,
            None => resize_normalize(&img, img.height(), img.width(), &norm)?,
        };
        ([1, out.height(), out.width()], out.into_vec())
    } else {
        // Decoded as the split it stands for decodes (training: its augmentation and evaluation).
        let draft = split_draft(file, train);
        let img: Image<Hwc, Bgr> = match &draft {
            Some(draft) => kiln_data::decode::imread_draft(input, draft)?,
            None => kiln_data::decode::imread(input)?,
        };
        let out = match &compose {
            Some(c) => c.apply::<Bgr>(&img, &mut rng)?,
            None => resize_normalize(&img, img.height(), img.width(), &norm)?,
        };
        ([3, out.height(), out.width()], out.into_vec())
    };
    Ok((shape, data))
}

#[cfg(test)]
mod tests {
    /// `data.jpeg_draft`: every split of an image folder decodes its JPEGs at the reduced size its
    /// pipeline allows, and `kiln transform` does the same; off, they are decoded in full.
    #[test]
    fn jpeg_draft_reaches_every_split_and_transform() {
        use crate::config::RunFile;
        use kiln_data::decode::{imread, imread_draft};
        use kiln_transforms::compose::Stage;

        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-data/tests/fixtures/draft");
        let dir = tempfile::tempdir().unwrap();
        for (class, file) in [("a", "large.jpg"), ("b", "mosaic_420.jpg")] {
            for split in ["train", "val"] {
                std::fs::create_dir_all(dir.path().join(split).join(class)).unwrap();
                for i in 0..2 {
                    std::fs::copy(
                        fixtures.join(file),
                        dir.path().join(split).join(class).join(format!("{i}.jpg")),
                    )
                    .unwrap();
                }
            }
        }
        let mut file = RunFile::default();
        file.data.path = Some(dir.path().to_path_buf());
        file.data.val_fraction = 0.5;
        file.model = kiln_models::AnyModel::from_name("cifar-resnet20").unwrap();
        file.transforms.eval = vec![
            Stage::ResizeShorter { size: 36 },
            Stage::CenterCrop {
                height: 32,
                width: 32,
            },
        ];
        let large = fixtures.join("large.jpg");
        // The test split (val/) in dataset order: class a's two copies of large.jpg come first.
        let first_test_image = |file: &RunFile| {
            let mut file = file.clone();
            file.resolve_data().unwrap();
            let splits = super::Splits::open(&file).unwrap();
            let batch = splits.test.batch(&[0]).unwrap();
            let compose = file.transforms.eval_compose(file.data.format).unwrap();
            let (_, transformed) = super::transform_image(&file, &large, false, 0).unwrap();
            assert_eq!(
                batch.data, transformed,
                "kiln transform gives the test split's input"
            );
            (batch.data, compose)
        };
        let (full, compose) = first_test_image(&file);
        let mut rng = kiln_data::SampleRng::new(0);
        let want = compose
            .apply::<kiln_data::Bgr>(&imread(&large).unwrap(), &mut rng)
            .unwrap();
        assert_eq!(full, want.into_vec());

        file.data.jpeg_draft = true;
        let (drafted, compose) = first_test_image(&file);
        let draft = compose.draft().unwrap();
        // 2048 x 1536 for a shorter side of 36: decoded at 1/8 (256 x 192).
        assert_eq!(imread_draft(&large, &draft).unwrap().hwc_shape(), [192, 256, 3]);
        let want = compose
            .apply::<kiln_data::Bgr>(&imread_draft(&large, &draft).unwrap(), &mut rng)
            .unwrap();
        assert_eq!(drafted, want.into_vec());
        assert_ne!(drafted, full);
        // The training and validation splits too (no augmentation: the evaluation stages).
        let mut resolved = file.clone();
        resolved.resolve_data().unwrap();
        let splits = super::Splits::open(&resolved).unwrap();
        let drafted_of = |name: &str| {
            let img = imread_draft(&fixtures.join(name), &draft).unwrap();
            compose
                .apply::<kiln_data::Bgr>(&img, &mut kiln_data::SampleRng::new(0))
                .unwrap()
                .into_vec()
        };
        let choices = [drafted_of("large.jpg"), drafted_of("mosaic_420.jpg")];
        for split in [&splits.train, &splits.val] {
            for i in 0..split.len() {
                let x = split.batch(&[i]).unwrap().data;
                assert!(
                    choices.contains(&x),
                    "sample {i} was not decoded at the reduced size"
                );
            }
        }
        assert_eq!(splits.train.len() + splits.val.len(), 4);

        // Training images go through the augmentation and the evaluation stages: they are decoded
        // for the larger need of the two (here evaluation's, 1/4; the augmentation alone would
        // allow 1/8), and `kiln transform --train` shows exactly that.
        file.transforms.train = vec![
            Stage::ResizeShorter { size: 100 },
            Stage::CenterCrop {
                height: 32,
                width: 32,
            },
        ];
        file.transforms.eval = vec![
            Stage::ResizeShorter { size: 300 },
            Stage::CenterCrop {
                height: 32,
                width: 32,
            },
        ];
        let mut resolved = file.clone();
        resolved.resolve_data().unwrap();
        let train_draft = super::split_draft(&resolved, true).unwrap();
        assert_eq!(train_draft.need([1536, 2048]), Some([300, 400]));
        assert_eq!(
            super::split_draft(&resolved, false).unwrap().need([1536, 2048]),
            Some([300, 400])
        );
        let augmentation = resolved.transforms.augmentation(resolved.data.format).unwrap();
        // The augmentation alone would allow 1/8 (the rule `kiln transform --train` had before).
        assert_eq!(augmentation.draft().unwrap().need([1536, 2048]), Some([100, 133]));
        let img = imread_draft(&large, &train_draft).unwrap();
        assert_eq!(
            img.hwc_shape(),
            [384, 512, 3],
            "1536 / 8 = 192 < 300: decoded at 1/4"
        );
        let seed = kiln_data::loader::sample_seed(resolved.train.seed, 0, 0);
        let want = augmentation
            .apply::<kiln_data::Bgr>(&img, &mut kiln_data::SampleRng::new(seed))
            .unwrap();
        let (_, shown) = super::transform_image(&resolved, &large, true, 0).unwrap();
        assert_eq!(shown, want.into_vec());
    }

    #[test]
    fn plane_statistics_are_per_channel_population_figures() {
        // numpy: a = [[1, 2, 3, 6], [0, 0, 0, 0]]; a.mean(1) = [3, 0]; a.std(1) = [1.8708, 0]
        let (mean, std) = super::plane_mean_std(&[1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0], 4);
        assert_eq!(mean, [3.0, 0.0]);
        assert!((std[0] - 3.5f64.sqrt()).abs() < 1e-12 && std[1] == 0.0, "{std:?}");
    }
}
