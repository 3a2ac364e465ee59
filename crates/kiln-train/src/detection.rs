//! Object detection as a [`Task`]: FCOS trained on COCO data and scored with COCO AP.
//!
//! * [`DetectionSource`] serves padded [`DetBatch`]es of a [`CocoDetection`]: each image resized as
//!   torchvision's `GeneralizedRCNNTransform` resizes (shorter side to `min_size`, longer side at
//!   most `max_size`, aspect kept), flipped at random in training (seeded per sample and epoch),
//!   normalised, its boxes moved along; batches padded to a multiple of 32 with each image's
//!   original and resized shape.
//! * [`DetectionTask`] is the task, for any registered [`Detector`]: the detector's loss (FCOS:
//!   focal + GIoU + centre-ness, torchvision's) in training, without crowd boxes as torchvision's
//!   reference scripts drop them; in evaluation the same loss and the post-processed detections
//!   in the original image's pixels, merged over the evaluation and scored by [`coco_evaluate`]
//!   against the annotation file: `map` (AP@[.5:.95], the primary metric) and `map50`.

use burn::data::dataset::Dataset;
use burn::prelude::*;
use kiln_data::batch::SplitMix64;
use kiln_data::batcher::{DetBatch, DetSample, DetectionBatcher};
use kiln_data::{CocoDetection, CocoFile, CocoResult, Collate, Indexed, Rgb};
use kiln_models::boxes::BoxTargets;
use kiln_models::detector::Detector;
use kiln_transforms::Normalization;
use kiln_transforms::augment::resize_detection;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::coco_eval::{CocoMetrics, coco_evaluate};
use crate::source::BatchSource;
use crate::task::{Metric, Task};

/// COCO AP@[.5:.95], the detection task's primary metric.
pub const MAP: Metric = Metric {
    key: "map",
    title: "AP@[.5:.95]",
    higher_is_better: true,
};

/// COCO AP at IoU 0.5.
pub const MAP50: Metric = Metric {
    key: "map50",
    title: "AP50",
    higher_is_better: true,
};

/// `GeneralizedRCNNTransform`'s output size: `[H, W]` scaled by `min(min_size / shorter,
/// max_size / longer)`, rounded down (`recompute_scale_factor=True`), at least 1.
pub fn resized_size([h, w]: [usize; 2], min_size: usize, max_size: usize) -> [usize; 2] {
    let (short, long) = (h.min(w).max(1) as f64, h.max(w).max(1) as f64);
    let scale = (min_size as f64 / short).min(max_size as f64 / long);
    [
        ((h as f64 * scale).floor() as usize).max(1),
        ((w as f64 * scale).floor() as usize).max(1),
    ]
}

/// Padded, normalised detection batches of a COCO dataset; see the [module docs](self).
pub struct DetectionSource {
    dataset: CocoDetection,
    norm: Normalization,
    min_size: usize,
    max_size: usize,
    flip: f64,
    seed: u64,
    batcher: DetectionBatcher,
}

impl DetectionSource {
    /// Batches of `dataset` resized to `min_size` / `max_size`, normalised by `norm`, flipped with
    /// probability `flip` in training batches (seeded by `seed`).
    pub fn new(
        dataset: CocoDetection,
        norm: Normalization,
        min_size: usize,
        max_size: usize,
        flip: f64,
        seed: u64,
    ) -> Self {
        let classes = dataset.categories().len();
        Self {
            dataset,
            norm,
            min_size,
            max_size,
            flip,
            seed,
            batcher: DetectionBatcher::new(classes, Device::flex()).with_size_multiple(32),
        }
    }

    /// The dataset it serves.
    pub fn dataset(&self) -> &CocoDetection {
        &self.dataset
    }

    fn sample(&self, index: usize, epoch: Option<u64>) -> Result<DetSample<Rgb>, TrainError> {
        let item = self.dataset.get(index)?;
        let out = resized_size(
            [item.image.height(), item.image.width()],
            self.min_size,
            self.max_size,
        );
        let flip = epoch.is_some_and(|e| {
            let mut rng = SplitMix64::new(kiln_data::loader::sample_seed(self.seed, e, index));
            rng.uniform() < self.flip
        });
        Ok(resize_detection(item, out, flip, &self.norm)?)
    }

