//! Input-pipeline throughput: ImageFolder of JPEGs → decode (as cv2.imread) → RandomResizedCrop 224 →
//! random horizontal flip → normalised CHW f32 (ImageNet preset) → batches of 64 on the flex device,
//! with N loader workers: the same pipeline as torchvision's in `torch_pipeline.py`.
//!
//! `--trivial-augment` adds torchvision's `TrivialAugmentWide` after the crop (on the u8 crop, as
//! torchvision applies it to the PIL image).
//!
//! The peer is `bench/torch_pipeline.py` (torchvision ImageFolder + DataLoader); run both side by
//! side with `bash bench/pipeline.sh`. Also the smallest complete use of the loader.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example pipeline -- ROOT [--workers 2] [--batch 64] [--size 224] [--epochs 1] [--resize-only | --trivial-augment]
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use burn::prelude::*;
use kiln_data::batcher::{ClassSample, ClassificationBatcher};
use kiln_data::{DataError, ImageFolder, ImageFolderItem, Loader, LoaderConfig, Rgb, SampleRng};
use kiln_transforms::augment::{RandomResizedCrop, Window, crop_resize_normalize, random_flip};
use kiln_transforms::autoaugment::TrivialAugmentWide;
use kiln_transforms::sample::crop_resize;
use kiln_transforms::{Normalization, resize_normalize};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut root = None;
    let (mut workers, mut batch, mut size, mut epochs) = (2usize, 64usize, 224usize, 1u64);
    let (mut resize_only, mut trivial_augment) = (false, false);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<String> {
            args.next().with_context(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--workers" => workers = value("--workers")?.parse()?,
            "--batch" => batch = value("--batch")?.parse()?,
            "--size" => size = value("--size")?.parse()?,
            "--epochs" => epochs = value("--epochs")?.parse()?,
            "--resize-only" => resize_only = true,
            "--trivial-augment" => trivial_augment = true,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => root = Some(s.to_string()),
        }
    }
    // glibc: keep freed batch memory for reuse instead of page-faulting it back in (see
    // kiln_data::alloc). KILN_DEFAULT_MALLOC=1 measures without it.
    let tuned = kiln_data::alloc::tune_for_loading();
    let root = root.context(
        "usage: pipeline ROOT [--workers 2] [--batch 64] [--size 224] [--epochs 1] [--resize-only | --trivial-augment]",
    )?;

    let dataset = ImageFolder::new(&root)?;
    for w in dataset.warnings() {
        eprintln!("warning: {w}");
    }
    let num_classes = dataset.classes().len();
    // torchvision's ImageNet preset, on the unit scale, RGB.
    let norm = Normalization::torch_imagenet_unit();
    let crop = RandomResizedCrop::new(size, size);
    // torchvision's RandomResizedCrop(size) + RandomHorizontalFlip() + ToTensor() + Normalize(),
    // with the randomness drawn from the sample's own generator; `--resize-only` resizes the whole
    // image instead (the pipeline measured before augmentation existed).
    let transform =
        move |item: ImageFolderItem, rng: &mut SampleRng| -> Result<ClassSample<Rgb>, DataError> {
            let img = &item.image;
            let image = if resize_only {
                resize_normalize(img, size, size, &norm)
            } else if trivial_augment {
                // Crop to u8, one TrivialAugmentWide operation, then flip and normalise.
                let window = crop.sample(img.height(), img.width(), rng);
                let cropped = crop_resize(img, window, size, size, false)
                    .map_err(|e| DataError::Custom(e.to_string()))?;
                let augmented = TrivialAugmentWide::default().apply(&cropped, rng);
                let flip = random_flip(rng, 0.5);
                let whole = Window {
                    top: 0,
                    left: 0,
                    height: size,
                    width: size,
                };
                crop_resize_normalize(&augmented, whole, size, size, flip, &norm)
            } else {
                let window = crop.sample(img.height(), img.width(), rng);
                let flip = random_flip(rng, 0.5);
                crop_resize_normalize(img, window, size, size, flip, &norm)
            }
            .map_err(|e| DataError::Custom(e.to_string()))?;
            Ok(ClassSample {
                image,
                label: item.label,
                path: Some(item.path),
            })
        };
    let batcher = ClassificationBatcher::new(num_classes, Device::flex());
    let config = LoaderConfig {
        batch_size: batch,
        num_workers: workers,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(dataset, transform, batcher, config)?;

    let start = Instant::now();
    let mut images = 0usize;
    for epoch in 0..epochs {
        for b in loader.epoch(epoch) {
            images += b?.images.dims()[0];
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "pipeline_images_per_s={:.1} images={images} seconds={secs:.2} workers={workers} malloc_tuned={tuned}",
        images as f64 / secs
    );
    Ok(())
}
