//! Your own dataset format and your own batcher (PyTorch's `Dataset` subclass and `collate_fn`).
//!
//! * `CsvImages` reads a `labels.csv` of `file,label` lines next to its images — a layout
//!   ImageFolder does not cover. A malformed line is an error naming the file and the line; an
//!   image that cannot be read is an error naming it (the loader adds the sample index).
//!   Implementing [`LabeledImage`] is all it takes to train on it with `fit`.
//! * `MixUpBatcher` is a custom collate: it blends each image with its neighbour in the batch and
//!   returns soft targets (mixup, Zhang et al. 2018), one `impl Collate` of a dozen lines.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example custom_dataset                # generated data
//! cargo run --release -p kiln-suite --example custom_dataset -- path/to/labels.csv
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::batcher::{ClassSample, Collate, Indexed};
use kiln_data::{Bgr, DataError, Hwc, Image, LabeledImage, Loader, LoaderConfig, Rgb, SampleRng};
use kiln_models::ReferenceCnnConfig;
use kiln_train::{ClassificationSource, FitOutputs, TrainConfig, fit};
use kiln_transforms::compose::{Compose, Stage};
use kiln_transforms::{Normalization, NormalizationSpec, resize_normalize};

/// One image and its class.
#[derive(Debug, Clone)]
struct CsvItem {
    image: Image<Hwc, Bgr>,
    label: u32,
}

impl LabeledImage<Bgr> for CsvItem {
    fn into_parts(self) -> (Image<Hwc, Bgr>, u32) {
        (self.image, self.label)
    }
}

/// Images listed in a CSV file: `file,label` per line (a `file,label` header is allowed), files
/// relative to the CSV's folder.
#[derive(Debug, Clone)]
struct CsvImages {
    rows: Vec<(PathBuf, u32)>,
    num_classes: usize,
}

impl CsvImages {
    fn open(csv: &Path) -> Result<Self, DataError> {
        let text = String::from_utf8(kiln_data::paths::read_file(csv)?).map_err(|e| DataError::Format {
            path: csv.to_path_buf(),
            problem: format!("not UTF-8 text: {e}"),
        })?;
        let folder = csv.parent().unwrap_or(Path::new("."));
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (n == 0 && line == "file,label") {
                continue;
            }
            let bad = |problem: String| DataError::Format {
                path: csv.to_path_buf(),
                problem: format!("line {}: {problem}", n + 1),
            };
            let (file, label) = line
                .split_once(',')
                .ok_or_else(|| bad(format!("expected `file,label`, found `{line}`")))?;
            let label: u32 = label
                .trim()
                .parse()
                .map_err(|_| bad(format!("label `{}` is not a class index", label.trim())))?;
            rows.push((folder.join(file.trim()), label));
        }
        let num_classes = rows.iter().map(|r| r.1 as usize + 1).max().unwrap_or(0);
        Ok(Self { rows, num_classes })
    }
}

impl Dataset<CsvItem, DataError> for CsvImages {
    fn get(&self, index: usize) -> Result<CsvItem, DataError> {
        let (path, label) = self.rows.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.rows.len(),
        })?;
        Ok(CsvItem {
            image: kiln_data::decode::imread(path)?,
            label: *label,
        })
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Mixup as a collate function: image i becomes `λ·x_i + (1−λ)·x_{i+1}` and its target the same
/// blend of the two one-hot labels.
struct MixUpBatcher {
    num_classes: usize,
    lambda: f32,
    device: Device,
}

/// Blended images and soft targets.
struct MixBatch {
    images: Tensor<4>,
    targets: Tensor<2>,
}

impl Collate<ClassSample<Rgb>> for MixUpBatcher {
    type Batch = MixBatch;