    fn collate(&self, positions: &[usize], epoch: Option<u64>) -> Result<DetBatch, TrainError> {
        let items = positions
            .iter()
            .map(|&index| {
                Ok(Indexed {
                    index,
                    item: self.sample(index, epoch)?,
                })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(self.batcher.collate(items)?)
    }
}

impl BatchSource<DetBatch> for DetectionSource {
    fn len(&self) -> usize {
        self.dataset.len()
    }

    fn batch(&self, positions: &[usize]) -> Result<DetBatch, TrainError> {
        self.collate(positions, None)
    }

    fn epoch_batch(&self, positions: &[usize], epoch: u64) -> Result<DetBatch, TrainError> {
        self.collate(positions, Some(epoch))
    }

    fn normalization(&self) -> Option<&Normalization> {
        Some(&self.norm)
    }
}

/// Detections gathered over an evaluation, as a COCO results list, and the images they cover.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectionStats {
    /// Every detection, in the original images' pixels.
    pub results: Vec<CocoResult>,
    /// COCO image ids evaluated (images without detections count too).
    pub images: Vec<u64>,
}

/// Object detection; see the [module docs](self).
pub struct DetectionTask {
    /// The ground truth evaluation scores against (the validation split's annotation file).
    pub ground_truth: Option<CocoFile>,
    /// COCO image id of each dataset index of the evaluated split.
    pub image_ids: Vec<u64>,
    /// COCO category id of each label.
    pub category_ids: Vec<u64>,
}

impl DetectionTask {
    /// The task for evaluating on `dataset`, whose annotation file `ground_truth` is (the
    /// post-processing is the detector's).
    ///
    /// # Errors
    ///
    /// [`TrainError::Data`] when the annotations cannot be scored (an annotation without an id).
    pub fn new(ground_truth: CocoFile, dataset: &CocoDetection) -> Result<Self, TrainError> {
        coco_evaluate(&ground_truth, &[])?;
        Ok(Self {
            image_ids: dataset.image_ids(),
            category_ids: dataset.category_ids().to_vec(),
            ground_truth: Some(ground_truth),
        })
    }
}

impl DetectionTask {
    /// pycocotools' figures of the detections in `stats` against the ground truth, over the
    /// images evaluated (the whole file in a full evaluation; `None` without ground truth or
    /// images).
    pub fn score(&self, stats: &DetectionStats) -> Option<Result<CocoMetrics, TrainError>> {
        let gt = self.ground_truth.as_ref()?;
        if stats.images.is_empty() {
            return None;
        }
        let evaluated: std::collections::BTreeSet<u64> = stats.images.iter().copied().collect();
        Some(if evaluated.len() == gt.images.len() {
            coco_evaluate(gt, &stats.results).map_err(TrainError::from)
        } else {
            let mut subset = gt.clone();
            subset.images.retain(|i| evaluated.contains(&i.id));
            subset.annotations.retain(|a| evaluated.contains(&a.image_id));
            coco_evaluate(&subset, &stats.results).map_err(TrainError::from)
        })
    }
}

/// Each image's targets in the batch's pixels: real, non-crowd boxes.
fn targets(batch: &DetBatch) -> Vec<BoxTargets> {
    let [n, m, _] = batch.boxes.dims();
    let boxes: Vec<f32> = batch
        .boxes
        .clone()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap_or_default();
    let labels: Vec<i64> = batch
        .labels
        .clone()
        .into_data()
        .try_into_vec_as::<i64>()
        .unwrap_or_default();
    let mask: Vec<bool> = batch.mask.clone().into_data().iter::<bool>().collect();
    let crowd: Vec<bool> = batch.crowd.clone().into_data().iter::<bool>().collect();
    (0..n)
        .map(|i| {
            let mut t = BoxTargets::default();
            for j in 0..m {
                let k = i * m + j;
                if mask.get(k) == Some(&true) && crowd.get(k) != Some(&true) {
                    t.boxes
                        .push([boxes[k * 4], boxes[k * 4 + 1], boxes[k * 4 + 2], boxes[k * 4 + 3]]);
                    t.labels.push(labels[k].max(0) as u32);
                }
            }
            t
        })
        .collect()
}

impl<M: Detector> Task<M> for DetectionTask {
    type Batch = DetBatch;
    type Stats = DetectionStats;

