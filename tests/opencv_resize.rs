//! kiln's bilinear resize against `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` (OpenCV 5.0.0),
//! on the lossless fixtures of `crates/kiln-data/tests/fixtures/opencv` (made by
//! `scripts/make_opencv_fixtures.py`): shrinking, enlarging and mixed, colour and grey.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_data::decode::{imread, imread_gray};
use kiln_transforms::resize_bilinear;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/kiln-data/tests/fixtures/opencv")
}

#[test]
fn resize_matches_opencv_inter_linear() -> Result<()> {
    let dir = fixtures();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let cases = manifest["resize"].as_array().context("no resize cases")?;
    assert_eq!(cases.len(), 6);
    for case in cases {
        let file = dir.join(case["file"].as_str().context("file")?);
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        let expected = std::fs::read(dir.join(case["expected"].as_str().context("expected")?))?;
        let got = if case["mode"] == "color" {
            resize_bilinear(&imread(&file)?, shape[0], shape[1])?.into_bytes()
        } else {
            resize_bilinear(&imread_gray(&file)?, shape[0], shape[1])?.into_bytes()
        };
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        println!(
            "{} {:?}: {differing} of {} values differ, max {worst}",
            case["file"],
            shape,
            got.len()
        );
        assert_eq!(got.len(), expected.len());
        // OpenCV's SIMD vertical pass computes (((r0 >> 4)·b0 >> 16) + ((r1 >> 4)·b1 >> 16) + 2) >> 2,
        // its scalar tail (r0·b0 + r1·b1 + 2^21) >> 22, which kiln uses everywhere. Simulating the
        // SIMD formula in numpy reproduces 890 of 899 values of the 29x31 grey case (the other 9 are
        // the scalar tail), so OpenCV's own output depends on the SIMD width. Measured here: at most
        // 1 apart, on at most 14% of values (0 when only the width changes).
        assert!(worst <= 1, "{}: max difference {worst}", case["expected"]);
        assert!(
            differing * 4 <= got.len(),
            "{}: {differing} values differ",
            case["expected"]
        );
    }
    Ok(())
}

#[test]
fn area_matches_opencv_inter_area() -> Result<()> {
    use kiln_transforms::resize_area;
    let dir = fixtures();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    let cases = manifest["area"].as_array().context("no area cases")?;
    assert_eq!(cases.len(), 12);
    for case in cases {
        let file = dir.join(case["file"].as_str().context("file")?);
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .context("shape")?
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        let expected = std::fs::read(dir.join(case["expected"].as_str().context("expected")?))?;
        let got = if case["mode"] == "color" {
            resize_area(&imread(&file)?, shape[0], shape[1])?.into_bytes()
        } else {
            resize_area(&imread_gray(&file)?, shape[0], shape[1])?.into_bytes()
        };
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        println!(
            "area {} {:?}: {differing} of {} values differ, max {worst}",
            case["file"],
            shape,
            got.len()
        );
        assert_eq!(got.len(), expected.len());
        assert_eq!(
            differing, 0,
            "{}: {differing} values differ (max {worst})",
            case["expected"]
        );
    }
    Ok(())
}
