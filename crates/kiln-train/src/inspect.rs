//! What `kiln inspect` shows: `dataset[N]` as decoded and the first training batch as the model
//! gets it (classification: shape, order, per-channel statistics, labels, the normalization
//! check; COCO: the sample's boxes and the first padded detection batch).

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::batcher::{DetSample, DetectionBatcher, ImageMeta};
use kiln_data::{DataError, DetectionItem, Loader, LoaderConfig, Rgb, SampleRng};
use kiln_transforms::compose::{Stage, shorter_side};
use serde::Serialize;

use crate::TrainError;
use crate::config::RunFile;
use crate::data::Splits;

/// `dataset[index]` as decoded.
#[derive(Debug, Clone, Serialize)]
pub struct SampleReport {
    /// Its index in the training images.
    pub index: usize,
    /// The file it came from (the dataset file for idx and CIFAR).
    pub file: PathBuf,
    /// Its label.
    pub label: u32,
    /// The label's class name.
    pub class: String,
    /// `[H, W, C]` as decoded.
    pub raw_shape_hwc: [usize; 3],
    /// `"HWC"`: how it is stored.
    pub layout: &'static str,
    /// `"grey"` or `"BGR"` (what `cv2.imread` gives).
    pub colour_order: &'static str,
    /// `"u8"`.
    pub dtype: &'static str,
    /// Smallest pixel value.
    pub min: u8,
    /// Largest pixel value.
    pub max: u8,
    /// Mean of each stored channel, 0–255.
    pub channel_means: Vec<f64>,
}

/// The first training batch after the transforms.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// `"f32"`.
    pub dtype: &'static str,
    /// The channel order the model gets.
    pub colour_order: String,
    /// Per-channel mean after normalization (≈ 0 when right).
    pub channel_mean: Vec<f64>,
    /// Per-channel standard deviation after normalization (≈ 1 when right).
    pub channel_std: Vec<f64>,
    /// Samples per class.
    pub label_histogram: Vec<usize>,
    /// The normalization check's findings (or its all-clear).
    pub check: Vec<String>,
}

/// What `kiln inspect` shows of classification data.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// `dataset[index]`.
    pub sample: SampleReport,
    /// The first training batch.
    pub first_batch: BatchReport,
    /// What the scan of the files found worth saying.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `dataset[index]` of `file`'s training images and the first training batch (epoch 0's shuffled
/// order, augmentation included); the batch drawn de-normalised to `grid` when given.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for an index past the end; the data's errors.
pub fn inspect(file: &RunFile, index: usize, grid: Option<&Path>) -> Result<InspectReport, TrainError> {
    let (len, item) = crate::data::raw_sample(file, index)?;
    let Some(raw) = item else {
        return Err(TrainError::InvalidConfig {
            field: "index",
            value: index.to_string(),
            reason: format!("the training split has {len} images (0..{len})"),
        });
    };
    let [h, w, c] = raw.shape_hwc;
    let px = raw.pixels;
    // The splits as training sees them (validation held out, transforms applied).
    let splits = Splits::open(file)?;
    let class_names = splits.classes.clone();
    let channel_means = (0..c)
        .map(|ch| px.iter().skip(ch).step_by(c).map(|&v| f64::from(v)).sum::<f64>() / (h * w).max(1) as f64)
        .collect();
    let sample = SampleReport {
        index,
        file: raw.file,
        label: raw.label.unwrap_or(0),
        class: raw.class,
        raw_shape_hwc: [h, w, c],
        layout: "HWC",
        colour_order: raw.order,
        dtype: "u8",
        min: px.iter().copied().min().unwrap_or(0),
        max: px.iter().copied().max().unwrap_or(0),
        channel_means,
    };
    let names = class_names;
    let src = splits.train;
    // The first batch training draws: epoch 0's shuffled order, augmentation included.
    let len = src.len();
    let order = kiln_data::BatchOrder::new(
        len,
        file.train.batch_size.min(len).max(1),
        Some(file.train.seed),
        true,
    )?;
    let positions = order.epoch(0).into_iter().next().unwrap_or_default();
    let batch = src.epoch_batch(&positions, 0)?;
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let check = kiln_transforms::check::check_batch(&batch.data, batch.shape, &norm);
    let mut histogram = vec![0usize; names.len()];
    for &l in &batch.labels {
        if let Some(h) = histogram.get_mut(l as usize) {
            *h += 1;
        }
    }
    let first_batch = BatchReport {
        shape: batch.shape,
        dtype: "f32",
        colour_order: format!("{:?}", batch.order),
        channel_mean: check.mean.clone(),
        channel_std: check.std.clone(),
        label_histogram: histogram,
        check: if check.warnings.is_empty() {
            vec!["ok: per-channel mean ≈ 0 and std ≈ 1".into()]
        } else {
            check.warnings.iter().map(ToString::to_string).collect()
        },
    };
    if let Some(path) = grid {
        crate::plot::batch_grid(path, &batch.data, batch.shape, &norm)?;
    }
    Ok(InspectReport {
        sample,
        first_batch,
        warnings: splits.warnings,
    })
}