    fn primary(&self) -> Metric {
        MAP
    }

    fn batch_len(&self, batch: &DetBatch) -> usize {
        batch.images.dims()[0]
    }

    fn check_first_batch(
        &self,
        model: &M,
        batch: &DetBatch,
        _norm: Option<&Normalization>,
    ) -> Result<Vec<String>, TrainError> {
        let [_, c, _, _] = batch.images.dims();
        if c != 3 {
            return Err(TrainError::InvalidConfig {
                field: "data",
                value: format!("{c} channels"),
                reason: "the detectors' ResNet backbones take 3-channel (RGB) images".into(),
            });
        }
        let classes = self.category_ids.len();
        if classes != model.num_classes() {
            return Err(TrainError::InvalidConfig {
                field: "model.num_classes",
                value: model.num_classes().to_string(),
                reason: format!("the data has {classes} categories"),
            });
        }
        Ok(Vec::new())
    }

    fn train_loss(
        &self,
        model: &M,
        batch: DetBatch,
        _positions: &[usize],
        device: &Device,
        _first: bool,
    ) -> Result<(Tensor<1>, DetectionStats), TrainError> {
        let targets = targets(&batch);
        Ok((
            model.loss(batch.images.to_device(device), &targets),
            DetectionStats::default(),
        ))
    }

    fn eval_batch(
        &self,
        model: &M,
        batch: DetBatch,
        _positions: &[usize],
        device: &Device,
    ) -> Result<(f32, DetectionStats), TrainError> {
        let targets = targets(&batch);
        let resized: Vec<[usize; 2]> = batch.meta.iter().map(|m| m.resized_hw).collect();
        let original: Vec<[usize; 2]> = batch.meta.iter().map(|m| m.original_hw).collect();
        let (loss, detections) = model.detect(
            batch.images.clone().to_device(device),
            Some(&targets),
            &resized,
            &original,
        );
        let loss: f32 = loss.map_or(0.0, |l| l.into_scalar());
        let mut stats = DetectionStats::default();
        for (meta, dets) in batch.meta.iter().zip(detections) {
            let image_id = self
                .image_ids
                .get(meta.index)
                .copied()
                .unwrap_or(meta.index as u64);
            stats.images.push(image_id);
            for d in dets {
                let [x1, y1, x2, y2] = d.bbox.map(f64::from);
                stats.results.push(CocoResult {
                    image_id,
                    category_id: self
                        .category_ids
                        .get(d.label as usize)
                        .copied()
                        .unwrap_or(u64::from(d.label)),
                    bbox: [x1, y1, x2 - x1, y2 - y1],
                    score: f64::from(d.score),
                });
            }
        }
        Ok((loss, stats))
    }

    fn merge(&self, into: &mut DetectionStats, other: DetectionStats) {
        into.results.extend(other.results);
        into.images.extend(other.images);
    }

    fn split(&self, batch: DetBatch, parts: usize) -> Vec<DetBatch> {
        let n = batch.images.dims()[0];
        let per = n / parts.max(1);
        (0..parts)
            .map(|p| {
                let r = p * per..(p + 1) * per;
                DetBatch {
                    images: batch.images.clone().narrow(0, r.start, per),
                    boxes: batch.boxes.clone().narrow(0, r.start, per),
                    labels: batch.labels.clone().narrow(0, r.start, per),
                    mask: batch.mask.clone().narrow(0, r.start, per),
                    crowd: batch.crowd.clone().narrow(0, r.start, per),
                    meta: batch.meta[r].to_vec(),
                }
            })
            .collect()
    }

    fn metrics(&self, stats: &DetectionStats, _seen: usize) -> Vec<(&'static str, f64)> {
        match self.score(stats) {
            Some(Ok(m)) => vec![(MAP.key, m.stats[0].max(0.0)), (MAP50.key, m.stats[1].max(0.0))],
            _ => Vec::new(),
        }
    }
}