    fn collate(&self, items: Vec<Indexed<ClassSample<Rgb>>>) -> Result<MixBatch, DataError> {
        let n = items.len();
        let first = items.first().ok_or(DataError::EmptyBatch)?;
        let [c, h, w] = [3, first.item.image.height(), first.item.image.width()];
        let mut images = Vec::with_capacity(n * c * h * w);
        let mut targets = vec![0f32; n * self.num_classes];
        for (i, s) in items.iter().enumerate() {
            let other = &items[(i + 1) % n].item;
            if other.image.as_slice().len() != s.item.image.as_slice().len() {
                return Err(DataError::Custom(format!(
                    "sample {}: {}×{} differs from its mixup partner's size",
                    s.index,
                    s.item.image.height(),
                    s.item.image.width()
                )));
            }
            let l = self.lambda;
            images.extend(
                s.item
                    .image
                    .as_slice()
                    .iter()
                    .zip(other.image.as_slice())
                    .map(|(a, b)| l * a + (1.0 - l) * b),
            );
            targets[i * self.num_classes + s.item.label as usize] += l;
            targets[i * self.num_classes + other.label as usize] += 1.0 - l;
        }
        Ok(MixBatch {
            images: Tensor::from_data(TensorData::new(images, [n, c, h, w]), &self.device),
            targets: Tensor::from_data(TensorData::new(targets, [n, self.num_classes]), &self.device),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let csv = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => write_demo(scratch.path())?,
    };
    let dataset = CsvImages::open(&csv)?;
    println!(
        "{}: {} images, {} classes",
        csv.display(),
        dataset.len(),
        dataset.num_classes
    );

    // 1. The custom batcher through kiln's loader (workers, seeded order, errors naming samples).
    let norm = Normalization::torch_imagenet();
    let norm_for_loader = norm.clone();
    let transform = move |item: CsvItem, _: &mut SampleRng| -> Result<ClassSample<Rgb>, DataError> {
        let image = resize_normalize(&item.image, 16, 16, &norm_for_loader)
            .map_err(|e| DataError::Custom(e.to_string()))?;
        Ok(ClassSample {
            image,
            label: item.label,
            path: None,
        })
    };
    let batcher = MixUpBatcher {
        num_classes: dataset.num_classes,
        lambda: 0.7,
        device: Device::flex(),
    };
    let loader = Loader::new(
        dataset.clone(),
        transform,
        batcher,
        LoaderConfig {
            batch_size: 8,
            ..LoaderConfig::default()
        },
    )?;
    let first = loader.epoch(0).next().context("no batch")??;
    let sums = first.targets.clone().sum_dim(1).into_data();
    println!(
        "mixup batch: images {:?}, soft targets {:?} (each row sums to {:?})",
        first.images.dims(),
        first.targets.dims(),
        sums.iter::<f32>().next()
    );

    // 2. The same dataset trains through `fit`: it only has to be a `LabeledImage` dataset.
    let eval = Compose {
        stages: vec![Stage::Resize {
            height: 16,
            width: 16,
        }],
        normalization: NormalizationSpec::TorchImagenet,
        erasing: 0.0,
    };
    let source = ClassificationSource::new(dataset.clone(), norm).with_eval_transform(eval)?;
    let device = Device::flex();
    let model = ReferenceCnnConfig::new()
        .with_in_channels(3)
        .with_height(16)
        .with_width(16)
        .with_num_classes(dataset.num_classes)
        .init(&device)?;
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 8,
        lr: 0.02,
        ..TrainConfig::default()
    };
    let r = fit(model, &source, None, &cfg, &device, FitOutputs::default())?;
    for e in &r.epochs {
        println!(
            "epoch {}: train_loss={:.4} train_acc={:.3}",
            e.epoch,
            e.train_loss,
            e.metric("train_acc").unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

/// 48 PNGs of three colours (with noise and sizes from 14 to 25 px) and their `labels.csv`.
fn write_demo(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut csv = String::from("file,label\n");
    let colours = [[200u8, 40, 40], [40, 200, 40], [40, 40, 200]];
    for i in 0..48u32 {
        let label = i % 3;
        let size = 14 + (i % 12);
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            let noise = ((x * 7 + y * 13 + i * 31) % 40) as u8;
            image::Rgb(colours[label as usize].map(|c| c.saturating_add(noise)))
        });
        let file = format!("img_{i:03}.png");
        img.save(dir.join(&file))?;
        csv.push_str(&format!("{file},{label}\n"));
    }
    let path = dir.join("labels.csv");
    std::fs::write(&path, csv)?;
    Ok(path)
}
