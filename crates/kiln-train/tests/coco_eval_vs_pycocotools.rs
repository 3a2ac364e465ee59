//! `kiln_train::coco_evaluate` against pycocotools 2.0.11's `COCOeval` (bbox) on seeded cases:
//! crowd boxes, images without annotations, detections on them, non-contiguous and 80 category ids,
//! a detection of an unlisted category, 150 detections on one image (over maxDets), score ties,
//! an annotation with id 0. Fixtures: `scripts/make_coco_eval_fixtures.py`.

use std::path::PathBuf;

use kiln_data::{CocoFile, read_coco_results};
use kiln_train::coco_evaluate;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco_eval")
}

#[test]
fn the_twelve_numbers_and_per_category_ap_equal_pycocotools() -> anyhow::Result<()> {
    let expected: Value = serde_json::from_slice(&std::fs::read(fixtures().join("expected.json"))?)?;
    let cases = expected["cases"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no cases"))?;
    assert_eq!(cases.len(), 5);
    let mut worst = 0.0f64;
    for (name, case) in cases {
        let gt = CocoFile::read(fixtures().join(format!("{name}-gt.json")))?;
        let dets = read_coco_results(fixtures().join(format!("{name}-dt.json")), &gt)?;
        let m = coco_evaluate(&gt, &dets)?;
        assert_eq!(
            m.annotations as u64,
            case["annotations"].as_u64().unwrap_or(0),
            "{name}"
        );
        assert_eq!(
            m.detections as u64,
            case["detections"].as_u64().unwrap_or(0),
            "{name}"
        );
        for (i, (stat, want)) in m
            .named()
            .zip(case["stats"].as_array().into_iter().flatten())
            .enumerate()
        {
            let want = want.as_f64().unwrap_or(f64::NAN);
            let diff = (stat.1 - want).abs();
            worst = worst.max(diff);
            assert!(
                diff <= 1e-12,
                "{name}: stats[{i}] {} = {} but pycocotools says {want}",
                stat.0,
                stat.1
            );
        }
        let per_cat = case["per_category"].as_array().into_iter().flatten();
        assert_eq!(
            m.per_category.len(),
            case["per_category"].as_array().map_or(0, Vec::len)
        );
        for (c, want) in m.per_category.iter().zip(per_cat) {
            assert_eq!(c.id, want["id"].as_u64().unwrap_or(0));
            for (got, key) in [(c.ap, "ap"), (c.ap50, "ap50")] {
                let want = want[key].as_f64().unwrap_or(f64::NAN);
                assert!(
                    (got - want).abs() <= 1e-12,
                    "{name}: category {} {key} {got} vs {want}",
                    c.id
                );
            }
        }
        assert_eq!(
            m.to_string(),
            case["printed"].as_str().unwrap_or(""),
            "{name}: COCOeval.summarize()'s lines"
        );
        match name.as_str() {
            "mixed" => assert_eq!(m.unknown_category_detections, 1, "the category-55 detection"),
            "zero-id" => assert_eq!(m.zero_id_annotations, 1),
            _ => {}
        }
    }
    println!("largest difference from pycocotools: {worst:e}");
    Ok(())
}

/// Hand-checked cases where the numbers follow from the rules, without pycocotools.
#[test]
fn perfect_missing_and_crowd_cases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let gt_path = dir.path().join("gt.json");
    std::fs::write(
        &gt_path,
        r#"{"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100},
                       {"id": 2, "file_name": "b.png", "width": 100, "height": 100}],
            "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
              {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 1}],
            "categories": [{"id": 1, "name": "thing"}]}"#,
    )?;
    let gt = CocoFile::read(&gt_path)?;
    let det = |image_id, bbox, score| kiln_data::CocoResult {
        image_id,
        category_id: 1,
        bbox,
        score,
    };
    // Both objects found exactly; a detection inside the crowd region is ignored, not a false positive.
    let perfect = [
        det(1, [10.0, 10.0, 20.0, 20.0], 0.9),
        det(1, [50.0, 50.0, 40.0, 40.0], 0.8),
        det(2, [5.0, 5.0, 10.0, 10.0], 0.95),
    ];
    // Precision is tp / (tp + fp + 2.2e-16) (pycocotools' `np.spacing(1)`): 1 only to rounding.
    let near = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let m = coco_evaluate(&gt, &perfect)?;
    assert!(near(m.stats[0], 1.0), "{m}");
    assert!(near(m.stats[3], 1.0), "small AP: the 20x20 object");
    assert!(near(m.stats[4], 1.0), "medium AP: the 40x40 object");
    assert_eq!(m.stats[5], -1.0, "no large object that is not a crowd: undefined");
    assert_eq!(
        m.stats[6], 0.5,
        "AR@1: one detection per image finds one of two objects"
    );
    // Only one object found: recall 1/2 at every threshold; precision 1 up to it.
    let half = coco_evaluate(&gt, &perfect[..1])?;
    assert_eq!(half.stats[8], 0.5);
    assert!(
        near(half.stats[0], 51.0 / 101.0),
        "51 of 101 recall points have precision 1: {}",
        half.stats[0]
    );
    // Nothing detected scores 0 (pycocotools raises on an empty list).
    assert_eq!(coco_evaluate(&gt, &[])?.stats[0], 0.0);
    Ok(())
}

#[test]
fn results_for_unknown_images_are_refused_naming_them() -> anyhow::Result<()> {
    let gt = CocoFile::read(fixtures().join("few-gt.json"))?;
    let dir = tempfile::tempdir()?;
    let dt = dir.path().join("dt.json");
    std::fs::write(
        &dt,
        r#"[{"image_id": 4242, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
    )?;
    let msg = read_coco_results(&dt, &gt).unwrap_err().to_string();
    assert!(
        msg.contains("image id 4242") && msg.contains("few-gt.json"),
        "{msg}"
    );
    std::fs::write(&dt, r#"{"image_id": 1}"#)?;
    let msg = read_coco_results(&dt, &gt).unwrap_err().to_string();
    assert!(msg.contains("not a COCO results file"), "{msg}");
    Ok(())
}
