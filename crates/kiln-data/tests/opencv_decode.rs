//! kiln's decoder against what OpenCV 5.0.0 read from the same files.
//!
//! The fixtures (`tests/fixtures/opencv/`) were written by `scripts/make_opencv_fixtures.py`:
//! each `<file>.<mode>.raw` is `cv2.imread(file, cv2.IMREAD_COLOR | IMREAD_GRAYSCALE)` as raw HWC
//! bytes. Lossless formats must match bit for bit; JPEG (zune-jpeg vs libjpeg-turbo) is bounded by
//! the decoder difference we measured, which this test prints.

use std::path::{Path, PathBuf};

use kiln_data::decode::{imread, imread_gray};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencv")
}

struct Case {
    file: String,
    mode: String,
    shape: Vec<usize>,
    expected: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let dir = fixtures();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["opencv"], "5.0.0");
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            file: c["file"].as_str().unwrap().to_string(),
            mode: c["mode"].as_str().unwrap().to_string(),
            shape: c["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect(),
            expected: std::fs::read(dir.join(c["expected"].as_str().unwrap())).unwrap(),
        })
        .collect()
}

fn decode(case: &Case) -> (Vec<usize>, Vec<u8>) {
    let path = fixtures().join(&case.file);
    if case.mode == "color" {
        let img = imread(&path).unwrap_or_else(|e| panic!("{e}"));
        (img.hwc_shape().to_vec(), img.into_bytes())
    } else {
        let img = imread_gray(&path).unwrap_or_else(|e| panic!("{e}"));
        (img.hwc_shape().to_vec(), img.into_bytes())
    }
}

#[test]
fn lossless_formats_are_bit_exact_with_opencv() {
    let mut checked = 0;
    for case in cases().iter().filter(|c| !c.file.ends_with(".jpg")) {
        let (shape, got) = decode(case);
        assert_eq!(shape, case.shape, "{} {}", case.file, case.mode);
        let diffs = got.iter().zip(&case.expected).filter(|(a, b)| a != b).count();
        assert_eq!(
            diffs, 0,
            "{} ({}): {diffs} bytes differ from OpenCV",
            case.file, case.mode
        );
        checked += 1;
    }
    // 17 lossless files × 2 modes.
    assert_eq!(checked, 34);
}

#[test]
fn jpeg_is_within_the_decoder_difference_of_opencv() {
    let mut worst = 0u8;
    let mut checked = 0;
    for case in cases().iter().filter(|c| c.file.ends_with(".jpg")) {
        let (shape, got) = decode(case);
        // Shapes (including EXIF rotation) must agree exactly.
        assert_eq!(shape, case.shape, "{} {}", case.file, case.mode);
        let max = got
            .iter()
            .zip(&case.expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        let mean = got
            .iter()
            .zip(&case.expected)
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / got.len() as f64;
        println!(
            "{:>24} {:>5}: max |kiln - OpenCV| = {max}, mean = {mean:.4}",
            case.file, case.mode
        );
        // Bounds from the measurement printed above (see docs/data.md): two IDCT/upsampling
        // implementations, not a layout or colour error (a BGR/RGB swap or a wrong rotation gives
        // a mean difference in the tens).
        assert!(max <= 4, "{} ({}): max difference {max}", case.file, case.mode);
        assert!(
            mean <= 0.6,
            "{} ({}): mean difference {mean}",
            case.file,
            case.mode
        );
        worst = worst.max(max);
        checked += 1;
    }
    assert_eq!(checked, 24);
    println!("worst JPEG pixel difference: {worst}");
}
