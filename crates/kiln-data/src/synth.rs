//! A detection set with real pixels: MNIST-family items pasted on larger canvases.
//!
//! [`paste_detection_set`] draws, for each canvas, a smooth colour background with noise and one
//! to several items of a grey source set (Fashion-MNIST's clothing, MNIST's digits), each scaled
//! bilinearly, tinted and blended in by its own intensity. Each item's box is the extent of its
//! visible pixels (above [`PasteConfig::ink`]) and its `area` their count — the role a
//! segmentation's area plays in COCO. Items overlap at most [`PasteConfig::max_overlap`] (IoU).
//! The result is a COCO folder: `images/NNNNNN.png` and `annotations.json` (category ids
//! `1..=K` named after the source's classes), which [`crate::CocoDetection`] and `kiln` read.
//!
//! Every canvas has its own seeded generator ([`crate::loader::sample_seed`]), so a canvas is the
//! same whichever canvases are made with it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::batch::SplitMix64;
use crate::loader::sample_seed;
use crate::{DataError, MnistDataset};

/// How [`paste_detection_set`] composes its canvases.
#[derive(Debug, Clone, PartialEq)]
pub struct PasteConfig {
    /// Canvases to make.
    pub images: usize,
    /// Canvas height and width in pixels.
    pub size: [usize; 2],
    /// Fewest and most items per canvas (an item with no room left is skipped and counted).
    pub objects: [usize; 2],
    /// Smallest and largest scale of a 28-pixel item (2.0 draws it 56 pixels wide).
    pub scale: [f64; 2],
    /// Largest IoU of a new item's box with an earlier one's.
    pub max_overlap: f64,
    /// The grey level above which a source pixel is part of the item (its box and area).
    pub ink: u8,
    /// The generator's seed.
    pub seed: u64,
}

impl Default for PasteConfig {
    fn default() -> Self {
        Self {
            images: 1000,
            size: [128, 128],
            objects: [1, 4],
            scale: [1.0, 2.5],
            max_overlap: 0.2,
            ink: 24,
            seed: 0,
        }
    }
}

/// What [`paste_detection_set`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PasteSummary {
    /// The annotation file.
    pub annotations: PathBuf,
    /// Canvases written.
    pub images: usize,
    /// Items pasted (boxes written).
    pub objects: usize,
    /// Items skipped because no placement within `max_overlap` was found in 50 tries.
    pub skipped: usize,
}

#[derive(Serialize)]
struct OutFile<'a> {
    info: OutInfo,
    images: Vec<OutImage>,
    annotations: Vec<OutAnnotation>,
    categories: Vec<OutCategory<'a>>,
}

#[derive(Serialize)]
struct OutInfo {
    description: String,
}

#[derive(Serialize)]
struct OutImage {
    id: u64,
    file_name: String,
    width: usize,
    height: usize,
}

#[derive(Serialize)]
struct OutAnnotation {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    area: f64,
    iscrowd: u8,
}

#[derive(Serialize)]
struct OutCategory<'a> {
    id: u64,
    name: &'a str,
}

/// One item, scaled: grey levels and the extent of its ink.
struct Sprite {
    size: usize,
    pixels: Vec<u8>,
    /// `[x0, y0, x1, y1]` inclusive extent of the pixels above the ink level.
    extent: [usize; 4],
    ink_pixels: usize,
}

/// Bilinear resize of a square grey item to `size × size` (pixel centres aligned, as
/// `cv2.resize`'s `INTER_LINEAR` for upscaling).
fn scaled(src: &[u8], side: usize, size: usize, ink: u8) -> Option<Sprite> {
    let mut pixels = vec![0u8; size * size];
    let ratio = side as f64 / size as f64;
    let at = |y: usize, x: usize| f64::from(src[y * side + x]);
    for y in 0..size {
        let fy = ((y as f64 + 0.5) * ratio - 0.5).clamp(0.0, (side - 1) as f64);
        let (y0, wy) = (fy.floor() as usize, fy - fy.floor());
        let y1 = (y0 + 1).min(side - 1);
        for x in 0..size {
            let fx = ((x as f64 + 0.5) * ratio - 0.5).clamp(0.0, (side - 1) as f64);
            let (x0, wx) = (fx.floor() as usize, fx - fx.floor());
            let x1 = (x0 + 1).min(side - 1);
            let top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx;
            let bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx;
            pixels[y * size + x] = (top * (1.0 - wy) + bottom * wy).round() as u8;
        }
    }
    let mut extent = [usize::MAX, usize::MAX, 0, 0];
    let mut ink_pixels = 0;
    for y in 0..size {
        for x in 0..size {
            if pixels[y * size + x] > ink {
                ink_pixels += 1;
                extent = [
                    extent[0].min(x),
                    extent[1].min(y),
                    extent[2].max(x),
                    extent[3].max(y),
                ];
            }
        }
    }
    (ink_pixels > 0).then_some(Sprite {
        size,
        pixels,
        extent,
        ink_pixels,
    })
}

