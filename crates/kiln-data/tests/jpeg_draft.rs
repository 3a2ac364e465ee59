//! Reduced-size JPEG decoding (`imread_draft`) against PIL's `Image.draft` (libjpeg-turbo's scaled
//! IDCT). Fixtures: `scripts/make_draft_fixtures.py` (real Fashion-MNIST items in a colour mosaic,
//! 4:2:0 and 4:4:4, grey, EXIF orientation 6; PIL's draft output at 1/2, 1/4 and 1/8).

use std::path::{Path, PathBuf};

use kiln_data::decode::{DraftSize, draft_scale, imread, imread_draft};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/draft")
}

/// Asks for `1/s` of the image, rounded down, as the fixture script asked PIL.
fn fraction(s: usize) -> DraftSize {
    DraftSize::new(move |[h, w]| Some([h / s, w / s]))
}

/// Mean and max absolute difference over every channel, kiln's BGR against PIL's RGB, and the mean
/// difference of the luma (0.299 R + 0.587 G + 0.114 B).
fn compare(name: &str, s: usize) -> (f64, u8, f64) {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("manifest.json")).unwrap()).unwrap();
    let hw = &manifest[format!("{name}.d{s}")];
    let (h, w) = (hw[0].as_u64().unwrap() as usize, hw[1].as_u64().unwrap() as usize);
    let pil = std::fs::read(dir().join(format!("{name}.d{s}.rgb"))).unwrap();
    let got = imread_draft(&dir().join(name), &fraction(s)).unwrap();
    assert_eq!(got.hwc_shape(), [h, w, 3], "{name} at 1/{s}: PIL's size");
    let (mut sum, mut max, mut luma) = (0u64, 0u8, 0f64);
    let y = |r: u8, g: u8, b: u8| 0.299 * f64::from(r) + 0.587 * f64::from(g) + 0.114 * f64::from(b);
    for (bgr, rgb) in got.as_bytes().chunks_exact(3).zip(pil.chunks_exact(3)) {
        for c in 0..3 {
            let d = bgr[2 - c].abs_diff(rgb[c]);
            sum += u64::from(d);
            max = max.max(d);
        }
        luma += (y(bgr[2], bgr[1], bgr[0]) - y(rgb[0], rgb[1], rgb[2])).abs();
    }
    (sum as f64 / pil.len() as f64, max, luma * 3.0 / pil.len() as f64)
}

#[test]
fn reduced_decodes_have_pils_sizes_and_stay_close_to_its_pixels() {
    // Bounds: the measured differences (printed; docs/data.md) with a little room. The scaled
    // IDCTs differ in rounding only (grey and 4:4:4: mean ≤ 1.06, luma ≤ 0.6 everywhere). On 4:2:0,
    // jpeg-decoder reconstructs chroma at half the reduced size and upsamples it, where libjpeg
    // transforms chroma blocks at twice the luma's reduced size: colour edges blur (this mosaic of
    // tinted items on a gradient is a hard case: mean 2.5 / 3.8 / 5.4, max 82).
    for (name, mean_bound, max_bound) in [
        ("mosaic_444.jpg", 1.2, 16),
        ("grey.jpg", 0.6, 12),
        ("mosaic_420.jpg", 6.0, 90),
        ("mosaic_420_exif6.jpg", 6.0, 90),
    ] {
        for s in [2, 4, 8] {
            let (mean, max, luma) = compare(name, s);
            println!(
                "{name} 1/{s}: mean {mean:.3}, max {max}, luma mean {luma:.3} grey levels from PIL's draft"
            );
            assert!(
                mean <= mean_bound && max <= max_bound,
                "{name} 1/{s}: mean {mean}, max {max}"
            );
            assert!(luma <= 0.7, "{name} 1/{s}: luma mean {luma}");
        }
    }
}

