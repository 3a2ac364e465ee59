//! What the torchvision fixture tests share: reading their JSON values and their CHW images.

use serde_json::Value;

/// A JSON list of integers as bytes.
pub fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

/// CHW (RGB or grey) → HWC in kiln's order (BGR or grey).
pub fn to_hwc(chw: &[u8], c: usize, hw: usize) -> Vec<u8> {
    (0..hw)
        .flat_map(|p| (0..c).rev().map(move |ch| chw[ch * hw + p]))
        .collect()
}
