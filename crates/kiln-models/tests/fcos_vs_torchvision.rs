//! `kiln_models::fcos::Fcos` imported from a torchvision `FCOS` state dict gives torchvision's
//! head outputs (class logits, box distances, centre-ness at every location of P3–P7) and, after
//! post-processing (anchors, decoding, clipping, per-level top-k, batched NMS), torchvision's
//! detections on two images of different sizes: boxes within 1e-3 px, scores within 1e-4; and
//! torchvision's training loss (focal, GIoU, centre-ness) on a batch with and without boxes.
//!
//! The fixture (`scripts/make_fcos_fixture.py`, torchvision 0.29.2) holds no weights: every tensor
//! of the ResNet-18 FPN FCOS state dict is set by a formula both sides compute from its name, so
//! this test writes the same state dict as a `.safetensors` file and imports it the way `kiln
//! import` does — the name mapping, shapes and the GroupNorm/BatchNorm renaming are all exercised.

use burn::prelude::*;
use kiln_models::boxes::BoxTargets;
use kiln_models::fcos::FcosConfig;
use kiln_models::resnet::ResNetKind;
use serde_json::Value;

mod fcos_fixture;
use fcos_fixture::unit;

/// Images `{prefix}{i}` of `height` × `widths[i]` (the fixture's `unit` values in 0..1),
/// normalised with ImageNet's statistics as `GeneralizedRCNNTransform` does and padded with zeros
/// to `padded_w`: the batch torchvision's model sees.
fn normalized_batch(prefix: &str, height: usize, widths: &[usize], padded_w: usize) -> Vec<f32> {
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    let mut batch = vec![0.0f32; widths.len() * 3 * height * padded_w];
    for (i, &w) in widths.iter().enumerate() {
        let pixels: Vec<f32> = unit(&format!("{prefix}{i}"), 3 * height * w)
            .map(|u| u as f32)
            .collect();
        for c in 0..3 {
            for y in 0..height {
                for x in 0..w {
                    batch[((i * 3 + c) * height + y) * padded_w + x] =
                        (pixels[(c * height + y) * w + x] - mean[c]) / std[c];
                }
            }
        }
    }
    batch
}

