//! kiln's crates as libraries in someone else's project: kiln-data reads an image folder with the
//! pixels `cv2.imread` gives, kiln-models imports torchvision-layout ResNet weights, and the
//! program classifies every image.
//!
//! ```text
//! cargo run --release -- WEIGHTS IMAGE_FOLDER [--expect EXPECTED.json]
//! ```
//!
//! WEIGHTS: a CIFAR ResNet-20 state dict (`.pth` or `.safetensors`) with torchvision's module names.
//! IMAGE_FOLDER: `<class>/<image>` files, all of one size. `--expect` compares the logits with
//! PyTorch's (`scripts/make_standalone_expected.py` writes them) and fails beyond 1e-4.

use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;

use kiln_data::burn::data::dataset::Dataset;
use kiln_data::burn::prelude::*;
use kiln_data::burn::tensor::TensorData;
use kiln_data::{ImageFolder, ImageFolderItem};
use kiln_models::{Classifier, ResNetConfig, ResNetKind, load_torchvision_resnet};

/// kiln's CIFAR-10 preset (`kiln_transforms::Normalization::cifar10`), RGB order, on 0..1 pixels.
const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
const STD: [f32; 3] = [0.2023, 0.1994, 0.2010];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let expect = match args.iter().position(|a| a == "--expect") {
        Some(i) if i + 1 < args.len() => Some(PathBuf::from(args.drain(i..i + 2).nth(1).unwrap_or_default())),
        Some(_) => return Err("--expect needs a file".into()),
        None => None,
    };
    let [weights, folder] = <[String; 2]>::try_from(args)
        .map_err(|_| "usage: kiln-standalone-example WEIGHTS IMAGE_FOLDER [--expect EXPECTED.json]")?;

    // kiln-data: the folder scanned as torchvision's ImageFolder does, each image decoded to
    // HWC, BGR, u8 — the type says so.
    let folder = ImageFolder::new(&folder)?;
    let items = (0..folder.len())
        .map(|i| folder.get(i))
        .collect::<Result<Vec<ImageFolderItem>, _>>()?;
    let [h, w, _] = items.first().ok_or("the folder has no images")?.image.hwc_shape();

    // The model wants NCHW, RGB, normalised floats: HWC/BGR u8 turned around by hand here (the
    // kiln-transforms crate does this, with the scale and colour order checked).
    let mut pixels = Vec::with_capacity(items.len() * 3 * h * w);
    for item in &items {
        if item.image.hwc_shape() != [h, w, 3] {
            return Err(format!(
                "{}: {:?}, the first image is {h}x{w}",
                item.path.display(),
                item.image.hwc_shape()
            )
            .into());
        }
        let bgr = item.image.as_slice();
        for c in 0..3 {
            let from = 2 - c; // RGB channel c is BGR channel 2 - c
            pixels.extend(
                bgr[from..]
                    .iter()
                    .step_by(3)
                    .map(|&v| (v as f32 / 255.0 - MEAN[c]) / STD[c]),
            );
        }
    }

    // kiln-models: the architecture built, then torchvision-layout weights imported into it.
    let device = Device::flex();
    let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device)?;
    let model = load_torchvision_resnet(model, weights.as_ref())?;
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [items.len(), 3, h, w]), &device);
    model.check_input(&x.dims())?;
    let logits = model.logits(x).into_data().try_to_vec::<f32>()?;

    let classes = logits.len() / items.len();
    for (item, row) in items.iter().zip(logits.chunks(classes)) {
        let top = (0..classes)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap_or(0);
        println!(
            "{}  folder {}  predicted class {top}  logit {:.4}",
            item.path.display(),
            folder.classes()[item.label as usize],
            row[top]
        );
    }

    if let Some(expect) = expect {
        let text = std::fs::read_to_string(&expect).map_err(|e| format!("{}: {e}", expect.display()))?;
        let want =
            parse_logits(&text).ok_or_else(|| format!("{}: no \"logits\" arrays", expect.display()))?;
        if want.len() != logits.len() {
            return Err(format!(
                "{}: {} logits, the model gave {}",
                expect.display(),
                want.len(),
                logits.len()
            )
            .into());
        }
        let worst = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("max |kiln - PyTorch| = {worst:e} over {} logits", want.len());
        if worst > 1e-4 {
            return Err(format!(
                "logits differ from {} by {worst:e} (bound 1e-4)",
                expect.display()
            )
            .into());
        }
    }
    Ok(())
}

/// Every number inside the `"logits": [...]` arrays of the expected file, in order (a few lines
/// instead of a JSON dependency: this project depends on the two kiln crates only).
fn parse_logits(text: &str) -> Option<Vec<f32>> {
    let mut out = Vec::new();
    for part in text.split("\"logits\"").skip(1) {
        let body = part.split_once('[')?.1.split_once(']')?.0;
        for v in body.split(',') {
            out.push(v.trim().parse().ok()?);
        }
    }
    (!out.is_empty()).then_some(out)
}
