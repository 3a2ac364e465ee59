//! Detection batches from a COCO-style file — PyTorch's hand-written `collate_fn` for boxes, as a
//! type: images of different sizes are resized (aspect kept) and flipped with their boxes, then
//! padded to one size (a multiple of 32); boxes become `[N, M, 4]` with a `[N, M]` mask, labels are
//! padded with −1, and every image keeps its original / resized / padded shape and scale.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example detection                 # on a generated COCO file
//! cargo run --release -p kiln-suite --example detection -- IMAGES_DIR ANNOTATIONS.json
//! ```
//! The generated file has four images of different sizes with one to three coloured boxes each,
//! one of them crowd-flagged, and one image without boxes (which is legal).

use anyhow::Context;
use burn::prelude::*;
use kiln_data::batcher::{DetSample, DetectionBatcher};
use kiln_data::{CocoDetection, DataError, DetectionItem, Loader, LoaderConfig, Rgb, SampleRng};
use kiln_transforms::Normalization;
use kiln_transforms::augment::{random_flip, resize_detection};

/// The shorter side every image is resized to.
const SHORTER: usize = 64;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scratch = tempfile::tempdir()?;
    let (images, annotations) = match args.as_slice() {
        [images, annotations] => (images.into(), annotations.into()),
        [] => write_demo_coco(scratch.path())?,
        _ => anyhow::bail!("usage: detection [IMAGES_DIR ANNOTATIONS.json]"),
    };
    let dataset = CocoDetection::new(&images, &annotations)?;
    let classes = dataset.categories().to_vec();
    println!(
        "{} images, categories {:?} (COCO ids {:?} → labels 0..{})",
        burn::data::dataset::Dataset::len(&dataset),
        classes,
        dataset.category_ids(),
        classes.len()
    );

    let norm = Normalization::torch_imagenet();
    // Per sample: shorter side to 64 (aspect kept), a random horizontal flip, boxes moved along.
    let transform = move |item: DetectionItem, rng: &mut SampleRng| -> Result<DetSample<Rgb>, DataError> {
        let (h, w) = (item.image.height(), item.image.width());
        let s = SHORTER as f32 / h.min(w) as f32;
        let out = [(h as f32 * s).round() as usize, (w as f32 * s).round() as usize];
        resize_detection(item, out, random_flip(rng, 0.5), &norm)
    };
    let batcher = DetectionBatcher::new(classes.len(), Device::flex()).with_size_multiple(32);
    let loader = Loader::new(
        dataset,
        transform,
        batcher,
        LoaderConfig {
            batch_size: 2,
            num_workers: 2,
            ..LoaderConfig::default()
        },
    )?;
    for (i, batch) in loader.epoch(0).enumerate() {
        let b = batch.with_context(|| format!("batch {i}"))?;
        println!("\nbatch {i}");
        println!(
            "  images {:?}  (N, C, H, W; padded bottom/right)",
            b.images.dims()
        );
        println!(
            "  boxes  {:?}  (N, M, 4: x1, y1, x2, y2 in resized pixels)",
            b.boxes.dims()
        );
        println!(
            "  labels {:?}",
            rows(b.labels.clone().into_data().iter::<i64>(), b.labels.dims()[1])
        );
        println!(
            "  mask   {:?}",
            rows(b.mask.clone().into_data().iter::<bool>(), b.mask.dims()[1])
        );
        for m in &b.meta {
            println!(
                "  sample {}: file {:?} → resized {:?} → padded {:?}, scale {:?}",
                m.index, m.original_hw, m.resized_hw, m.padded_hw, m.scale
            );
        }
    }
    Ok(())
}

/// Splits a flat iterator into rows of `width`.
fn rows<T>(values: impl Iterator<Item = T>, width: usize) -> Vec<Vec<T>> {
    let all: Vec<T> = values.collect();
    let mut out = Vec::new();
    let mut it = all.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(width.max(1)).collect());
    }
    out
}

/// A demo box: COCO category id, x, y, width, height, iscrowd.
type DemoBox = (u64, u32, u32, u32, u32, u8);

/// Four PNGs of different sizes with coloured rectangles, and their COCO annotations (xywh boxes,
/// category ids that are not contiguous, one crowd box, one image without boxes).
fn write_demo_coco(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let images = dir.join("images");
    std::fs::create_dir_all(&images)?;
    // (file, width, height, boxes as (category id, x, y, w, h, crowd))
    let spec: [(&str, u32, u32, &[DemoBox]); 4] = [
        (
            "street.png",
            96,
            64,
            &[(3, 8, 8, 30, 20, 0), (18, 50, 30, 40, 30, 0)],
        ),
        ("park.png", 64, 80, &[(18, 10, 10, 20, 40, 0)]),
        (
            "crowd.png",
            120,
            72,
            &[
                (1, 0, 0, 60, 72, 1),
                (1, 70, 10, 20, 50, 0),
                (3, 95, 40, 20, 20, 0),
            ],
        ),
        ("empty.png", 72, 72, &[]),
    ];
    let colour = |cat: u64| match cat {
        1 => [220, 40, 40],
        3 => [40, 40, 220],
        _ => [40, 200, 40],
    };
    let (mut imgs, mut anns) = (Vec::new(), Vec::new());
    for (id, (file, w, h, boxes)) in spec.iter().enumerate() {
        let mut img = image::RgbImage::from_pixel(*w, *h, image::Rgb([128, 128, 128]));
        for &(cat, x, y, bw, bh, crowd) in *boxes {
            for yy in y..(y + bh).min(*h) {
                for xx in x..(x + bw).min(*w) {
                    img.put_pixel(xx, yy, image::Rgb(colour(cat)));
                }
            }
            anns.push(format!(
                r#"{{"id": {}, "image_id": {id}, "category_id": {cat}, "bbox": [{x}, {y}, {bw}, {bh}], "iscrowd": {crowd}}}"#,
                anns.len() + 1
            ));
        }
        img.save(images.join(file))?;
        imgs.push(format!(
            r#"{{"id": {id}, "file_name": "{file}", "width": {w}, "height": {h}}}"#
        ));
    }
    let json = format!(
        r#"{{"images": [{}], "annotations": [{}], "categories": [{{"id": 1, "name": "person"}}, {{"id": 3, "name": "car"}}, {{"id": 18, "name": "dog"}}]}}"#,
        imgs.join(", "),
        anns.join(", ")
    );
    let annotations = dir.join("annotations.json");
    std::fs::write(&annotations, json)?;
    Ok((images, annotations))
}
