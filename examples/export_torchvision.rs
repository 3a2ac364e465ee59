//! Convert torchvision ResNet weights: import a `.pth` or `.safetensors` state dict into kiln,
//! check it, and write (a) a kiln checkpoint (`.bpk` + `.kiln.json` spec) and (b) a torchvision-layout
//! `.safetensors` with the spec in its metadata, which PyTorch loads back with
//! `model.load_state_dict(safetensors.torch.load_file(path))`.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example export_torchvision -- \
//!     resnet18 resnet18.pth OUT_DIR [--classes 1000] [--normalization torch-imagenet]
//! ```
//! The architectures are `resnet18`, `resnet34`, `resnet50`, `cifar-resnet20`, `cifar-resnet56`
//! and `cifar-resnet18`. `scripts/check_export_in_torch.py` verifies an export on the PyTorch side.

use std::path::PathBuf;

use anyhow::{Context, bail};
use burn::prelude::*;
use kiln_models::import::load_torchvision_resnet;
use kiln_models::weights::{export_torchvision_safetensors, save_weights};
use kiln_models::{PretrainedSpec, ResNetConfig, ResNetKind};
use kiln_transforms::NormalizationSpec;

fn main() -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let mut classes = None;
    let mut normalization = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--classes" => classes = Some(args.next().context("--classes needs a value")?.parse::<usize>()?),
            "--normalization" => {
                let v = args.next().context("--normalization needs a value")?;
                normalization = Some(v.parse::<NormalizationSpec>().map_err(anyhow::Error::msg)?);
            }
            "-h" | "--help" => {
                println!("export_torchvision ARCH WEIGHTS OUT_DIR [--classes N] [--normalization PRESET]");
                return Ok(());
            }
            _ => positional.push(a),
        }
    }
    let [arch, weights, out] = positional.as_slice() else {
        bail!("usage: export_torchvision ARCH WEIGHTS OUT_DIR [--classes N] [--normalization PRESET]");
    };
    let (kind, default_classes, input, default_norm) = match arch.as_str() {
        "resnet18" => (
            ResNetKind::ResNet18,
            1000,
            [3, 224, 224],
            NormalizationSpec::TorchImagenet,
        ),
        "resnet34" => (
            ResNetKind::ResNet34,
            1000,
            [3, 224, 224],
            NormalizationSpec::TorchImagenet,
        ),
        "resnet50" => (
            ResNetKind::ResNet50,
            1000,
            [3, 224, 224],
            NormalizationSpec::TorchImagenet,
        ),
        "cifar-resnet20" => (ResNetKind::Cifar20, 10, [3, 32, 32], NormalizationSpec::Cifar10),
        "cifar-resnet56" => (ResNetKind::Cifar56, 10, [3, 32, 32], NormalizationSpec::Cifar10),
        "cifar-resnet18" => (ResNetKind::Cifar18, 10, [3, 32, 32], NormalizationSpec::Cifar10),
        other => bail!(
            "unknown architecture `{other}`: expected resnet18, resnet34, resnet50, cifar-resnet20, cifar-resnet56 or cifar-resnet18"
        ),
    };
    let num_classes = classes.unwrap_or(default_classes);
    let device = Device::flex();
    let model = ResNetConfig::new(kind)
        .with_num_classes(num_classes)
        .init(&device)?;
    let model = load_torchvision_resnet(model, &PathBuf::from(weights))?;
    let spec = PretrainedSpec {
        model: arch.clone(),
        architecture: kiln_models::ModelConfig::from_name(arch).ok(),
        eval: Vec::new(),
        normalization: normalization.unwrap_or(default_norm),
        input_chw: input,
        num_classes,
        class_names: Vec::new(),
        jpeg_draft: false,
        detector: None,
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let bpk = save_weights(&model, &out.join("model.bpk"), Some(&spec))?;
    let st = export_torchvision_safetensors(&model, &out.join("model.safetensors"), Some(&spec))?;
    println!("{}", model.summary(input));
    println!("wrote {} (+ .kiln.json) and {}", bpk.display(), st.display());
    Ok(())
}
