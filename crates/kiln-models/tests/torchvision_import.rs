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

#[test]
fn safetensors_export_has_torchvisions_layout_and_reimports_to_the_same_logits() {
    use kiln_models::PretrainedSpec;
    use kiln_models::weights::{export_torchvision_safetensors, safetensors_header};
    use kiln_transforms::NormalizationSpec;

    let device = Device::flex();
    let model = ResNetConfig::new(ResNetKind::Cifar20).init(&device).unwrap();
    let model = load_torchvision_resnet(model, &dir().join("weights.safetensors")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("exported.safetensors");
    let spec = PretrainedSpec {
        model: "cifar-resnet20".into(),
        architecture: None,
        eval: vec![],
        normalization: NormalizationSpec::Cifar10,
        input_chw: [3, 32, 32],
        num_classes: 10,
        class_names: (0..10).map(|i| format!("class {i}")).collect(),
    };
    export_torchvision_safetensors(&model, &path, Some(&spec)).unwrap();

    // The same tensor names, dtypes and shapes as the state dict PyTorch wrote (so
    // `load_state_dict(strict=True)` accepts it; num_batches_tracked is filled in by PyTorch).
    let (want, _) = safetensors_header(&dir().join("weights.safetensors")).unwrap();
    let (got, metadata) = safetensors_header(&path).unwrap();
    assert_eq!(got.len(), want.len(), "{:?}", got.keys().collect::<Vec<_>>());
    for (name, (dtype, shape)) in &want {
        assert_eq!(got.get(name), Some(&(dtype.clone(), shape.clone())), "{name}");
    }
    assert_eq!(
        got["fc.weight"].1,
        vec![10, 64],
        "linear weights back in PyTorch's [out, in]"
    );
    assert_eq!(metadata.get("format").map(String::as_str), Some("pt"));
    assert_eq!(PretrainedSpec::from_safetensors(&path).unwrap(), Some(spec));
    assert_eq!(
        PretrainedSpec::from_safetensors(&dir().join("weights.safetensors")).unwrap(),
        None
    );

    // Values: importing the export gives PyTorch's logits again.
    let again = ResNetConfig::new(ResNetKind::Cifar20).init(&device).unwrap();
    let again = load_torchvision_resnet(again, &path).unwrap();
    let x = Tensor::<4>::from_data(TensorData::new(f32s("input.f32"), [2, 3, 32, 32]), &device);
    let got = again.logits(x).into_data().try_into_vec_as::<f32>().unwrap();
    let worst = got
        .iter()
        .zip(&f32s("logits.f32"))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "{worst}");
}

/// The full-size check: set `KILN_TORCHVISION_FIXTURE` to a folder written by
/// `python scripts/make_resnet_fixture.py --arch resnet18 --calibrate DIR` (or resnet34/resnet50;
/// with `--weights FILE` to use real torchvision weights) and this test imports `weights.safetensors`
/// and `weights.pth` and compares the logits with PyTorch's. Skipped (with a message) when unset.
#[test]
fn full_torchvision_resnet_when_a_fixture_is_supplied() {
    let Some(fixture) = std::env::var_os("KILN_TORCHVISION_FIXTURE") else {
        eprintln!(
            "skipped: set KILN_TORCHVISION_FIXTURE to a folder from scripts/make_resnet_fixture.py --arch resnet18"
        );
        return;
    };
    let fixture = PathBuf::from(fixture);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).unwrap()).unwrap();
    let kind = match manifest["arch"].as_str().unwrap() {
        "resnet18" => ResNetKind::ResNet18,
        "resnet34" => ResNetKind::ResNet34,
        "resnet50" => ResNetKind::ResNet50,
        other => panic!("unknown arch {other}"),
    };
    let stats = manifest["batchnorm"].as_str().unwrap_or("random").to_string();
    let input: Vec<usize> = serde_json::from_value(manifest["input"].clone()).unwrap();
    let classes = manifest["logits"][1].as_u64().unwrap() as usize;
    let read = |name: &str| -> Vec<f32> {
        std::fs::read(fixture.join(name))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let device = Device::flex();
    for file in ["weights.safetensors", "weights.pth"] {
        let model = ResNetConfig::new(kind)
            .with_num_classes(classes)
            .init(&device)
            .unwrap();
        let model = load_torchvision_resnet(model, &fixture.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let x = Tensor::<4>::from_data(
            TensorData::new(read("input.f32"), [input[0], input[1], input[2], input[3]]),
            &device,
        );
        let got = model.logits(x).into_data().try_into_vec_as::<f32>().unwrap();
        let want = read("logits.f32");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        println!(
            "{kind:?} {file}: max |kiln - PyTorch| = {worst:e} (logits up to {scale}, BatchNorm {stats})"
        );
        if stats == "random" {
            // Arbitrary BatchNorm statistics compound through 34-50 layers into logits in the
            // hundreds, where float32 summation order alone moves them by ~1e-6 relative.
            assert!(worst / scale < 2e-6, "{file}: {worst} at scale {scale}");
        } else {
            // Calibrated (`--calibrate`) or real weights: logits of a real classifier's size,
            // and the bound, 1e-4 absolute.
            assert!(worst < 1e-4, "{file}: {worst} at scale {scale}");
        }
    }
}
