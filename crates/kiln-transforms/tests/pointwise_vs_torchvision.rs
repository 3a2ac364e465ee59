//! The automatic augmentations' per-channel operations against
//! `torchvision.transforms.v2.functional` on uint8 tensors: bit-exact.
//!
//! Fixture `tests/fixtures/pointwise/cases.json`, made by `scripts/make_pointwise_fixtures.py`
//! (torch 2.15, torchvision 0.29.2): a random RGB image, a low-contrast one with a flat channel and
//! a skewed grey one, through invert, posterize (1, 3, 7 bits), solarize (0, 100.5, 255),
//! adjust_brightness (0, 0.35, 1.7), autocontrast and equalize.

use kiln_data::{Bgr, ColorOrder, Gray, Hwc, Image};
use kiln_transforms::pointwise;
use serde_json::Value;

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

/// CHW (RGB or grey) → HWC in kiln's order (BGR or grey), and back.
fn to_hwc(chw: &[u8], c: usize, hw: usize) -> Vec<u8> {
    (0..hw)
        .flat_map(|p| (0..c).rev().map(move |ch| chw[ch * hw + p]))
        .collect()
}

fn run<C: ColorOrder>(img: &Image<Hwc, C>, op: &str, args: &Value) -> Image<Hwc, C> {
    match op {
        "invert" => pointwise::invert(img),
        "posterize" => pointwise::posterize(img, args["bits"].as_u64().unwrap() as u8),
        "solarize" => pointwise::solarize(img, args["threshold"].as_f64().unwrap()),
        "brightness" => pointwise::brightness(img, args["factor"].as_f64().unwrap() as f32),
        "contrast" => pointwise::contrast(img, args["factor"].as_f64().unwrap()),
        "color" => pointwise::color(img, args["factor"].as_f64().unwrap()),
        "sharpness" => pointwise::sharpness(img, args["factor"].as_f64().unwrap()),
        "autocontrast" => pointwise::autocontrast(img),
        "equalize" => pointwise::equalize(img),
        other => panic!("unknown op {other}"),
    }
}

#[test]
fn every_operation_equals_torchvision_bit_for_bit() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/pointwise/cases.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    let mut failures = 0;
    for image in fixture["images"].as_array().unwrap() {
        let shape: Vec<usize> = image["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let (c, h, w) = (shape[0], shape[1], shape[2]);
        let input = to_hwc(&bytes(&image["data"]), c, h * w);
        for case in image["outs"].as_array().unwrap() {
            let op = case["op"].as_str().unwrap();
            let want = to_hwc(&bytes(&case["out"]), c, h * w);
            let got = match c {
                3 => run(
                    &Image::<Hwc, Bgr>::new(h, w, input.clone()).unwrap(),
                    op,
                    &case["args"],
                )
                .into_vec(),
                _ => run(
                    &Image::<Hwc, Gray>::new(h, w, input.clone()).unwrap(),
                    op,
                    &case["args"],
                )
                .into_vec(),
            };
            let differing: Vec<(u8, u8)> = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (*a, *b))
                .collect();
            if !differing.is_empty() {
                eprintln!(
                    "{} {op} {}: {} of {} values differ (kiln, torchvision): {:?}",
                    image["name"],
                    case["args"],
                    differing.len(),
                    got.len(),
                    &differing[..differing.len().min(6)]
                );
            }
            failures += differing.len();
            checked += 1;
        }
    }
    assert_eq!(checked, 63);
    assert_eq!(failures, 0, "values differ from torchvision's");
}
