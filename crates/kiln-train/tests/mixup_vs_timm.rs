//! kiln's Mixup/CutMix against timm's `Mixup`: given the same draws (λ per batch, pair or image,
//! and each CutMix box), the same mixed batch and soft targets.
//!
//! Fixture `tests/fixtures/mixup/cases.json`, made by `scripts/make_mixup_fixture.py` (torch 2.15,
//! timm 1.0.31): a 6×2×5×7 batch with labels over 4 classes; Mixup λ 0.3 on the batch; CutMix on
//! the batch with label smoothing 0.1; `elem` mode mixing Mixup, CutMix and an unmixed image;
//! `pair` mode with a CutMix pair, a Mixup pair and an unmixed pair. timm's random draws are pinned
//! (its parameter functions replaced, numpy seeded) and each box and corrected λ recorded by
//! replaying them through `cutmix_bbox_and_lam`.

use kiln_train::mixup::Mix;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn mixed_batches_and_soft_targets_equal_timms() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/mixup/cases.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let shape: Vec<usize> = fixture["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let classes = fixture["classes"].as_u64().unwrap() as usize;
    let labels: Vec<u32> = fixture["target"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let x = floats(&fixture["x"]);
    let mut cut_pixels = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let each: Vec<(f64, Option<[usize; 4]>)> = case["each"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let b = e[1].as_array().map(|b| {
                    let v: Vec<usize> = b.iter().map(|v| v.as_u64().unwrap() as usize).collect();
                    [v[0], v[1], v[2], v[3]]
                });
                (e[0].as_f64().unwrap(), b)
            })
            .collect();
        cut_pixels += each
            .iter()
            .filter_map(|(_, b)| b.map(|[y0, y1, x0, x1]| (y1 - y0) * (x1 - x0)))
            .sum::<usize>();
        let mix = Mix { each };
        let mut data = x.clone();
        mix.apply(&mut data, shape);
        let want = floats(&case["x"]);
        let worst = data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "{}: images differ by {worst}", case["case"]);
        let smoothing = case["case"]["smoothing"].as_f64().unwrap();
        let targets = mix.targets(&labels, classes, smoothing);
        let want = floats(&case["targets"]);
        let worst = targets
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "{}: targets differ by {worst}", case["case"]);
        // Rows are distributions.
        for row in targets.chunks(classes) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
    assert!(cut_pixels > 0, "the fixture exercises CutMix boxes");
}
