//! The FCOS fixture's weights (`scripts/make_fcos_fixture.py`): every tensor a formula of its
//! name, so the fixture stores names and shapes only and each side computes the values. Shared by
//! the model test and the CLI's import test (`#[path]`-included).
#![allow(dead_code)]

use std::path::Path;

fn fnv1a32(name: &str) -> u64 {
    let mut h: u32 = 0x811C_9DC5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    u64::from(h)
}

pub fn unit(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let h = fnv1a32(name);
    (0..n as u64).map(move |i| ((i * 2_654_435_761 + h) % (1 << 32)) as f64 / 4_294_967_296.0)
}

/// The fixture script's `formula`.
pub fn formula(name: &str, shape: &[usize]) -> Vec<f32> {
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
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
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

/// The fixture's `params` (names and shapes) as a `.safetensors` state dict at `path`.
pub fn write_weights(fixture: &serde_json::Value, path: &Path) {
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
    write_safetensors(path, &tensors);
}