/// Padded batch sizes are rounded up to this (a stride-32 backbone's requirement).
pub const SIZE_MULTIPLE: usize = 32;

/// A box of the sample.
#[derive(Debug, Clone, Serialize)]
pub struct BoxReport {
    /// `[x1, y1, x2, y2]` in pixels.
    pub xyxy: [f32; 4],
    /// Contiguous label.
    pub label: u32,
    /// Its category name.
    pub class: String,
    /// COCO's `iscrowd`.
    pub crowd: bool,
}

/// `dataset[index]` of COCO data.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionSample {
    /// Its index in the annotations' image list.
    pub index: usize,
    /// The image file.
    pub file: std::path::PathBuf,
    /// COCO's image id.
    pub image_id: u64,
    /// `[H, W, 3]` as decoded.
    pub raw_shape_hwc: [usize; 3],
    /// `"BGR"`.
    pub colour_order: &'static str,
    /// Its boxes.
    pub boxes: Vec<BoxReport>,
}

/// One image's sizes in the batch.
#[derive(Debug, Clone, Serialize)]
pub struct MetaReport {
    /// The sample's index.
    pub index: usize,
    /// The file's size.
    pub original_hw: [usize; 2],
    /// After the evaluation stage.
    pub resized_hw: [usize; 2],
    /// The batch's padded size.
    pub padded_hw: [usize; 2],
    /// `[y, x]` scale from the file to the resized image.
    pub scale: [f32; 2],
}

/// The first padded detection batch.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionBatch {
    /// `[N, 3, H, W]`.
    pub images: Vec<usize>,
    /// `[N, M, 4]`.
    pub boxes: Vec<usize>,
    /// Labels per image, −1 for padding.
    pub labels: Vec<Vec<i64>>,
    /// Which of the M boxes are real.
    pub mask: Vec<Vec<bool>>,
    /// Each image's sizes.
    pub meta: Vec<MetaReport>,
}

/// What `kiln inspect` shows of COCO data.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    /// Category names by contiguous label.
    pub categories: Vec<String>,
    /// COCO's ids, by label.
    pub category_ids: Vec<u64>,
    /// Images in the annotations.
    pub images: usize,
    /// `dataset[index]`.
    pub sample: DetectionSample,
    /// The first padded batch.
    pub first_batch: DetectionBatch,
    /// The normalization's name.
    pub normalization: String,
    /// Boxes clipped to their image or dropped for having no area.
    pub box_fixes: kiln_data::BoxFixes,
}

/// `dataset[index]` of COCO data with its boxes, and the first batch as a detection model gets
/// it: images resized by the `[transforms] eval` stage and padded to a multiple of
/// [`SIZE_MULTIPLE`], boxes `[N, M, 4]` with a mask, labels padded with −1, each image's sizes.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for an index past the end or evaluation stages that would cut
/// boxes; the data's errors.
pub fn inspect_detection(file: &RunFile, index: usize) -> Result<DetectionReport, TrainError> {
    let dataset = crate::data::coco(file)?;
    let categories = dataset.categories().to_vec();
    let box_fixes = dataset.box_fixes().clone();
    let n = dataset.len();
    if index >= n {
        return Err(TrainError::InvalidConfig {
            field: "index",
            value: index.to_string(),
            reason: format!("the annotations list {n} images (0..{n})"),
        });
    }
    let item = dataset.get(index)?;
    let name = |l: u32| categories.get(l as usize).cloned().unwrap_or_default();
    let sample = DetectionSample {
        index,
        file: item.path.clone(),
        image_id: item.image_id,
        raw_shape_hwc: [item.image.height(), item.image.width(), 3],
        colour_order: "BGR",
        boxes: item
            .boxes
            .iter()
            .zip(&item.labels)
            .zip(item.crowd.iter().chain(std::iter::repeat(&false)))
            .map(|((b, &l), &crowd)| BoxReport {
                xyxy: *b,
                label: l,
                class: name(l),
                crowd,
            })
            .collect(),
    };

    // The first batch: a `resize` eval stage gives every image one size, `resize-shorter` keeps
    // each aspect ratio (padding then makes them one size), none keeps the files' sizes. Boxes
    // follow the resize.
    let size: Box<dyn Fn(usize, usize) -> [usize; 2] + Send + Sync> = match file.transforms.eval.as_slice() {
        [] => Box::new(|h, w| [h, w]),
        &[Stage::Resize { height, width }] => Box::new(move |_, _| [height, width]),
        &[Stage::ResizeShorter { size }] => Box::new(move |h, w| shorter_side(h, w, size)),
        _ => {
            return Err(TrainError::InvalidConfig {
                field: "transforms.eval",
                value: crate::config::toml_text(&file.transforms.eval),
                reason: "for COCO data, [transforms] eval may be one `resize` or one `resize-shorter` stage (crops would cut boxes)".into(),
            });
        }
    };
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let norm_name = norm.name.clone();
    let transform = move |item: DetectionItem, _: &mut SampleRng| -> Result<DetSample<Rgb>, DataError> {
        let out = size(item.image.height(), item.image.width());
        kiln_transforms::augment::resize_detection(item, out, false, &norm)
    };
    let batcher =
        DetectionBatcher::new(categories.len().max(1), Device::flex()).with_size_multiple(SIZE_MULTIPLE);
    let config = LoaderConfig {
        batch_size: file.train.batch_size.min(n).max(1),
        seed: file.train.seed,
        num_workers: file.train.num_workers,
        ..LoaderConfig::default()
    };
    let category_ids = dataset.category_ids().to_vec();
    let loader = Loader::new(dataset, transform, batcher, config)?;
    let b = loader
        .epoch(0)
        .next()
        .ok_or_else(|| DataError::Custom("the dataset has no batch".into()))??;
    let m = b.labels.dims()[1];
    let first_batch = DetectionBatch {
        images: b.images.dims().to_vec(),
        boxes: b.boxes.dims().to_vec(),
        labels: rows(b.labels.clone().into_data().iter::<i64>().collect(), m),
        mask: rows(b.mask.clone().into_data().iter::<bool>().collect(), m),
        meta: b.meta.iter().map(meta).collect(),
    };
    Ok(DetectionReport {
        categories,
        category_ids,
        images: n,
        sample,
        first_batch,
        normalization: norm_name,
        box_fixes,
    })
}

