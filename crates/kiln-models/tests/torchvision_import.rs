//! torchvision-layout weights imported into kiln's models (a CIFAR ResNet-20, MobileNetV3,
//! EfficientNet) give
//! PyTorch's eval logits, and kiln's safetensors export has torchvision's layout.
//!
//! Fixture (`tests/fixtures/cifar_resnet20/`, made by `scripts/make_resnet_fixture.py`): a
//! ResNet-20 with torchvision's module names, random weights and random BatchNorm running
//! statistics, saved as `.safetensors` and `.pth`, an input `[2, 3, 32, 32]` and PyTorch's
//! `model.eval()(x)` logits `[2, 10]`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_models::import::{load_torchvision, load_torchvision_resnet};
use kiln_models::zoo::{ModelConfig, ModelFn, ZooModel};
use kiln_models::{Classifier, MobileNetV3Config, MobileNetV3Kind, ResNetConfig, ResNetKind};

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
        jpeg_draft: false,
        detector: None,
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

/// A registered model built from `config`, loaded from the torchvision state dict `file`, run in
/// eval mode on the fixture input at `fixture`: its logits. Also returns the model's safetensors
/// export (at `export`), when asked.
struct ImportAndRun<'a> {
    fixture: &'a Path,
    file: &'a str,
    input: [usize; 4],
    export: Option<&'a Path>,
}

impl ModelFn for ImportAndRun<'_> {
    type Output = Vec<f32>;

    fn call<M: ZooModel>(self, model: M) -> Vec<f32> {
        let device = Device::flex();
        let model = load_torchvision(model, &self.fixture.join(self.file)).unwrap_or_else(|e| panic!("{e}"));
        if let Some(out) = self.export {
            kiln_models::weights::export_torchvision_safetensors(&model, out, None).unwrap();
        }
        let x = Tensor::<4>::from_data(
            TensorData::new(read_f32s(&self.fixture.join("input.f32")), self.input),
            &device,
        );
        model.logits(x).into_data().try_into_vec_as::<f32>().unwrap()
    }
}

fn read_f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// The registry config for a fixture's manifest (`arch`, `width_mult`).
fn config_of(manifest: &serde_json::Value) -> ModelConfig {
    let arch = manifest["arch"].as_str().unwrap();
    let mut config = ModelConfig::from_name(arch).unwrap_or_else(|e| panic!("{e}"));
    let (width, depth) = (manifest["width_mult"].as_f64(), manifest["depth_mult"].as_f64());
    match &mut config {
        ModelConfig::MobilenetV3(m) => m.width_mult = width.unwrap_or(1.0),
        ModelConfig::Efficientnet(e) => {
            e.width_mult = width.filter(|&w| w != 1.0 || depth.is_some());
            e.depth_mult = depth;
        }
        ModelConfig::Convnext(c) => {
            let four =
                |key: &str| -> Option<[usize; 4]> { serde_json::from_value(manifest[key].clone()).ok() };
            c.depths = four("depths");
            c.widths = four("widths");
        }
        ModelConfig::Vit(v) => {
            let get = |key: &str| manifest["vit"][key].as_u64().map(|n| n as usize);
            v.patch_size = get("patch_size");
            v.num_layers = get("num_layers");
            v.num_heads = get("num_heads");
            v.hidden_dim = get("hidden_dim");
            v.mlp_dim = get("mlp_dim");
        }
        _ => {}
    }
    config
}

