//! The loader end to end on an ImageFolder the test writes: determinism across worker counts with
//! random augmentation, and errors that name the sample and its file.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use kiln_data::batcher::{ClassBatch, ClassSample, ClassificationBatcher};
use kiln_data::{
    Bgr, DataError, Hwc, Image, ImageFolder, ImageFolderItem, Loader, LoaderConfig, Rgb, SampleRng,
};
use kiln_transforms::{ChannelOrder, Normalization, Scale, normalize_image};

/// `classes` folders of `per_class` PNGs, `h`×`w`, pixel values derived from (class, index).
fn write_folder(root: &Path, classes: usize, per_class: usize, h: u32, w: u32) {
    for c in 0..classes {
        let dir = root.join(format!("class_{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(40 * c + i) as u8, (x * 20) as u8, (y * 30 + i as u32) as u8])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

fn norm() -> Normalization {
    Normalization::new(
        "half",
        vec![0.5; 3],
        vec![0.25; 3],
        Scale::Unit,
        ChannelOrder::Rgb,
    )
    .unwrap()
}

/// A random augmentation: horizontal flip with probability 1/2 and a random 4x4 crop, drawn from
/// the sample's own generator.
fn augment(item: ImageFolderItem, rng: &mut SampleRng) -> Result<ClassSample<Rgb>, DataError> {
    let (h, w) = (item.image.height(), item.image.width());
    let (top, left, flip) = (
        rng.below((h - 3) as u64) as usize,
        rng.below((w - 3) as u64) as usize,
        rng.below(2) == 1,
    );
    let src = item.image.as_bytes();
    let mut px = Vec::with_capacity(4 * 4 * 3);
    for y in top..top + 4 {
        for x in 0..4 {
            let sx = if flip { left + 3 - x } else { left + x };
            px.extend_from_slice(&src[(y * w + sx) * 3..(y * w + sx) * 3 + 3]);
        }
    }
    finish(item, &Image::<Hwc, Bgr>::new(4, 4, px)?)
}

/// No augmentation: the image as decoded, normalised (so sizes may differ within a batch).
fn plain(item: ImageFolderItem, _: &mut SampleRng) -> Result<ClassSample<Rgb>, DataError> {
    let image = item.image.clone();
    finish(item, &image)
}

/// Normalises `image` and keeps `item`'s label and path.
fn finish(item: ImageFolderItem, image: &Image<Hwc, Bgr>) -> Result<ClassSample<Rgb>, DataError> {
    let image = normalize_image(image, &norm()).map_err(|e| DataError::Custom(e.to_string()))?;
    Ok(ClassSample {
        image,
        label: item.label,
        path: Some(item.path),
    })
}

type Transform = fn(ImageFolderItem, &mut SampleRng) -> Result<ClassSample<Rgb>, DataError>;

/// A loader over the ImageFolder at `root`, in dataset order unless `seed` is given.
fn loader(
    root: &Path,
    transform: Transform,
    num_classes: usize,
    batch_size: usize,
    workers: usize,
    seed: Option<u64>,
) -> Result<Loader<ImageFolder, Transform, ClassificationBatcher, ImageFolderItem>> {
    Ok(Loader::new(
        ImageFolder::new(root)?,
        transform,
        ClassificationBatcher::new(num_classes, Device::flex()),
        LoaderConfig {
            batch_size,
            shuffle: seed.is_some(),
            seed: seed.unwrap_or(0),
            num_workers: workers,
            ..LoaderConfig::default()
        },
    )?)
}

/// The message of the first batch's error (empty if the first batch is fine).
fn first_error(
    root: &Path,
    transform: Transform,
    classes: usize,
    batch: usize,
    workers: usize,
) -> Result<String> {
    let loader = loader(root, transform, classes, batch, workers, None)?;
    Ok(loader
        .iter()
        .next()
        .and_then(|r| r.err())
        .map(|e| e.to_string())
        .unwrap_or_default())
}

/// One batch as plain values: dataset indices, image values, labels.
type Plain = (Vec<usize>, Vec<f32>, Vec<i64>);

fn epoch(root: &Path, workers: usize, e: u64) -> Result<Vec<Plain>> {
    let loader = loader(root, augment, 3, 5, workers, Some(11))?;
    loader
        .epoch(e)
        .map(|b| {
            let ClassBatch {
                images,
                targets,
                indices,
            } = b?;
            Ok((
                indices,
                images.into_data().try_into_vec_as::<f32>()?,
                targets.into_data().try_into_vec_as::<i64>()?,
            ))
        })
        .collect()
}

#[test]
fn augmented_batches_are_identical_for_any_number_of_workers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_folder(dir.path(), 3, 8, 9, 10);
    let reference = epoch(dir.path(), 0, 2)?;
    assert_eq!(
        reference.len(),
        5,
        "24 samples in batches of 5, last partial kept"
    );
    assert_eq!(reference[0].1.len(), 5 * 3 * 4 * 4);
    for workers in [1, 2, 4] {
        assert_eq!(epoch(dir.path(), workers, 2)?, reference, "{workers} workers");
    }
    // A different epoch reshuffles and redraws the augmentation.
    assert_ne!(epoch(dir.path(), 2, 3)?, reference);
    // Labels follow the class folders.
    for (indices, _, labels) in &reference {
        for (i, l) in indices.iter().zip(labels) {
            assert_eq!(*l as usize, i / 8);
        }
    }
    Ok(())
}

#[test]
fn a_corrupt_image_surfaces_with_its_index_and_path() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_folder(dir.path(), 2, 3, 6, 6);
    // Truncate class_1/001.png: sample index 3 + 1 = 4 in ImageFolder order.
    let bad = dir.path().join("class_1/001.png");
    let bytes = std::fs::read(&bad)?;
    std::fs::write(&bad, &bytes[..bytes.len() / 2])?;
    for workers in [0, 2] {
        let loader = loader(dir.path(), augment, 2, 2, workers, None)?;
        let results: Vec<_> = loader.iter().collect();
        assert_eq!(results.len(), 3, "two good batches, then the error, then nothing");
        let msg = results[2]
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(msg.starts_with("sample 4: "), "{msg}");
        assert!(msg.contains("class_1/001.png"), "{msg}");
    }
    Ok(())
}

#[test]
fn batch_errors_name_the_sample_and_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_folder(dir.path(), 3, 2, 6, 6);
    // Classes 0..3 but a batcher told there are 2: label 2 is out of range.
    let msg = first_error(dir.path(), augment, 2, 6, 0)?;
    assert!(msg.starts_with("sample 4 ("), "{msg}");
    assert!(
        msg.contains("class_2/000.png): label 2 is out of range 0..2"),
        "{msg}"
    );

    // Images of two sizes and no resize: the size error names the file and suggests the fix.
    std::fs::remove_dir_all(dir.path().join("class_2"))?;
    image::RgbImage::new(7, 6).save(dir.path().join("class_1/001.png"))?;
    let msg = first_error(dir.path(), plain, 2, 4, 2)?;
    assert!(msg.starts_with("sample 3 ("), "{msg}");
    assert!(
        msg.contains("class_1/001.png): size [3, 6, 7] (CxHxW) differs from [3, 6, 6]"),
        "{msg}"
    );
    assert!(msg.contains("add a resize or crop transform"), "{msg}");
    Ok(())
}
