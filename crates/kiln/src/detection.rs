//! `kiln inspect` on COCO detection data: a sample's boxes, and the first batch as a detection
//! model would get it (`kiln_train::inspect::inspect_detection`), printed.

use std::path::Path;

use kiln_train::config::RunFile;
use kiln_train::inspect::SIZE_MULTIPLE;

use crate::usage::Usage;

/// Prints `dataset[index]` and the first detection batch of the COCO data `file` names.
pub(crate) fn inspect(file: &RunFile, index: usize, json: bool, grid: Option<&Path>) -> anyhow::Result<()> {
    if grid.is_some() {
        return Err(
            Usage("--grid draws classification batches; for COCO data it is not available".into()).into(),
        );
    }
    let report = kiln_train::inspect::inspect_detection(file, index)?;
    let norm_name = &report.normalization;
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
