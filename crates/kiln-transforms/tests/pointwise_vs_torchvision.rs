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

mod common;
use common::{bytes, to_hwc};

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
        "shear-x" => kiln_transforms::affine::shear_x(img, args["magnitude"].as_f64().unwrap()),
        "shear-y" => kiln_transforms::affine::shear_y(img, args["magnitude"].as_f64().unwrap()),
        "translate-x" => kiln_transforms::affine::translate_x(img, args["pixels"].as_i64().unwrap()),
        "translate-y" => kiln_transforms::affine::translate_y(img, args["pixels"].as_i64().unwrap()),
        "rotate" => kiln_transforms::affine::rotate(img, args["degrees"].as_f64().unwrap()),
        "equalize" => pointwise::equalize(img),
        other => panic!("unknown op {other}"),
    }
}

/// The fixture, read once per test.
fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pointwise/cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_operation_equals_torchvision_bit_for_bit() {
    let fixture = fixture();
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
    assert_eq!(checked, 99);
    assert_eq!(failures, 0, "values differ from torchvision's");
}

/// The policies' tables equal torchvision's `_AUGMENTATION_SPACE` values (float32 `linspace` and
/// posterize bins, as Python floats), and every operation applied through the policy at two
/// magnitudes of its table gives `_apply_image_or_video_transform`'s image.
#[test]
fn policy_tables_and_operations_equal_torchvisions() {
    use kiln_transforms::autoaugment::{
        AugOp, AutoAugmentPolicy, apply_op, auto_augment_space, rand_augment_space,
        trivial_augment_wide_space,
    };
    let fixture = fixture();
    let name = |op: AugOp| -> &'static str {
        match op {
            AugOp::Identity => "Identity",
            AugOp::ShearX => "ShearX",
            AugOp::ShearY => "ShearY",
            AugOp::TranslateX => "TranslateX",
            AugOp::TranslateY => "TranslateY",
            AugOp::Rotate => "Rotate",
            AugOp::Brightness => "Brightness",
            AugOp::Color => "Color",
            AugOp::Contrast => "Contrast",
            AugOp::Sharpness => "Sharpness",
            AugOp::Posterize => "Posterize",
            AugOp::Solarize => "Solarize",
            AugOp::AutoContrast => "AutoContrast",
            AugOp::Equalize => "Equalize",
            AugOp::Invert => "Invert",
        }
    };
    for (key, space) in [
        ("trivial-augment-wide", trivial_augment_wide_space(31)),
        ("rand-augment", rand_augment_space(31, 12, 17)),
        ("rand-augment-10", rand_augment_space(10, 9, 11)),
        ("auto-augment", auto_augment_space(12, 17)),
    ] {
        let want = fixture["tables"][key].as_object().unwrap();
        assert_eq!(space.len(), want.len(), "{key}");
        for (op, values, _) in &space {
            let expected = &want[name(*op)];
            match values {
                None => assert!(expected.is_null(), "{key} {op:?}"),
                Some(v) => {
                    let e: Vec<f64> = expected
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect();
                    assert_eq!(v, &e, "{key} {op:?}");
                }
            }
        }
    }
    // AutoAugment's learned sub-policies, step for step.
    for (key, policy) in [
        ("imagenet", AutoAugmentPolicy::Imagenet),
        ("cifar10", AutoAugmentPolicy::Cifar10),
        ("svhn", AutoAugmentPolicy::Svhn),
    ] {
        let want = fixture["auto_augment_policies"][key].as_array().unwrap();
        let got = policy.sub_policies();
        assert_eq!(got.len(), want.len(), "{key}");
        for (g, w) in got.iter().zip(want) {
            for (step, ws) in g.iter().zip(w.as_array().unwrap()) {
                assert_eq!(name(step.0), ws[0].as_str().unwrap(), "{key}");
                assert_eq!(step.1, ws[1].as_f64().unwrap(), "{key}");
                assert_eq!(step.2.map(|b| b as u64), ws[2].as_u64(), "{key}");
            }
        }
    }
    let image = &fixture["images"][0];
    let input = to_hwc(&bytes(&image["data"]), 3, 12 * 17);
    let img = Image::<Hwc, Bgr>::new(12, 17, input).unwrap();
    let all = [
        AugOp::Identity,
        AugOp::ShearX,
        AugOp::ShearY,
        AugOp::TranslateX,
        AugOp::TranslateY,
        AugOp::Rotate,
        AugOp::Brightness,
        AugOp::Color,
        AugOp::Contrast,
        AugOp::Sharpness,
        AugOp::Posterize,
        AugOp::Solarize,
        AugOp::AutoContrast,
        AugOp::Equalize,
        AugOp::Invert,
    ];
    let cases = fixture["policy_ops"].as_array().unwrap();
    assert_eq!(cases.len(), 26);
    for case in cases {
        let op = all
            .iter()
            .copied()
            .find(|o| name(*o) == case["op"].as_str().unwrap())
            .unwrap();
        let m = case["magnitude"].as_f64().unwrap();
        let got = apply_op(&img, op, m).into_vec();
        let want = to_hwc(&bytes(&case["out"]), 3, 12 * 17);
        let differing = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{op:?} at {m}: {differing} values differ");
    }
}
