//! FCOS (torchvision's definition, ResNet-18 FPN) trained from scratch on a COCO folder, with COCO
//! AP on the validation split every epoch — through the same `fit_task` loop as classification.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example fcos                          # makes the data first
//! cargo run --release -p kiln-suite --example fcos -- --data data/fmnist-det --epochs 12
//! kiln score --annotations data/fmnist-det/val/annotations.json --detections runs/fcos/detections.json
//! ```
//!
//! `--data DIR` takes `DIR/train` and `DIR/val` as `kiln make-detection` writes them (images/ and
//! annotations.json); without it, 1000 + 200 canvases of the vendored Fashion-MNIST items are made
//! in `runs/fcos/data`. At the end the validation detections are written as a COCO results file
//! (`--out`, default `runs/fcos`) that `kiln score` (and pycocotools) read, and the first six
//! validation images are drawn with their detections (score ≥ 0.3) as `val_N.png`.

use std::path::PathBuf;

use anyhow::Context;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::{CocoDetection, CocoFile, MnistDataset, MnistSplit, PasteConfig, paste_detection_set};
use kiln_models::fcos::FcosConfig;
use kiln_models::resnet::ResNetKind;
use kiln_train::detection::{DetectionSource, DetectionTask, MAP, MAP50};
use kiln_train::optim::OptimizerConfig;
use kiln_train::plot::{LabelledBox, draw_boxes};
use kiln_train::{EpochRecord, FitOutputs, TrainConfig, evaluate_task, fit_task};
use kiln_transforms::Normalization;

struct Args {
    data: Option<PathBuf>,
    out: PathBuf,
    epochs: usize,
    batch: usize,
    size: usize,
    channels: usize,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        data: None,
        out: PathBuf::from("runs/fcos"),
        epochs: 12,
        batch: 16,
        size: 128,
        channels: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(value()?.into()),
            "--out" => a.out = value()?.into(),
            "--epochs" => a.epochs = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--size" => a.size = value()?.parse()?,
            "--channels" => a.channels = value()?.parse()?,
            _ => anyhow::bail!(
                "usage: fcos [--data DIR] [--out DIR] [--epochs N] [--batch N] [--size PIXELS] [--channels N]"
            ),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            let dir = args.out.join("data");
            if !dir.join("val/annotations.json").exists() {
                let root = concat!(env!("CARGO_MANIFEST_DIR"), "/data/fashion-mnist-mini");
                for (split, name, images, seed) in [
                    (MnistSplit::Train, "train", 1000, 0),
                    (MnistSplit::Test, "val", 200, 1),
                ] {
                    let cfg = PasteConfig {
                        images,
                        size: [args.size, args.size],
                        // Items up to 2.5x (70 px), smaller on small canvases.
                        scale: [1.0, (args.size as f64 * 0.9 / 28.0).clamp(1.0, 2.5)],
                        seed,
                        ..PasteConfig::default()
                    };
                    let source = MnistDataset::from_dir(root, split)?;
                    let s = paste_detection_set(
                        &source,
                        &kiln_data::FASHION_MNIST_CLASSES,
                        &cfg,
                        &dir.join(name),
                        |_, _| {},
                    )?;
                    println!("made {name}: {} images, {} objects", s.images, s.objects);
                }
            }
            dir
        }
    };
    let read = |split: &str| -> anyhow::Result<(CocoDetection, CocoFile)> {
        let file = CocoFile::read(data.join(split).join("annotations.json"))?;
        Ok((
            CocoDetection::from_file(data.join(split).join("images"), &file)?,
            file,
        ))
    };
    let ((train_set, _), (val_set, val_gt)) = (read("train")?, read("val")?);
    let classes = val_set.categories().len();
    println!(
        "data: {} train / {} val images, {classes} categories; FCOS ResNet-18 FPN, {} channels, images resized to {}",
        train_set.len(),
        val_set.len(),
        args.channels,
        args.size
    );
    let norm = Normalization::torch_imagenet();
    let task = DetectionTask::new(val_gt, &val_set)?;
    let train = DetectionSource::new(train_set, norm.clone(), args.size, args.size, 0.5, 0);
    let val = DetectionSource::new(val_set, norm, args.size, args.size, 0.0, 0);

    let device = Device::flex();
    device.seed(0);
    let model = FcosConfig::new(ResNetKind::ResNet18, classes)
        .with_channels(args.channels)
        .init(&device)?;
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        lr: 0.01,
        num_workers: 2,
        optimizer: OptimizerConfig::Sgd {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-4,
            decay_norm_and_bias: false,
        },
        clip_grad_norm: Some(10.0),
        ..TrainConfig::default()
    };
    let mut print = |r: &EpochRecord| {
        println!(
            "epoch {:>2}  train_loss {:.4}  val_loss {:.4}  AP {:.3}  AP50 {:.3}  {:.1} img/s",
            r.epoch,
            r.train_loss,
            r.val_loss.unwrap_or(f64::NAN),
            r.val(&MAP).unwrap_or(f64::NAN),
            r.val(&MAP50).unwrap_or(f64::NAN),
            r.train_images_per_s
        )
    };
    let started = std::time::Instant::now();
    let result = fit_task(
        &task,
        model,
        &train,
        Some(&val),
        &cfg,
        &device,
        FitOutputs {
            progress: true,
            on_epoch: Some(&mut print),
            ..FitOutputs::default()
        },
    )?;
    println!("trained in {:.0} s", started.elapsed().as_secs_f64());

    let model = result.model.valid();
    let eval = evaluate_task(&task, &model, &val, args.batch, &device)?;
    std::fs::create_dir_all(&args.out)?;
    let dets = args.out.join("detections.json");
    std::fs::write(&dets, serde_json::to_vec(&eval.stats.results)?)?;
    // The first validation images with their detections above 0.3, drawn.
    let names = val.dataset().categories().to_vec();
    let image_ids = val.dataset().image_ids();
    for (index, &image_id) in image_ids.iter().enumerate().take(6) {
        let item = val.dataset().get(index)?;
        let rgb: Vec<u8> = item
            .image
            .as_slice()
            .chunks(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        let captions: Vec<(String, [f32; 4], u32)> = eval
            .stats
            .results
            .iter()
            .filter(|r| r.image_id == image_id && r.score >= 0.3)
            .map(|r| {
                let k = val
                    .dataset()
                    .category_ids()
                    .iter()
                    .position(|&c| c == r.category_id)
                    .unwrap_or(0);
                let [x, y, w, h] = r.bbox.map(|v| v as f32);
                (
                    format!("{} {:.2}", names[k], r.score),
                    [x, y, x + w, y + h],
                    k as u32,
                )
            })
            .collect();
        let boxes: Vec<LabelledBox> = captions
            .iter()
            .map(|(caption, bbox, label)| LabelledBox {
                bbox: *bbox,
                caption,
                label: *label,
            })
            .collect();
        let png = args.out.join(format!("val_{index}.png"));
        draw_boxes(&png, &rgb, [item.image.height(), item.image.width()], &boxes)?;
    }
    let named: Vec<String> = match task.score(&eval.stats) {
        Some(m) => m?.named().map(|(k, v)| format!("{k} {v:.3}")).take(3).collect(),
        None => Vec::new(),
    };
    println!(
        "validation: {} ({} detections written to {})",
        named.join(", "),
        eval.stats.results.len(),
        dets.display()
    );
    Ok(())
}
