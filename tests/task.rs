//! A second task through the same loop: targets are boxes, the metric is mean IoU (not accuracy).
//! `fit_task`, accumulation, data parallelism, checkpoints and exact resume, the metrics log,
//! the best epoch, the report and the overfit test take it without a line of their own.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use kiln_train::diagnose::overfit_one_batch;
use kiln_train::parallel::DataParallel;
use kiln_train::task::Metric;
use kiln_train::{
    BatchSource, CheckpointOptions, EpochRecord, FitOutputs, RunDir, Task, TrainConfig, TrainError, Verdict,
    evaluate_task, fit_task,
};
use kiln_transforms::Normalization;

const SIDE: usize = 8;

/// One box per image: `[x0, y0, x1, y1]` in 0..1.
#[derive(Debug, Clone)]
struct BoxBatch {
    images: Vec<f32>,
    boxes: Vec<[f32; 4]>,
}

/// 8×8 grey images, each with one bright rectangle; the target is its box.
struct Rectangles {
    samples: Vec<(Vec<f32>, [f32; 4])>,
}

impl Rectangles {
    fn new(n: usize, seed: u64) -> Self {
        let mut state = seed;
        let mut next = |m: usize| {
            // SplitMix64, enough for test data.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % m as u64) as usize
        };
        let samples = (0..n)
            .map(|_| {
                let (x0, y0) = (next(SIDE - 2), next(SIDE - 2));
                let (x1, y1) = (x0 + 2 + next(SIDE - x0 - 1), y0 + 2 + next(SIDE - y0 - 1));
                let (x1, y1) = (x1.min(SIDE), y1.min(SIDE));
                let mut px = vec![0.0; SIDE * SIDE];
                for y in y0..y1 {
                    for x in x0..x1 {
                        px[y * SIDE + x] = 1.0;
                    }
                }
                let s = SIDE as f32;
                (px, [x0 as f32 / s, y0 as f32 / s, x1 as f32 / s, y1 as f32 / s])
            })
            .collect();
        Self { samples }
    }
}

impl BatchSource<BoxBatch> for Rectangles {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn batch(&self, positions: &[usize]) -> Result<BoxBatch, TrainError> {
        let mut batch = BoxBatch {
            images: Vec::new(),
            boxes: Vec::new(),
        };
        for &p in positions {
            let (px, b) = &self.samples[p];
            batch.images.extend_from_slice(px);
            batch.boxes.push(*b);
        }
        Ok(batch)
    }
}

#[derive(Module, Debug)]
struct BoxNet {
    hidden: Linear,
    out: Linear,
}

impl BoxNet {
    fn new(device: &Device) -> Self {
        Self {
            hidden: LinearConfig::new(SIDE * SIDE, 32).init(device),
            out: LinearConfig::new(32, 4).init(device),
        }
    }

    fn boxes(&self, batch: &BoxBatch, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let n = batch.boxes.len();
        let x = Tensor::<2>::from_data(TensorData::new(batch.images.clone(), [n, SIDE * SIDE]), device);
        let predicted = self
            .out
            .forward(burn::tensor::activation::relu(self.hidden.forward(x)));
        let flat: Vec<f32> = batch.boxes.iter().flatten().copied().collect();
        let target = Tensor::<2>::from_data(TensorData::new(flat, [n, 4]), device);
        (predicted, target)
    }
}

/// Box regression: L1 loss, mean IoU (higher is better) as the primary metric.
struct BoxRegression;

const IOU: Metric = Metric {
    key: "iou",
    title: "mean IoU",
    higher_is_better: true,
};

// Serializable: ranks training together merge their statistics (Burn re-exports serde).
#[derive(Debug, Default, burn::serde::Serialize, burn::serde::Deserialize)]
#[serde(crate = "burn::serde")]
struct IouSum(f64);

fn iou_sum(predicted: Tensor<2>, target: Tensor<2>) -> f64 {
    let p = predicted.into_data().try_to_vec::<f32>().unwrap_or_default();
    let t = target.into_data().try_to_vec::<f32>().unwrap_or_default();
    p.chunks(4)
        .zip(t.chunks(4))
        .map(|(p, t)| {
            let iw = (p[2].min(t[2]) - p[0].max(t[0])).max(0.0);
            let ih = (p[3].min(t[3]) - p[1].max(t[1])).max(0.0);
            let inter = iw * ih;
            let area = |b: &[f32]| (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0);
            f64::from(inter / (area(p) + area(t) - inter).max(1e-6))
        })
        .sum()
}

