//! `kiln inspect` on COCO detection data: a sample's boxes, and the first batch as a detection
//! model would get it — images padded to one size, boxes `[N, M, 4]` with a mask, labels padded
//! with −1, each image's shapes and scale. Glue over `kiln_data::coco` and `DetectionBatcher`.

use std::path::Path;

use anyhow::Context;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::batcher::{DetSample, DetectionBatcher, ImageMeta};
use kiln_data::{DataError, DetectionItem, Loader, LoaderConfig, Rgb, SampleRng};
use kiln_train::config::RunFile;
use kiln_transforms::augment::{crop_resize_normalize, map_boxes};
use kiln_transforms::compose::{Stage, shorter_side};
use kiln_transforms::sample::Window;
use serde::Serialize;

use crate::args::Usage;

/// Padded batch sizes are rounded up to this (a stride-32 backbone's requirement).
const SIZE_MULTIPLE: usize = 32;

#[derive(Serialize)]
struct BoxReport {
    xyxy: [f32; 4],
    label: u32,
    class: String,
    crowd: bool,
}

#[derive(Serialize)]
struct SampleReport {
    index: usize,
    file: std::path::PathBuf,
    image_id: u64,
    raw_shape_hwc: [usize; 3],
    colour_order: &'static str,
    boxes: Vec<BoxReport>,
}

#[derive(Serialize)]
struct MetaReport {
    index: usize,
    original_hw: [usize; 2],
    resized_hw: [usize; 2],
    padded_hw: [usize; 2],
    scale: [f32; 2],
}

#[derive(Serialize)]
struct BatchReport {
    images: Vec<usize>,
    boxes: Vec<usize>,
    labels: Vec<Vec<i64>>,
    mask: Vec<Vec<bool>>,
    meta: Vec<MetaReport>,
}

#[derive(Serialize)]
struct Report {
    categories: Vec<String>,
    category_ids: Vec<u64>,
    images: usize,
    sample: SampleReport,
    first_batch: BatchReport,
}

/// Prints `dataset[index]` and the first detection batch of the COCO data `file` names.
pub(crate) fn inspect(file: &RunFile, index: usize, json: bool, grid: Option<&Path>) -> anyhow::Result<()> {
    if grid.is_some() {
        return Err(
            Usage("--grid draws classification batches; for COCO data it is not available".into()).into(),
        );
    }
    let dataset = kiln_train::data::coco(file)?;
    let categories = dataset.categories().to_vec();
    let n = dataset.len();
    if index >= n {
        return Err(Usage(format!("--index {index}: the file lists {n} images (0..{n})")).into());
    }
    let item = dataset.get(index)?;
    let name = |l: u32| categories.get(l as usize).cloned().unwrap_or_default();
    let sample = SampleReport {
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
            return Err(Usage(
                "for COCO data, [transforms] eval may be one `resize` or one `resize-shorter` stage (crops would cut boxes)".into(),
            )
            .into());
        }
    };
    let norm = file.transforms.normalization(file.data.format).resolve()?;
    let norm_name = norm.name.clone();
    let transform = move |item: DetectionItem, _: &mut SampleRng| -> Result<DetSample<Rgb>, DataError> {
        let (h, w) = (item.image.height(), item.image.width());
        let out = size(h, w);
        let window = Window {
            top: 0,
            left: 0,
            height: h,
            width: w,
        };
        let image = crop_resize_normalize(&item.image, window, out[0], out[1], false, &norm)
            .map_err(|e| DataError::Custom(format!("{}: {e}", item.path.display())))?;
        let moved = map_boxes(&item.boxes, &item.labels, window, out, false);
        Ok(DetSample {
            image,
            crowd: moved
                .kept
                .iter()
                .map(|&i| item.crowd.get(i).copied().unwrap_or(false))
                .collect(),
            boxes: moved.boxes,
            labels: moved.labels,
            original_hw: [h, w],
            path: Some(item.path),
        })
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
    let b = loader.epoch(0).next().context("the dataset has no batch")??;
    let m = b.labels.dims()[1];
    let first_batch = BatchReport {
        images: b.images.dims().to_vec(),
        boxes: b.boxes.dims().to_vec(),
        labels: rows(b.labels.clone().into_data().iter::<i64>().collect(), m),
        mask: rows(b.mask.clone().into_data().iter::<bool>().collect(), m),
        meta: b.meta.iter().map(meta).collect(),
    };
    let report = Report {
        categories,
        category_ids,
        images: n,
        sample,
        first_batch,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let s = &report.sample;
    println!(
        "COCO detection: {} images, categories {:?} (ids {:?} → labels 0..{})",
        report.images,
        report.categories,
        report.category_ids,
        report.categories.len()
    );
    println!(
        "dataset[{}] ({}, image id {})",
        s.index,
        s.file.display(),
        s.image_id
    );
    println!(
        "  raw: {:?} HWC {} u8, {} boxes",
        s.raw_shape_hwc,
        s.colour_order,
        s.boxes.len()
    );
    for bx in &s.boxes {
        println!(
            "    {:?} (x1, y1, x2, y2) label {} ({}){}",
            bx.xyxy,
            bx.label,
            bx.class,
            if bx.crowd { " crowd" } else { "" }
        );
    }
    let fb = &report.first_batch;
    println!("first batch (padded to a multiple of {SIZE_MULTIPLE}):");
    println!(
        "  images {:?} (N, C, H, W) f32 RGB, normalised `{}`",
        fb.images, norm_name
    );
    println!(
        "  boxes  {:?} (N, M, 4), labels and mask (N, M), −1 / false for padding",
        fb.boxes
    );
    for (i, (l, mk)) in fb.labels.iter().zip(&fb.mask).enumerate() {
        println!("    image {i}: labels {l:?} mask {mk:?}");
    }
    for m in &fb.meta {
        println!(
            "  sample {}: file {:?} → resized {:?} → padded {:?}, scale {:?}",
            m.index, m.original_hw, m.resized_hw, m.padded_hw, m.scale
        );
    }
    Ok(())
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