fn manifest_of(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The reduced torchvision models in `tests/fixtures/` (random weights, wide random biases and
/// linear layers, BatchNorm statistics calibrated on random inputs; a `[2, 3, 64, 64]` input and
/// PyTorch's eval logits), made by `scripts/make_resnet_fixture.py`:
/// `--arch mobilenet_v3_small --width-mult 0.5 --num-classes 10 --size 64 --calibrate` and
/// `--arch efficientnet_b0 --width-mult 0.35 --depth-mult 0.5 --num-classes 10 --size 64 --calibrate`
/// and `--arch convnext_tiny --depths 1,1,2,1 --widths 16,32,48,64 --num-classes 10 --size 64`
/// (LayerNorm and layer scale drawn wide too: the layer scale starts at 1e-6) and
/// `--arch vit_b_16 --patch 8 --layers 2 --heads 4 --hidden 32 --mlp 48 --num-classes 10 --size 64`
/// (the attention's projections, class token and position embedding drawn wide as well).
const REDUCED: [(&str, &str); 4] = [
    (
        "mobilenet_v3_small_w050",
        "MobileNetV3-Small(3x64x64 -> 10 classes, width x0.5)",
    ),
    (
        "efficientnet_b0_w035_d050",
        "EfficientNet-B0(3x64x64 -> 10 classes, width x0.35, depth x0.5)",
    ),
    (
        "convnext_d1121_w16",
        "ConvNeXt-Tiny(3x64x64 -> 10 classes, depths [1, 1, 2, 1], widths [16, 32, 48, 64])",
    ),
    (
        "vit_p8_l2_h4_d32",
        "ViT-B/16(3x64x64 -> 10 classes, patch 8, 2 layers, 4 heads, width 32, MLP 48)",
    ),
];

#[test]
fn mobilenet_efficientnet_convnext_and_vit_import_from_pth_and_safetensors_and_export_back() {
    for (name, description) in REDUCED {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let manifest = manifest_of(&fixture);
        let config = config_of(&manifest);
        assert_eq!(config.describe([3, 64, 64], 10), description);
        let want = read_f32s(&fixture.join("logits.f32"));
        assert!(
            want.iter().any(|v| v.abs() > 0.1),
            "{name}: logits of a real size: {want:?}"
        );
        let out = tempfile::tempdir().unwrap();
        let exported = out.path().join("exported.safetensors");
        let device = Device::flex();
        for file in ["weights.safetensors", "weights.pth"] {
            let run = ImportAndRun {
                fixture: &fixture,
                file,
                input: [2, 3, 64, 64],
                export: Some(&exported),
            };
            let got = config.build_with([3, 64, 64], 10, &device, run).unwrap();
            let worst = max_abs_diff(&got, &want);
            println!("{name} {file}: max |kiln - PyTorch| = {worst:e}");
            assert!(worst < 1e-4, "{name} {file}: {worst}");
        }
        // The export has the state dict's names, dtypes and shapes (PyTorch loads it strictly:
        // scripts/check_export_in_torch.py) and imports back to the same logits.
        let (want_header, _) =
            kiln_models::weights::safetensors_header(&fixture.join("weights.safetensors")).unwrap();
        let (got_header, _) = kiln_models::weights::safetensors_header(&exported).unwrap();
        assert_eq!(got_header, want_header, "{name}");
        let again = ImportAndRun {
            fixture: out.path(),
            file: "exported.safetensors",
            input: [2, 3, 64, 64],
            export: None,
        };
        std::fs::copy(fixture.join("input.f32"), out.path().join("input.f32")).unwrap();
        let got = config.build_with([3, 64, 64], 10, &device, again).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4, "{name}");
    }
}

#[test]
fn a_mobilenet_of_another_variant_or_width_is_refused_naming_tensors() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mobilenet_v3_small_w050");
    let device = Device::flex();
    for wrong in [
        MobileNetV3Config::new(MobileNetV3Kind::Large).with_width_mult(0.5),
        MobileNetV3Config::new(MobileNetV3Kind::Small),
    ] {
        let model = wrong.init(&device).unwrap();
        let err = load_torchvision(model, &fixture.join("weights.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("weights.safetensors"), "{err}");
        assert!(err.contains("errors [") && err.contains("blocks."), "{err}");
        assert!(err.len() < 2000, "a short message, not every tensor: {err}");
    }
}

/// The full-size check: set `KILN_TORCHVISION_FIXTURE` to a folder written by
/// `python scripts/make_resnet_fixture.py --arch resnet18 --calibrate DIR` (or any registered
/// torchvision model: resnet34, resnet50, mobilenet_v3_small/large, efficientnet_b0..b3; with `--weights
/// FILE` to use real torchvision weights) and this test imports `weights.safetensors` and
/// `weights.pth` and compares the logits with PyTorch's. Skipped (with a message) when unset.
#[test]
fn full_torchvision_model_when_a_fixture_is_supplied() {
    let Some(fixture) = std::env::var_os("KILN_TORCHVISION_FIXTURE") else {
        eprintln!(
            "skipped: set KILN_TORCHVISION_FIXTURE to a folder from scripts/make_resnet_fixture.py --arch resnet18"
        );
        return;
    };
    let fixture = PathBuf::from(fixture);
    let manifest = manifest_of(&fixture);
    let config = config_of(&manifest);
    let stats = manifest["batchnorm"].as_str().unwrap_or("random").to_string();
    let input: Vec<usize> = serde_json::from_value(manifest["input"].clone()).unwrap();
    let classes = manifest["logits"][1].as_u64().unwrap() as usize;
    let device = Device::flex();
    for file in ["weights.safetensors", "weights.pth"] {
        let run = ImportAndRun {
            fixture: &fixture,
            file,
            input: [input[0], input[1], input[2], input[3]],
            export: None,
        };
        let got = config
            .build_with([input[1], input[2], input[3]], classes, &device, run)
            .unwrap();
        let want = read_f32s(&fixture.join("logits.f32"));
        let worst = max_abs_diff(&got, &want);
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        println!(
            "{} {file}: max |kiln - PyTorch| = {worst:e} (logits up to {scale}, BatchNorm {stats})",
            config.id()
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