impl Task<BoxNet> for BoxRegression {
    type Batch = BoxBatch;
    type Stats = IouSum;

    fn primary(&self) -> Metric {
        IOU
    }

    fn batch_len(&self, batch: &BoxBatch) -> usize {
        batch.boxes.len()
    }

    fn check_first_batch(
        &self,
        _model: &BoxNet,
        batch: &BoxBatch,
        _norm: Option<&Normalization>,
    ) -> Result<Vec<String>, TrainError> {
        assert_eq!(batch.images.len(), batch.boxes.len() * SIDE * SIDE);
        Ok(Vec::new())
    }

    fn train_loss(
        &self,
        model: &BoxNet,
        batch: BoxBatch,
        _positions: &[usize],
        device: &Device,
        _first: bool,
    ) -> Result<(Tensor<1>, IouSum), TrainError> {
        let (predicted, target) = model.boxes(&batch, device);
        let loss = (predicted.clone() - target.clone()).abs().mean();
        Ok((loss, IouSum(iou_sum(predicted.detach(), target))))
    }

    fn eval_batch(
        &self,
        model: &BoxNet,
        batch: BoxBatch,
        _positions: &[usize],
        device: &Device,
    ) -> Result<(f32, IouSum), TrainError> {
        let (predicted, target) = model.boxes(&batch, device);
        let loss: f32 = (predicted.clone() - target.clone()).abs().mean().into_scalar();
        Ok((loss, IouSum(iou_sum(predicted, target))))
    }

    fn merge(&self, into: &mut IouSum, other: IouSum) {
        into.0 += other.0;
    }

    fn split(&self, batch: BoxBatch, parts: usize) -> Vec<BoxBatch> {
        let per = batch.boxes.len() / parts;
        (0..parts)
            .map(|i| BoxBatch {
                images: batch.images[i * per * SIDE * SIDE..(i + 1) * per * SIDE * SIDE].to_vec(),
                boxes: batch.boxes[i * per..(i + 1) * per].to_vec(),
            })
            .collect()
    }

    fn metrics(&self, stats: &IouSum, seen: usize) -> Vec<(&'static str, f64)> {
        vec![(IOU.key, stats.0 / seen.max(1) as f64)]
    }
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 0.05,
        num_workers: 2,
        seed: 5,
        ..TrainConfig::default()
    }
}

/// A fresh model. Tests in this file run in parallel and the device's generator is shared: runs
/// that must match bit for bit start from clones of one model.
fn model(device: &Device) -> BoxNet {
    device.seed(11);
    BoxNet::new(device)
}

