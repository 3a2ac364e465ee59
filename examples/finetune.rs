//! Fine-tuning, the whole transfer-learning recipe through the library:
//!
//! 1. import torchvision weights (`.pth` or `.safetensors`) into a kiln ResNet;
//! 2. check that the data pipeline normalizes as the weights were trained (the silent bug of
//!    transfer learning: ImageNet weights fed CIFAR statistics, or 0–255 input);
//! 3. replace the classifier head for the new classes (`model.fc = nn.Linear(64, 3)`);
//! 4. train the head alone with the backbone frozen (no gradients **and** BatchNorm in eval mode);
//! 5. unfreeze and train everything, the backbone at a tenth of the head's learning rate;
//! 6. save the weights with what they expect (`model.bpk` + `model.bpk.kiln.json`).
//!
//! Without arguments it starts from the committed CIFAR ResNet-20 fixture (random weights saved by
//! PyTorch with torchvision's names, `crates/kiln-models/tests/fixtures/cifar_resnet20`) and a
//! generated 3-class colour dataset, so it runs anywhere. With real weights:
//!
//! ```sh
//! cargo run --release -p kiln-suite --example finetune
//! cargo run --release -p kiln-suite --example finetune -- cifar-resnet20 weights.pth [IMAGE_FOLDER]
//! ```

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use kiln_data::ImageFolder;
use kiln_models::weights::save_weights;
use kiln_models::{FineTune, PretrainedSpec, ResNetConfig, ResNetKind};
use kiln_train::optim::LrGroup;
use kiln_train::{BatchSource, ClassificationSource, FitOutputs, TrainConfig, fit};
use kiln_transforms::compose::{Compose, Stage};
use kiln_transforms::{Normalization, NormalizationSpec};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/kiln-models/tests/fixtures/cifar_resnet20/weights.safetensors");
    let scratch = tempfile::tempdir()?;
    let (kind, weights, folder) = match args.as_slice() {
        [] => (ResNetKind::Cifar20, fixture, write_demo_folder(scratch.path())?),
        [arch, weights, rest @ ..] => {
            let kind = match arch.as_str() {
                "resnet18" => ResNetKind::ResNet18,
                "resnet34" => ResNetKind::ResNet34,
                "resnet50" => ResNetKind::ResNet50,
                "cifar-resnet20" => ResNetKind::Cifar20,
                "cifar-resnet56" => ResNetKind::Cifar56,
                other => anyhow::bail!("unknown architecture {other}"),
            };
            let folder = match rest {
                [folder] => PathBuf::from(folder),
                _ => write_demo_folder(scratch.path())?,
            };
            (kind, PathBuf::from(weights), folder)
        }
        _ => anyhow::bail!("usage: finetune [ARCH WEIGHTS [IMAGE_FOLDER]]"),
    };
    let imagenet = !matches!(kind, ResNetKind::Cifar20 | ResNetKind::Cifar56);
    let size = if imagenet { 224 } else { 32 };
    let device = Device::flex();

    // 1. The pretrained model, with its 1000 (or 10) class head.
    let pretrained_classes = if imagenet { 1000 } else { 10 };
    let model = ResNetConfig::new(kind)
        .with_num_classes(pretrained_classes)
        .init(&device)?;
    let model = kiln_models::import::load_torchvision_resnet(model, &weights)?;
    println!(
        "imported {} ({} parameters)",
        weights.display(),
        model.num_params()
    );

    // 2. What the weights expect, against what the pipeline does.
    let spec = PretrainedSpec {
        model: format!("{kind:?}"),
        architecture: None,
        normalization: if imagenet {
            NormalizationSpec::TorchImagenet
        } else {
            NormalizationSpec::Cifar10
        },
        input_chw: [3, size, size],
        num_classes: pretrained_classes,
        class_names: Vec::new(),
        eval: Vec::new(),
        jpeg_draft: false,
        detector: None,
    };
    let norm = spec.normalization.resolve()?;
    spec.check_normalization(&norm, false)?;
    if let Err(e) = spec.check_normalization(&Normalization::fashion_mnist(), false) {
        println!("a mismatched pipeline would be refused:\n  {e}");
    }

    // 3. The new task's data and head.
    let train_set = ImageFolder::new(folder.join("train"))?;
    let classes = train_set.classes().to_vec();
    let eval = Compose {
        stages: vec![Stage::Resize {
            height: size,
            width: size,
        }],
        normalization: spec.normalization.clone(),
        erasing: 0.0,
    };
    let train = ClassificationSource::new(train_set, norm.clone()).with_eval_transform(eval.clone())?;
    let val =
        ClassificationSource::new(ImageFolder::new(folder.join("val"))?, norm).with_eval_transform(eval)?;
    println!("{} training images, classes {classes:?}", train.len());
    let model = model.replace_head(classes.len(), &device)?;

    // 4. The head alone: backbone frozen.
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 8,
        lr: 0.05,
        ..TrainConfig::default()
    };
    let mut print = |r: &kiln_train::EpochRecord| {
        println!(
            "  epoch {}: train_loss={:.4} val_acc={:.3}",
            r.epoch,
            r.train_loss,
            r.metric("val_acc").unwrap_or(f64::NAN)
        )
    };
    println!("phase 1: head only (backbone frozen, BatchNorm in eval mode)");
    let r = fit(
        model.freeze_backbone(),
        &train,
        Some(&val),
        &cfg,
        &device,
        FitOutputs {
            on_epoch: Some(&mut print),
            ..Default::default()
        },
    )?;

    // 5. Everything, the backbone at 0.1× the head's learning rate.
    println!("phase 2: everything (backbone at 0.1x the learning rate)");
    let r = fit(
        r.model.valid().unfreeze_backbone(),
        &train,
        Some(&val),
        &TrainConfig {
            epochs: 1,
            lr: 0.01,
            ..cfg
        },
        &device,
        FitOutputs {
            on_epoch: Some(&mut print),
            lr_groups: vec![LrGroup {
                name: "backbone".into(),
                group: kiln_models::ResNet::backbone_group(),
                lr_scale: 0.1,
            }],
            ..Default::default()
        },
    )?;

    // 6. The weights and what they expect now: the same normalization, the new classes.
    let out = scratch.path().join("finetuned.bpk");
    let spec = PretrainedSpec {
        num_classes: classes.len(),
        class_names: classes,
        ..spec
    };
    save_weights(&r.model.valid(), &out, Some(&spec))?;
    println!(
        "saved {} and {}",
        out.display(),
        PretrainedSpec::sidecar_path(&out).display()
    );
    Ok(())
}

/// `train/` and `val/` of three colour classes, 36×36 PNGs with a little texture.
fn write_demo_folder(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("colours");
    for (split, n) in [("train", 16u32), ("val", 4)] {
        for (class, rgb) in [
            ("red", [200u8, 40, 40]),
            ("green", [40, 200, 40]),
            ("blue", [40, 40, 200]),
        ] {
            let folder = root.join(split).join(class);
            std::fs::create_dir_all(&folder)?;
            for i in 0..n {
                let img = image::RgbImage::from_fn(36, 36, |x, y| {
                    let t = ((x * 3 + y * 5 + i * 11) % 30) as u8;
                    image::Rgb(rgb.map(|c| c.saturating_add(t)))
                });
                img.save(folder.join(format!("{i}.png")))?;
            }
        }
    }
    Ok(root)
}
