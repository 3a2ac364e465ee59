//! What each fuzz target does with its input, shared by the `cargo fuzz` targets
//! (`fuzz_targets/*.rs`) and by the regular test suite, which replays the committed corpora
//! (`tests/fuzz_corpus.rs`). Every body must return normally for any input: errors are fine,
//! panics and hangs are the bugs.

#![allow(dead_code)] // each target uses one body

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use kiln_data::{Cifar100Label, CifarDataset, CocoDetection, SampleRng, decode, idx, npy};
use kiln_train::config::RunFile;
use kiln_transforms::NormalizationSpec;
use kiln_transforms::compose::{Compose, Stage};

/// The idx reader (MNIST / Fashion-MNIST files, raw or gzipped).
pub fn idx(data: &[u8]) {
    let _ = idx::parse_idx(data, Path::new("fuzz.idx"));
}

/// The `.npy` reader.
pub fn npy(data: &[u8]) {
    let _ = npy::decode(data, Path::new("fuzz.npy"));
}

/// Image decoding (every format kiln reads) followed by a transform pipeline with random crops,
/// flips, colour jitter and erasing, and the grey path.
pub fn decode_transform(data: &[u8]) {
    let Some((&seed, bytes)) = data.split_first() else {
        return;
    };
    if let Ok(img) = decode::decode_bgr(bytes, Path::new("fuzz.img")) {
        let compose = Compose {
            stages: vec![
                Stage::RandomResizedCrop { height: 8, width: 8 },
                Stage::HorizontalFlip { p: 0.5 },
                Stage::ColorJitter {
                    brightness: 0.4,
                    contrast: 0.4,
                    saturation: 0.4,
                    hue: 0.1,
                },
                Stage::RandomCrop {
                    height: 8,
                    width: 8,
                    padding: 2,
                    reflect: seed % 2 == 0,
                },
            ],
            normalization: NormalizationSpec::TorchImagenet,
            erasing: 0.5,
        };
        let mut rng = SampleRng::new(u64::from(seed));
        let _ = compose.apply::<kiln_data::Bgr>(&img, &mut rng);
    }
    if let Ok(img) = decode::decode_gray(bytes, Path::new("fuzz.img")) {
        let _ =
            kiln_transforms::resize_normalize(&img, 5, 7, &kiln_transforms::Normalization::fashion_mnist());
    }
}

fn scratch(name: &str, data: &[u8]) -> Option<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join(name);
    std::fs::write(&path, data).ok()?;
    Some((dir, path))
}

/// The CIFAR binary reader (CIFAR-10 and CIFAR-100 record layouts), then every item.
pub fn cifar(data: &[u8]) {
    let Some((_dir, path)) = scratch("data_batch_1.bin", data) else {
        return;
    };
    for (cifar100, classes) in [(false, 10), (true, 100)] {
        if let Ok(ds) = CifarDataset::from_files(
            std::slice::from_ref(&path),
            cifar100,
            classes,
            Cifar100Label::Fine,
        ) {
            for i in 0..ds.len().min(64) {
                let _ = ds.get(i);
            }
        }
    }
}

/// The COCO annotation parser (images absent: only the JSON is under test).
pub fn coco(data: &[u8]) {
    let Some((dir, path)) = scratch("annotations.json", data) else {
        return;
    };
    if let Ok(ds) = CocoDetection::new(dir.path(), &path) {
        let _ = ds.box_counts();
        for i in 0..ds.len().min(16) {
            let _ = ds.get(i);
        }
    }
}

/// Run files (`kiln train --config`), including `--set`-style overrides taken from the input's
/// last line.
pub fn run_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = RunFile::parse(text, Path::new("fuzz.toml"), &[]) {
        let _ = file.to_toml();
        let _ = file.train.validate();
    }
    if let Some(last) = text.lines().last() {
        let _ = RunFile::parse("", Path::new("fuzz.toml"), &[last.to_string()]);
    }
}