#[test]
fn a_box_regression_task_trains_through_the_same_loop() -> anyhow::Result<()> {
    let device = Device::flex();
    let (train, val) = (Rectangles::new(256, 1), Rectangles::new(64, 2));
    let task = BoxRegression;
    let before = evaluate_task(&task, &model(&device).valid(), &val, 32, &device)?;
    let dir = tempfile::tempdir()?;
    let run = RunDir::create(dir.path().join("run"))?;
    let mut log = run.metrics_log()?;
    let r = fit_task(
        &task,
        model(&device),
        &train,
        Some(&val),
        &config(6),
        &device,
        FitOutputs {
            log: Some(&mut log),
            ..Default::default()
        },
    )?;
    let after = evaluate_task(&task, &r.model.valid(), &val, 16, &device)?;
    let first = &r.epochs[0];
    let last = &r.epochs[5];
    // The records hold the task's metric, not accuracy.
    let keys: Vec<&str> = last.metrics.keys().map(String::as_str).collect();
    assert_eq!(keys, ["train_iou", "val_iou"]);
    assert!(last.train_loss < 0.6 * first.train_loss, "{first:?} → {last:?}");
    let (iou0, iou1) = (
        task.metrics(&before.stats, before.samples)[0].1,
        task.metrics(&after.stats, after.samples)[0].1,
    );
    assert!(
        iou1 > iou0 + 0.2 && after.loss < before.loss,
        "IoU {iou0} → {iou1}"
    );
    // The last epoch's validation figures are the evaluation of the returned model.
    assert_eq!(last.val(&IOU), Some(iou1));
    assert_eq!(last.val_loss, Some(after.loss));
    // The best epoch follows the IoU (higher is better), and the verdict reads it.
    let best_epoch = r
        .epochs
        .iter()
        .max_by(|a, b| a.val(&IOU).unwrap_or(0.0).total_cmp(&b.val(&IOU).unwrap_or(0.0)))
        .map(|e| e.epoch);
    assert_eq!(r.best.map(|b| b.1), best_epoch);
    assert!(
        matches!(r.verdict, Verdict::Healthy | Verdict::Underfitting { .. }),
        "{}",
        r.verdict
    );
    // metrics.jsonl round-trips the task's metrics.
    let text = std::fs::read_to_string(run.path().join("metrics.jsonl"))?;
    let lines: Vec<EpochRecord> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5].metrics, last.metrics);
    assert!(
        text.lines().next().is_some_and(|l| l.contains("\"val_iou\":")),
        "{text}"
    );
    // The report draws the task's metric and tabulates it.
    run.write_report(&kiln_train::report::Report {
        title: "boxes".into(),
        config: serde_json::json!({}),
        epochs: &r.epochs,
        primary: IOU,
        verdict: &r.verdict,
        best: r.best.map(|(v, e)| (v, e, "val_iou")),
        stopped_early: false,
        resumed_after: 0,
        test: None,
        class_names: &[],
        warnings: &[],
        seconds: 1.0,
        train_images_per_s: 1.0,
        ema_test: None,
        test_text: None,
    })?;
    let csv = std::fs::read_to_string(run.path().join("metrics.csv"))?;
    assert!(
        csv.starts_with("epoch,train_loss,train_iou,val_loss,val_iou,lr,"),
        "{csv}"
    );
    assert!(run.path().join("iou.png").is_file());
    assert!(!run.path().join("accuracy.png").exists());
    let md = std::fs::read_to_string(run.path().join("report.md"))?;
    assert!(
        md.contains("| train iou |") && md.contains("train mean IoU"),
        "{md}"
    );
    Ok(())
}

#[test]
fn a_box_task_resumes_exactly_and_splits_over_replicas() -> anyhow::Result<()> {
    let device = Device::flex();
    let (train, val) = (Rectangles::new(128, 3), Rectangles::new(32, 4));
    let task = BoxRegression;
    let start = model(&device);
    let cfg = TrainConfig {
        accumulate: 2,
        clip_grad_norm: Some(1.0),
        ..config(3)
    };
    let run =
        |outputs: FitOutputs<'_>| fit_task(&task, start.clone(), &train, Some(&val), &cfg, &device, outputs);
    let straight = run(FitOutputs::default())?;
    // A run killed after epoch 2 (its epoch-3 checkpoint gone), resumed: the same records, bit
    // for bit.
    let ckpt = tempfile::tempdir()?;
    let outputs = |resume| FitOutputs {
        checkpoints: Some(CheckpointOptions {
            resume,
            ..CheckpointOptions::new(ckpt.path())
        }),
        ..Default::default()
    };
    run(outputs(false))?;
    std::fs::remove_dir_all(ckpt.path().join("epoch-0003"))?;
    let resumed = run(outputs(true))?;
    assert_eq!(resumed.resumed_after, 2);
    for (a, b) in straight.epochs.iter().zip(&resumed.epochs) {
        assert_eq!(
            (a.train_loss, a.val_loss, &a.metrics),
            (b.train_loss, b.val_loss, &b.metrics)
        );
    }
    // Two replicas, gradients gathered: the step is the same up to float summation order.
    let split = run(FitOutputs {
        data_parallel: Some(DataParallel::gather(vec![device.clone(); 2])),
        ..Default::default()
    })?;
    for (a, b) in straight.epochs.iter().zip(&split.epochs) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-4, "{a:?} vs {b:?}");
        let (x, y) = (a.val(&IOU).unwrap_or(0.0), b.val(&IOU).unwrap_or(1.0));
        assert!((x - y).abs() < 1e-3, "{x} vs {y}");
    }
    // And the overfit test takes the task too.
    let report = overfit_one_batch(&task, start.clone(), &train, &config(1), &device, 300, 0.2)?;
    assert!(report.passed, "{}", report.message);
    Ok(())
}
