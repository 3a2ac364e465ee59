//! torchvision-layout weights imported into kiln's CIFAR ResNet-20 give PyTorch's eval logits.
//!
//! Fixture (`tests/fixtures/cifar_resnet20/`, made by `scripts/make_resnet_fixture.py`): a
//! ResNet-20 with torchvision's module names, random weights and random BatchNorm running
//! statistics, saved as `.safetensors` and `.pth`, an input `[2, 3, 32, 32]` and PyTorch's
//! `model.eval()(x)` logits `[2, 10]`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_models::import::load_torchvision_resnet;
use kiln_models::{Classifier, ResNetConfig, ResNetKind};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar_resnet20")
}

fn f32s(name: &str) -> Vec<f32> {
    std::fs::read(dir().join(name))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn logits_after_import(file: &str) -> Vec<f32> {
    let device = Device::flex();
    let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device).unwrap();
    let model = load_torchvision_resnet(model, &dir().join(file)).unwrap_or_else(|e| panic!("{e}"));
    let x = Tensor::<4>::from_data(TensorData::new(f32s("input.f32"), [2, 3, 32, 32]), &device);
    model.logits(x).into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn safetensors_and_pth_imports_match_pytorch_logits() {
    let want = f32s("logits.f32");
    for file in ["weights.safetensors", "weights.pth"] {
        let got = logits_after_import(file);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{file}: max |kiln - PyTorch| = {worst:e}");
        assert!(worst < 1e-4, "{file}: max |kiln - PyTorch| = {worst}");
    }
}

#[test]
fn the_wrong_architecture_is_refused_with_the_tensors_named() {
    let device = Device::flex();
    let model = ResNetConfig::new(ResNetKind::Cifar56).init(&device).unwrap();
    let err = load_torchvision_resnet(model, &dir().join("weights.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not in the file"), "{err}");
    assert!(err.contains("weights.safetensors"), "{err}");
}
