//! kiln's crops, flips, padding and normalisation presets against torchvision 0.29.2 (and the mmcv-
//! style numpy Caffe preprocessing) on one lossless image: bit-exact, because every operation here
//! is exact arithmetic in the same order. Fixtures: `tests/fixtures/torchvision/`, written by
//! `scripts/make_torchvision_fixtures.py`.

use std::path::{Path, PathBuf};

use kiln_data::decode::imread;
use kiln_data::{Bgr, Chw, ColorOrder, Image};
use kiln_transforms::augment::{PadMode, Window, center_window, crop_resize, pad_crop};
use kiln_transforms::{Normalization, normalize_image, normalize_image_to};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torchvision")
}

fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    let case = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap();
    let shape = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let bytes = std::fs::read(dir().join(format!("{name}.f32"))).unwrap();
    let values = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (shape, values)
}

fn check<C: ColorOrder>(name: &str, got: Image<Chw, C, f32>) {
    let (shape, want) = expected(name);
    assert_eq!(got.chw_shape().to_vec(), shape, "{name}");
    let differing = got
        .as_slice()
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differing, 0, "{name}: {differing} values differ from torchvision");
}

fn input() -> Image<kiln_data::Hwc, Bgr> {
    imread(&dir().join("input.png")).unwrap()
}

#[test]
fn crops_flips_and_presets_are_bit_exact_with_torchvision() {
    let img = input();
    let (imagenet, cifar) = (Normalization::torch_imagenet_unit(), Normalization::cifar10());

    let win = center_window(11, 13, 7, 9).unwrap();
    check(
        "center_crop_7x9_imagenet",
        normalize_image(&crop_resize(&img, win, 7, 9, false).unwrap(), &imagenet).unwrap(),
    );

    let full = Window {
        top: 0,
        left: 0,
        height: 11,
        width: 13,
    };
    check(
        "hflip_cifar10",
        normalize_image(&crop_resize(&img, full, 11, 13, true).unwrap(), &cifar).unwrap(),
    );

    let win = Window {
        top: 3,
        left: 2,
        height: 6,
        width: 10,
    };
    check(
        "crop_3_2_6x10_imagenet",
        normalize_image(&crop_resize(&img, win, 6, 10, false).unwrap(), &imagenet).unwrap(),
    );

    let reflect = pad_crop(&img, 2, PadMode::Reflect, [1, 4], [8, 8]).unwrap();
    check(
        "pad2_reflect_crop_1_4_8x8_imagenet",
        normalize_image(&reflect, &imagenet).unwrap(),
    );

    let zero = pad_crop(&img, 2, PadMode::Zero, [0, 0], [8, 8]).unwrap();
    check(
        "pad2_zero_crop_0_0_8x8_cifar10",
        normalize_image(&zero, &cifar).unwrap(),
    );
}

#[test]
fn caffe_preset_is_bit_exact_with_mmcv_style_numpy() {
    check(
        "caffe_imagenet_bgr",
        normalize_image_to::<Bgr, _>(&input(), &Normalization::caffe_imagenet()).unwrap(),
    );
}

#[test]
fn hue_is_bit_exact_with_torchvision_on_pil_images() {
    use kiln_transforms::augment::adjust_hue;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("manifest.json")).unwrap()).unwrap();
    let img = imread(&dir().join("hue_input.png")).unwrap();
    let cases = manifest["hue"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let factor = case["factor"].as_f64().unwrap() as f32;
        let want_rgb = std::fs::read(dir().join(format!("{}.u8", case["name"].as_str().unwrap()))).unwrap();
        let got = adjust_hue(&img, factor).unwrap();
        let got_rgb: Vec<u8> = got
            .as_bytes()
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        let differing = got_rgb.iter().zip(&want_rgb).filter(|(a, b)| a != b).count();
        let worst = got_rgb
            .iter()
            .zip(&want_rgb)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        assert_eq!(
            differing, 0,
            "hue {factor}: {differing} values differ (max {worst})"
        );
    }
    assert!(adjust_hue(&img, 0.6).is_err());
}