fn xywh_iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    i / (a[2] * a[3] + b[2] * b[3] - i)
}

/// One canvas: RGB pixels and its `(category index, xywh box, area)` items.
type Canvas = (Vec<u8>, Vec<(u32, [f64; 4], f64)>, usize);

fn canvas(source: &MnistDataset, cfg: &PasteConfig, index: usize) -> Canvas {
    let [h, w] = cfg.size;
    let mut rng = SplitMix64::new(sample_seed(cfg.seed, 0, index));
    // A smooth background: two colours blended along a random direction, plus noise.
    let c0: [f64; 3] = std::array::from_fn(|_| rng.uniform_in(0.0, 90.0));
    let c1: [f64; 3] = std::array::from_fn(|_| rng.uniform_in(0.0, 90.0));
    let angle = rng.uniform_in(0.0, std::f64::consts::TAU);
    let (dx, dy) = (angle.cos(), angle.sin());
    let span = (w as f64 * dx.abs() + h as f64 * dy.abs()).max(1.0);
    let mut rgb = vec![0u8; h * w * 3];
    for y in 0..h {
        for x in 0..w {
            let t = ((x as f64 - w as f64 / 2.0) * dx + (y as f64 - h as f64 / 2.0) * dy) / span + 0.5;
            for c in 0..3 {
                let v = c0[c] * (1.0 - t) + c1[c] * t + rng.normal() * 6.0;
                rgb[(y * w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let [side_h, side_w, _] = source.image_shape();
    let side = side_h.min(side_w);
    let count = cfg.objects[0] + rng.below((cfg.objects[1] - cfg.objects[0] + 1) as u64) as usize;
    let mut items: Vec<(u32, [f64; 4], f64)> = Vec::new();
    let mut skipped = 0;
    for _ in 0..count {
        let pick = rng.below(source.labels().len() as u64) as usize;
        let label = u32::from(source.labels()[pick]);
        let pixels = &source.pixels()[pick * side_h * side_w..(pick + 1) * side_h * side_w];
        let size =
            ((side as f64 * rng.uniform_in(cfg.scale[0], cfg.scale[1])).round() as usize).clamp(4, h.min(w));
        let Some(sprite) = scaled(pixels, side, size, cfg.ink) else {
            skipped += 1;
            continue;
        };
        let [ex0, ey0, ex1, ey1] = sprite.extent;
        let placed = (0..50).find_map(|_| {
            let x = rng.below((w - sprite.size + 1) as u64) as usize;
            let y = rng.below((h - sprite.size + 1) as u64) as usize;
            let bbox = [
                (x + ex0) as f64,
                (y + ey0) as f64,
                (ex1 - ex0 + 1) as f64,
                (ey1 - ey0 + 1) as f64,
            ];
            items
                .iter()
                .all(|(_, other, _)| xywh_iou(bbox, *other) <= cfg.max_overlap)
                .then_some((x, y, bbox))
        });
        let Some((x, y, bbox)) = placed else {
            skipped += 1;
            continue;
        };
        let tint: [f64; 3] = std::array::from_fn(|_| rng.uniform_in(0.55, 1.0));
        for sy in 0..sprite.size {
            for sx in 0..sprite.size {
                let v = f64::from(sprite.pixels[sy * sprite.size + sx]);
                let alpha = (v / 64.0).min(1.0);
                if alpha == 0.0 {
                    continue;
                }
                let o = ((y + sy) * w + x + sx) * 3;
                for c in 0..3 {
                    let bg = f64::from(rgb[o + c]);
                    rgb[o + c] = (alpha * v * tint[c] + (1.0 - alpha) * bg)
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
            }
        }
        items.push((label, bbox, sprite.ink_pixels as f64));
    }
    (rgb, items, skipped)
}

/// Writes `cfg.images` canvases of `source`'s items into `out` (`images/` and
/// `annotations.json`); `progress(done, total)` is called as canvases are written.
///
/// # Errors
///
/// [`DataError::Format`] for a configuration that cannot work (no canvases, objects or scales
/// out of order, items larger than the canvas); [`DataError::Io`] when a file cannot be written.
pub fn paste_detection_set(
    source: &MnistDataset,
    class_names: &[&str],
    cfg: &PasteConfig,
    out: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<PasteSummary, DataError> {
    let bad = |problem: String| DataError::Format {
        path: out.to_path_buf(),
        problem,
    };
    let [h, w] = cfg.size;
    let [side_h, side_w, _] = source.image_shape();
    if cfg.images == 0 || source.labels().is_empty() {
        return Err(bad(
            "nothing to make: no canvases asked for, or an empty source".into()
        ));
    }
    if cfg.objects[0] > cfg.objects[1] || cfg.scale[0] > cfg.scale[1] || cfg.scale[0] <= 0.0 {
        return Err(bad(format!(
            "objects {:?} and scale {:?} must be [low, high] with low ≤ high (scale > 0)",
            cfg.objects, cfg.scale
        )));
    }
    let largest = (side_h.max(side_w) as f64 * cfg.scale[1]).round() as usize;
    if largest > h.min(w) {
        return Err(bad(format!(
            "a {side_h}-pixel item at scale {} is {largest} pixels, larger than the {h}x{w} canvas",
            cfg.scale[1]
        )));
    }
    let images_dir = out.join("images");
    std::fs::create_dir_all(&images_dir).map_err(|source| DataError::Io {
        path: images_dir.clone(),
        source,
    })?;
    let mut file = OutFile {
        info: OutInfo {
            description: format!(
                "{} items pasted on {h}x{w} canvases by kiln (seed {}, {}-{} per image, scale {}-{})",
                source.images_path().display(),
                cfg.seed,
                cfg.objects[0],
                cfg.objects[1],
                cfg.scale[0],
                cfg.scale[1]
            ),
        },
        images: Vec::with_capacity(cfg.images),
        annotations: Vec::new(),
        categories: (0..source.num_classes())
            .map(|k| OutCategory {
                id: k as u64 + 1,
                name: class_names.get(k).copied().unwrap_or("class"),
            })
            .collect(),
    };
    let mut skipped = 0;
    for index in 0..cfg.images {
        let (rgb, items, missed) = canvas(source, cfg, index);
        skipped += missed;
        let name = format!("{index:06}.png");
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &rgb,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| bad(format!("cannot encode {name}: {e}")))?;
        crate::paths::write_file(&images_dir.join(&name), &png)?;
        let image_id = index as u64 + 1;
        for (label, bbox, area) in items {
            file.annotations.push(OutAnnotation {
                id: file.annotations.len() as u64 + 1,
                image_id,
                category_id: u64::from(label) + 1,
                bbox,
                area,
                iscrowd: 0,
            });
        }
        file.images.push(OutImage {
            id: image_id,
            file_name: name,
            width: w,
            height: h,
        });
        progress(index + 1, cfg.images);
    }
    let annotations = out.join("annotations.json");
    let json = serde_json::to_vec(&file).map_err(|e| bad(e.to_string()))?;
    crate::paths::write_file(&annotations, &json)?;
    Ok(PasteSummary {
        annotations,
        images: cfg.images,
        objects: file.annotations.len(),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CocoDetection, MnistSplit};
    use burn::data::dataset::Dataset;

    fn source() -> MnistDataset {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/fashion-mnist-mini");
        MnistDataset::from_dir(root, MnistSplit::Test).unwrap()
    }

    #[test]
    fn boxes_hold_the_items_ink_and_the_set_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PasteConfig {
            images: 6,
            size: [96, 128],
            objects: [2, 3],
            ..PasteConfig::default()
        };
        let src = source();
        let mut calls = 0;
        let summary = paste_detection_set(&src, &crate::FASHION_MNIST_CLASSES, &cfg, dir.path(), |_, _| {
            calls += 1
        })
        .unwrap();
        assert_eq!((summary.images, calls), (6, 6));
        assert_eq!(
            summary.objects + summary.skipped,
            (0..6)
                .map(|i| canvas(&src, &cfg, i).1.len() + canvas(&src, &cfg, i).2)
                .sum::<usize>()
        );
        assert!(summary.objects >= 12, "{summary:?}");
        let ds = CocoDetection::new(dir.path().join("images"), &summary.annotations).unwrap();
        assert_eq!(ds.len(), 6);
        assert_eq!(ds.categories()[0], "T-shirt/top");
        for i in 0..ds.len() {
            let item = ds.get(i).unwrap();
            assert_eq!(item.image.hwc_shape(), [96, 128, 3]);
            for (b, &label) in item.boxes.iter().zip(&item.labels) {
                assert!(
                    b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 128.0 && b[3] <= 96.0,
                    "{b:?}"
                );
                assert!(b[2] - b[0] >= 1.0 && b[3] - b[1] >= 1.0, "{b:?}");
                assert!(label < 10);
            }
            for (a, b) in item.boxes.iter().zip(item.boxes.iter().skip(1)) {
                let iou = xywh_iou(
                    [
                        f64::from(a[0]),
                        f64::from(a[1]),
                        f64::from(a[2] - a[0]),
                        f64::from(a[3] - a[1]),
                    ],
                    [
                        f64::from(b[0]),
                        f64::from(b[1]),
                        f64::from(b[2] - b[0]),
                        f64::from(b[3] - b[1]),
                    ],
                );
                assert!(iou <= 0.2 + 1e-9);
            }
        }
        // The same seed makes the same first canvas whatever the number of canvases.
        let again = canvas(
            &src,
            &PasteConfig {
                images: 1,
                ..cfg.clone()
            },
            0,
        );
        assert_eq!(again.0, canvas(&src, &cfg, 0).0);
    }

    /// A 4x4 item with ink in its middle 2x2, drawn at 8x8: the extent is where the bilinear
    /// scaling puts ink above the level.
    #[test]
    fn a_scaled_items_extent_is_its_ink() {
        #[rustfmt::skip]
        let src = [
            0, 0, 0, 0,
            0, 200, 200, 0,
            0, 200, 200, 0,
            0, 0, 0, 0,
        ];
        let sprite = scaled(&src, 4, 8, 24).unwrap();
        // cv2.resize(src, (8, 8), interpolation=cv2.INTER_LINEAR) row 3: [0 0 50 150 200 200 150 50 0]
        // Pixels above 24 span columns and rows 1..=6 (row 1 is [0 13 38 50 50 38 13 0]).
        assert_eq!(&sprite.pixels[3 * 8..4 * 8], &[0, 50, 150, 200, 200, 150, 50, 0]);
        assert_eq!(sprite.extent, [1, 1, 6, 6]);
        assert_eq!(
            sprite.ink_pixels,
            sprite.pixels.iter().filter(|&&v| v > 24).count()
        );
        assert!(
            scaled(&[0; 16], 4, 8, 24).is_none(),
            "an item without ink has no box"
        );
    }

    #[test]
    fn impossible_configurations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = source();
        for (cfg, expected) in [
            (
                PasteConfig {
                    images: 0,
                    ..PasteConfig::default()
                },
                "nothing to make",
            ),
            (
                PasteConfig {
                    objects: [3, 1],
                    ..PasteConfig::default()
                },
                "low ≤ high",
            ),
            (
                PasteConfig {
                    size: [40, 40],
                    ..PasteConfig::default()
                },
                "larger than the 40x40 canvas",
            ),
        ] {
            let msg = paste_detection_set(&src, &[], &cfg, dir.path(), |_, _| {})
                .unwrap_err()
                .to_string();
            assert!(msg.contains(expected), "{msg}");
        }
    }
}