fn values(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn imported_torchvision_fcos_gives_torchvisions_head_outputs() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fcos/cases.json");
    let fixture: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("fcos.safetensors");
    fcos_fixture::write_weights(&fixture, &weights);

    let device = Device::flex();
    let model = FcosConfig::new(ResNetKind::ResNet18, 3).init(&device).unwrap();
    let model = kiln_models::import::load_torchvision_detector(model, &weights).unwrap();
    let input: Vec<f32> = unit("input", 2 * 3 * 64 * 96)
        .map(|u| (2.0 * u - 1.0) as f32)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(input, [2, 3, 64, 96]), &device);
    let out = model.forward(x);
    let sizes: Vec<[usize; 2]> = fixture["level_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| [s[0].as_u64().unwrap() as usize, s[1].as_u64().unwrap() as usize])
        .collect();
    assert_eq!(out.level_sizes, sizes);
    for (name, got) in [
        ("cls_logits", out.cls_logits),
        ("bbox_regression", out.bbox_regression),
        ("bbox_ctrness", out.bbox_ctrness),
    ] {
        let want = values(&fixture[name]);
        let shape: Vec<usize> = fixture["shapes"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.dims().to_vec(), shape, "{name}");
        let got: Vec<f32> = got.into_data().try_to_vec::<f32>().unwrap();
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{name}: max |diff| {worst:e} (values up to {scale})");
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{name}: max |diff| {worst} over values up to {scale}"
        );
    }

    // The whole model: normalised (ImageNet mean/std, as GeneralizedRCNNTransform), padded with
    // zeros to 64x96, post-processed as the fixture's model (threshold 0.55, no 100 cap).
    let widths = [96usize, 80];
    let batch = normalized_batch("image", 64, &widths, 96);
    let x = Tensor::<4>::from_data(TensorData::new(batch, [2, 3, 64, 96]), &device);
    let sizes = [[64, 96], [64, 80]];
    let cfg = kiln_models::fcos::FcosPostprocess::new()
        .with_score_thresh(0.55)
        .with_detections_per_img(1000);
    let detections = model.forward(x).detections([64, 96], &sizes, &sizes, &cfg);
    let (mut worst_box, mut worst_score) = (0.0f32, 0.0f32);
    for (got, want) in detections.iter().zip(fixture["detections"].as_array().unwrap()) {
        let scores = values(&want["scores"]);
        let labels = values(&want["labels"]);
        let boxes: Vec<Vec<f32>> = want["boxes"].as_array().unwrap().iter().map(values).collect();
        assert_eq!(got.len(), scores.len());
        assert!(got.len() > 10 && got.len() < 1000, "{} detections", got.len());
        // Scores a few 1e-7 apart may come out in either order: match each of torchvision's
        // detections to one of kiln's with the same label, box and score.
        let mut used = vec![false; got.len()];
        for ((s, l), b) in scores.iter().zip(&labels).zip(&boxes) {
            let found = got.iter().enumerate().position(|(j, d)| {
                !used[j]
                    && d.label as f32 == *l
                    && (d.score - s).abs() <= 1e-4
                    && d.bbox.iter().zip(b).all(|(g, w)| (g - w).abs() <= 1e-3)
            });
            let Some(j) = found else {
                panic!("torchvision's detection {b:?} label {l} score {s} has no match in {got:?}");
            };
            used[j] = true;
            worst_score = worst_score.max((got[j].score - s).abs());
            for (g, w) in got[j].bbox.iter().zip(b) {
                worst_box = worst_box.max((g - w).abs());
            }
        }
    }
    println!("detections: boxes within {worst_box:e} px, scores within {worst_score:e}");
    assert!(
        worst_box <= 1e-3 && worst_score <= 1e-4,
        "{worst_box} {worst_score}"
    );

    // The training loss on two 128-pixel-high images (the first with three overlapping boxes of
    // three sizes, the second with none), padded to 128x160: torchvision's FCOS.compute_loss.
    let loss = &fixture["loss"];
    let batch = normalized_batch("loss_image", 128, &[160, 128], 160);
    let targets: Vec<BoxTargets> = loss["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(loss["labels"].as_array().unwrap())
        .map(|(b, l)| BoxTargets {
            boxes: b
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let v = values(b);
                    [v[0], v[1], v[2], v[3]]
                })
                .collect(),
            labels: values(l).into_iter().map(|v| v as u32).collect(),
        })
        .collect();
    let out = model.forward(Tensor::<4>::from_data(
        TensorData::new(batch, [2, 3, 128, 160]),
        &device,
    ));
    let got = out.loss([128, 160], &targets);
    // The first image's locations match boxes on more than one level (the scale ranges).
    let anchors = kiln_models::fcos::fcos_anchors([128, 160], &out.level_sizes);
    let matched = kiln_models::fcos::fcos_match(&anchors, &out.level_sizes, &targets[0].boxes);
    let p3 = out.level_sizes[0][0] * out.level_sizes[0][1];
    assert!(matched[..p3].iter().any(Option::is_some) && matched[p3..].iter().any(Option::is_some));
    assert_eq!(got.foreground, matched.iter().flatten().count());
    for (name, value) in [
        ("classification", got.classification),
        ("bbox_regression", got.bbox_regression),
        ("bbox_ctrness", got.bbox_ctrness),
    ] {
        let want = loss[name].as_f64().unwrap() as f32;
        let value: f32 = value.into_scalar();
        println!("loss {name}: {value} vs torchvision {want}");
        assert!(
            (value - want).abs() <= 1e-4 * want.abs().max(1.0),
            "{name}: {value} vs {want}"
        );
    }

    // A state dict of another class count does not fit, and the error says which tensors.
    let model = FcosConfig::new(ResNetKind::ResNet18, 5).init(&device).unwrap();
    let msg = kiln_models::import::load_torchvision_detector(model, &weights)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("fcos.safetensors"), "{msg}");
}