/// A flat `[N, M]` tensor's values as N rows of M.
fn rows<T: Clone>(flat: Vec<T>, m: usize) -> Vec<Vec<T>> {
    flat.chunks(m.max(1)).map(<[T]>::to_vec).collect()
}

fn meta(m: &ImageMeta) -> MetaReport {
    MetaReport {
        index: m.index,
        original_hw: m.original_hw,
        resized_hw: m.resized_hw,
        padded_hw: m.padded_hw,
        scale: m.scale,
    }
}

/// The lines `kiln inspect` prints.
impl std::fmt::Display for InspectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.sample;
        writeln!(f, "dataset[{}] ({})", s.index, s.file.display())?;
        writeln!(f, "  label {} ({})", s.label, s.class)?;
        writeln!(
            f,
            "  raw: {:?} {} {} {}, values {}..{}, channel means {:?}",
            s.raw_shape_hwc, s.layout, s.colour_order, s.dtype, s.min, s.max, s.channel_means
        )?;
        let b = &self.first_batch;
        writeln!(f, "first training batch (after the transforms):")?;
        writeln!(
            f,
            "  shape {:?} (N, C, H, W) {} {}",
            b.shape, b.dtype, b.colour_order
        )?;
        writeln!(
            f,
            "  per-channel mean {:?}, std {:?}",
            b.channel_mean, b.channel_std
        )?;
        writeln!(f, "  labels per class {:?}", b.label_histogram)?;
        for c in &b.check {
            writeln!(f, "  check: {c}")?;
        }
        Ok(())
    }
}

/// The lines `kiln inspect` prints for COCO data.
impl std::fmt::Display for DetectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.sample;
        writeln!(
            f,
            "COCO detection: {} images, categories {:?} (ids {:?} → labels 0..{})",
            self.images,
            self.categories,
            self.category_ids,
            self.categories.len()
        )?;
        let fixes = &self.box_fixes;
        if fixes.clipped > 0 {
            writeln!(
                f,
                "  {} boxes reach outside their image: clipped to it",
                fixes.clipped
            )?;
        }
        if fixes.dropped > 0 {
            writeln!(
                f,
                "  {} boxes have no area (zero width or height after clipping): dropped ({}{})",
                fixes.dropped,
                fixes.dropped_examples.join(", "),
                if fixes.dropped > fixes.dropped_examples.len() {
                    ", …"
                } else {
                    ""
                }
            )?;
        }
        writeln!(
            f,
            "dataset[{}] ({}, image id {})",
            s.index,
            s.file.display(),
            s.image_id
        )?;
        writeln!(
            f,
            "  raw: {:?} HWC {} u8, {} boxes",
            s.raw_shape_hwc,
            s.colour_order,
            s.boxes.len()
        )?;
        for bx in &s.boxes {
            writeln!(
                f,
                "    {:?} (x1, y1, x2, y2) label {} ({}){}",
                bx.xyxy,
                bx.label,
                bx.class,
                if bx.crowd { " crowd" } else { "" }
            )?;
        }
        let fb = &self.first_batch;
        writeln!(f, "first batch (padded to a multiple of {SIZE_MULTIPLE}):")?;
        writeln!(
            f,
            "  images {:?} (N, C, H, W) f32 RGB, normalised `{}`",
            fb.images, self.normalization
        )?;
        writeln!(
            f,
            "  boxes  {:?} (N, M, 4), labels and mask (N, M), −1 / false for padding",
            fb.boxes
        )?;
        for (i, (l, mk)) in fb.labels.iter().zip(&fb.mask).enumerate() {
            writeln!(f, "    image {i}: labels {l:?} mask {mk:?}")?;
        }
        for m in &fb.meta {
            writeln!(
                f,
                "  sample {}: file {:?} → resized {:?} → padded {:?}, scale {:?}",
                m.index, m.original_hw, m.resized_hw, m.padded_hw, m.scale
            )?;
        }
        Ok(())
    }
}
