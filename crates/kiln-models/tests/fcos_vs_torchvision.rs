//! `kiln_models::fcos::Fcos` imported from a torchvision `FCOS` state dict gives torchvision's
//! head outputs (class logits, box distances, centre-ness at every location of P3–P7).
//!
//! The fixture (`scripts/make_fcos_fixture.py`, torchvision 0.29.2) holds no weights: every tensor
//! of the ResNet-18 FPN FCOS state dict is set by a formula both sides compute from its name, so
//! this test writes the same state dict as a `.safetensors` file and imports it the way `kiln
//! import` does — the name mapping, shapes and the GroupNorm/BatchNorm renaming are all exercised.

use std::path::Path;

use burn::prelude::*;
use kiln_models::fcos::FcosConfig;
use kiln_models::resnet::ResNetKind;
use serde_json::Value;

fn fnv1a32(name: &str) -> u64 {
    let mut h: u32 = 0x811C_9DC5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    u64::from(h)
}

fn unit(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let h = fnv1a32(name);
    (0..n as u64).map(move |i| ((i * 2_654_435_761 + h) % (1 << 32)) as f64 / 4_294_967_296.0)
}

/// The fixture script's `formula`.
fn formula(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    unit(name, n)
        .map(|u| {
            let v = if name.ends_with("running_var") {
                0.5 + u
            } else if name.ends_with("running_mean") {
                0.2 * (2.0 * u - 1.0)
            } else if shape.len() == 1 && name.ends_with("weight") {
                1.0 + 0.2 * (2.0 * u - 1.0)
            } else if shape.len() == 1 {
                0.1 * (2.0 * u - 1.0)
            } else {
                (2.0 * u - 1.0) * (3.0 / (n / shape[0]) as f64).sqrt()
            };
            v as f32
        })
        .collect()
}

/// A `.safetensors` file of f32 tensors: an 8-byte header length, the JSON header, the data.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend(json);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn values(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn imported_torchvision_fcos_gives_torchvisions_head_outputs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fcos/cases.json");
    let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = fixture["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap().to_string();
            let shape: Vec<usize> = p["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let v = formula(&name, &shape);
            (name, shape, v)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("fcos.safetensors");
    write_safetensors(&weights, &tensors);

    let device = Device::flex();
    let model = FcosConfig::new(ResNetKind::ResNet18, 3).init(&device).unwrap();
    let model = kiln_models::import::load_torchvision_fcos(model, &weights).unwrap();
    let input: Vec<f32> = unit("input", 2 * 3 * 64 * 96)
        .map(|u| (2.0 * u - 1.0) as f32)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(input, [2, 3, 64, 96]), &device);
    let out = model.forward(x);
    let sizes: Vec<[usize; 2]> = fixture["level_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| [s[0].as_u64().unwrap() as usize, s[1].as_u64().unwrap() as usize])
        .collect();
    assert_eq!(out.level_sizes, sizes);
    for (name, got) in [
        ("cls_logits", out.cls_logits),
        ("bbox_regression", out.bbox_regression),
        ("bbox_ctrness", out.bbox_ctrness),
    ] {
        let want = values(&fixture[name]);
        let shape: Vec<usize> = fixture["shapes"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.dims().to_vec(), shape, "{name}");
        let got: Vec<f32> = got.into_data().try_to_vec::<f32>().unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{name}: max |diff| {worst:e} (values up to {scale})");
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{name}: max |diff| {worst} over values up to {scale}"
        );
    }

    // A state dict of another class count does not fit, and the error says which tensors.
    let model = FcosConfig::new(ResNetKind::ResNet18, 5).init(&device).unwrap();
    let msg = kiln_models::import::load_torchvision_fcos(model, &weights)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("fcos.safetensors"), "{msg}");
}
