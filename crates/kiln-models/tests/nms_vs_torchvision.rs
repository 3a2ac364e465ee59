//! `kiln_models::boxes::{nms, batched_nms}` keep the indices torchvision 0.29.2 keeps on CPU, in
//! the same order, on seeded crowded boxes with score ties, duplicates and zero-area boxes, for
//! both of batched_nms's strategies (≤ 1000 boxes and more; above 1000 torchvision orders tied
//! scores with an unstable sort, so there the kept set and the score order are compared). Fixture: `scripts/make_nms_fixtures.py`.

use kiln_models::boxes::{ScoredBox, batched_nms, nms};
use serde_json::Value;

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn kept_indices_equal_torchvisions() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nms/cases.json");
    let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    let mut sizes = Vec::new();
    for case in cases {
        let steps = numbers(&case["score_steps"]);
        let labels = numbers(&case["labels"]);
        let boxes: Vec<ScoredBox> = case["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .zip(steps.iter().zip(&labels))
            .map(|(b, (&k, &label))| {
                let c = numbers(b);
                ScoredBox {
                    bbox: [c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32],
                    score: (k * 0.05) as f32,
                    label: label as u32,
                }
            })
            .collect();
        let threshold = case["iou_threshold"].as_f64().unwrap();
        let as_usize = |v: &Value| numbers(v).into_iter().map(|x| x as usize).collect::<Vec<_>>();
        let want = as_usize(&case["nms"]);
        assert_eq!(nms(&boxes, threshold), want, "nms, {} boxes", boxes.len());
        let want = as_usize(&case["batched_nms"]);
        let got = batched_nms(&boxes, threshold);
        if boxes.len() <= 1000 {
            assert_eq!(got, want, "batched_nms, {} boxes", boxes.len());
        } else {
            // Above 1000 boxes torchvision orders the kept boxes with torch's unstable sort: the
            // same boxes and the same score sequence, ties in an order of its own.
            let scores = |keep: &[usize]| keep.iter().map(|&i| boxes[i].score).collect::<Vec<_>>();
            assert_eq!(
                scores(&got),
                scores(&want),
                "batched_nms score order, {} boxes",
                boxes.len()
            );
            let (mut got, mut want) = (got, want);
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "batched_nms, {} boxes", boxes.len());
        }
        sizes.push(boxes.len());
    }
    assert!(
        sizes.iter().any(|&n| n <= 1000) && sizes.iter().any(|&n| n > 1000),
        "both strategies"
    );
}