#[test]
fn the_reduction_is_pils_choice() {
    // PIL: scale = min(w // need_w, h // need_h), then the largest of 8, 4, 2, 1 not above it.
    assert_eq!(draft_scale([1536, 2048], [256, 256]), 4); // 1536 // 256 = 6
    assert_eq!(draft_scale([1536, 2048], [192, 192]), 8);
    assert_eq!(draft_scale([187, 251], [94, 126]), 1); // 187 // 94 = 1: no reduction
    assert_eq!(draft_scale([187, 251], [93, 125]), 2);
    assert_eq!(draft_scale([100, 100], [0, 0]), 8);
}

#[test]
fn a_large_jpeg_is_decoded_small_and_what_cannot_be_reduced_is_imread() {
    let large = dir().join("large.jpg"); // 2048 x 1536
    let need_224 = DraftSize::new(|_| Some([224, 224]));
    let img = imread_draft(&large, &need_224).unwrap();
    assert_eq!(img.hwc_shape(), [192 * 2, 256 * 2, 3], "1/4: 1536 // 224 = 6");
    // Flat colours survive the reduction: the centre of the blue rectangle is (B, G, R) ≈ (220, 90, 30).
    let px = &img.as_bytes()[(187 * 512 + 250) * 3..][..3];
    assert!(
        px.iter().zip([220u8, 90, 30]).all(|(a, b)| a.abs_diff(b) <= 3),
        "{px:?}"
    );

    let full = imread(&large).unwrap();
    for draft in [DraftSize::new(|_| None), DraftSize::new(|[h, w]| Some([h, w]))] {
        assert_eq!(imread_draft(&large, &draft).unwrap(), full, "{draft:?}");
    }
    // Not a JPEG: read as imread reads it.
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencv");
    let some_png = std::fs::read_dir(&png)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .unwrap();
    assert_eq!(
        imread_draft(&some_png, &fraction(8)).unwrap(),
        imread(&some_png).unwrap()
    );
}

#[test]
fn the_rule_sees_the_displayed_orientation() {
    // mosaic_420_exif6 is stored 251 wide x 187 high and shown rotated: 187 wide x 251 high.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let draft = DraftSize::new(move |hw| {
        log.lock().unwrap().push(hw);
        Some([hw[0] / 2, hw[1] / 2])
    });
    let img = imread_draft(&dir().join("mosaic_420_exif6.jpg"), &draft).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![[251, 187]]);
    assert_eq!(img.hwc_shape(), [126, 94, 3]);
}

#[test]
fn a_file_the_reduced_decoder_refuses_is_left_to_the_full_decoder() {
    // A third of mosaic_420.jpg: jpeg-decoder stops at the missing data; zune-jpeg (imread), like
    // cv2.imread, decodes what is there. The draft path gives imread's answer, whatever it is.
    let bytes = std::fs::read(dir().join("mosaic_420.jpg")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cut = tmp.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let drafted = imread_draft(&cut, &fraction(4)).map_err(|e| e.to_string());
    let full = imread(&cut).map_err(|e| e.to_string());
    assert_eq!(drafted, full);
    // Not a JPEG inside: the full decoder's error, naming the file.
    let junk = tmp.path().join("junk.jpg");
    std::fs::write(&junk, [0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3]).unwrap();
    let err = imread_draft(&junk, &fraction(4))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.jpg"), "{err}");
}

#[test]
fn the_pixel_budget_applies_to_the_full_size_before_a_reduced_decode() {
    // mosaic_420.jpg with its frame header (SOF0) claiming 20000 x 20000 pixels: over PIL's bomb
    // limit, refused from the header although 1/8 of it would be small.
    let mut bytes = std::fs::read(dir().join("mosaic_420.jpg")).unwrap();
    let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x4E, 0x20, 0x4E, 0x20]);
    let tmp = tempfile::tempdir().unwrap();
    let bomb = tmp.path().join("bomb.jpg");
    std::fs::write(&bomb, &bytes).unwrap();
    let err = imread_draft(&bomb, &fraction(8)).map(|_| ()).unwrap_err();
    assert!(matches!(err, kiln_data::DataError::TooManyPixels { .. }), "{err}");
    assert!(err.to_string().contains("bomb.jpg"), "{err}");
}
