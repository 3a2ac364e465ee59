//! Box operations of detection post-processing, as `torchvision.ops` computes them.
//!
//! Boxes are `[x1, y1, x2, y2]` pixels in `f32`, as torchvision's detection models produce them.
//! [`nms`] and [`batched_nms`] keep the same indices as `torchvision.ops.nms` /
//! `torchvision.ops.batched_nms` on CPU: the same `f32` arithmetic, the same stable
//! highest-score-first order (ties keep their input order), and `batched_nms`'s two strategies —
//! boxes shifted per class into disjoint ranges and one NMS (up to 1000 boxes), or one NMS per
//! class (more) — because the shifted coordinates round differently. Above 1000 boxes torchvision
//! orders the kept boxes with torch's unstable sort; kiln's order differs from it only among equal
//! scores.

/// One detected object, as a detector's post-processing returns it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in the original image's pixels.
    pub bbox: [f32; 4],
    /// The detector's confidence (FCOS: `√(σ(class logit) · σ(centre-ness logit))`).
    pub score: f32,
    /// Class label `0..classes`.
    pub label: u32,
}

/// One image's ground truth for a detector's loss, in the padded batch's pixels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoxTargets {
    /// `[x1, y1, x2, y2]` boxes.
    pub boxes: Vec<[f32; 4]>,
    /// Class label of each box, `0..classes`.
    pub labels: Vec<u32>,
}

/// One scored, labelled box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredBox {
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Confidence.
    pub score: f32,
    /// Class label (NMS is done per label in [`batched_nms`]).
    pub label: u32,
}

/// Indices of `scores` from the highest, ties in input order (`sort(stable=True,
/// descending=True)`); `-0.0` equals `0.0` as in torch.
fn by_score_desc(scores: impl Iterator<Item = f32>) -> Vec<usize> {
    let keys: Vec<f32> = scores.map(|s| if s == 0.0 { 0.0 } else { s }).collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]));
    order
}

/// Greedy NMS over `boxes` with `scores` (torchvision's CPU kernel): indices kept, highest score
/// first.
fn nms_raw(boxes: &[[f32; 4]], scores: impl Iterator<Item = f32>, iou_threshold: f64) -> Vec<usize> {
    let order = by_score_desc(scores);
    let areas: Vec<f32> = boxes.iter().map(|b| (b[2] - b[0]) * (b[3] - b[1])).collect();
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = boxes[i];
        for &j in &order[n + 1..] {
            if suppressed[j] {
                continue;
            }
            let b = boxes[j];
            let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
            let inter = w * h;
            let overlap = inter / (areas[i] + areas[j] - inter);
            if f64::from(overlap) > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// `torchvision.ops.nms`: the boxes kept, as indices into `boxes`, highest score first. A box is
/// dropped when its IoU with a kept, higher-scoring box is **above** `iou_threshold`. Labels are
/// ignored (see [`batched_nms`]).
pub fn nms(boxes: &[ScoredBox], iou_threshold: f64) -> Vec<usize> {
    let coords: Vec<[f32; 4]> = boxes.iter().map(|b| b.bbox).collect();
    nms_raw(&coords, boxes.iter().map(|b| b.score), iou_threshold)
}

/// `torchvision.ops.batched_nms`: NMS within each label, indices into `boxes` kept, highest score
/// first.
pub fn batched_nms(boxes: &[ScoredBox], iou_threshold: f64) -> Vec<usize> {
    if boxes.is_empty() {
        return Vec::new();
    }
    // torchvision switches strategy above 4000 coordinates on CPU.
    if boxes.len() * 4 > 4000 {
        let mut labels: Vec<u32> = boxes.iter().map(|b| b.label).collect();
        labels.sort_unstable();
        labels.dedup();
        let mut kept = Vec::new();
        for label in labels {
            let members: Vec<usize> = (0..boxes.len()).filter(|&i| boxes[i].label == label).collect();
            let coords: Vec<[f32; 4]> = members.iter().map(|&i| boxes[i].bbox).collect();
            let keep = nms_raw(&coords, members.iter().map(|&i| boxes[i].score), iou_threshold);
            kept.extend(keep.into_iter().map(|k| members[k]));
        }
        // keep_mask → indices in input order → sorted by score (stable here; torch's sort is not).
        kept.sort_unstable();
        let order = by_score_desc(kept.iter().map(|&i| boxes[i].score));
        return order.into_iter().map(|o| kept[o]).collect();
    }
    let max_coordinate = boxes
        .iter()
        .flat_map(|b| b.bbox)
        .fold(f32::NEG_INFINITY, f32::max);
    let coords: Vec<[f32; 4]> = boxes
        .iter()
        .map(|b| {
            let offset = b.label as f32 * (max_coordinate + 1.0);
            b.bbox.map(|v| v + offset)
        })
        .collect();
    nms_raw(&coords, boxes.iter().map(|b| b.score), iou_threshold)
}

/// `torchvision.ops.box_iou` of one pair: intersection over union, 0 for boxes that do not
/// overlap.
pub fn box_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    inter / union
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(bbox: [f32; 4], score: f32, label: u32) -> ScoredBox {
        ScoredBox { bbox, score, label }
    }

    #[test]
    fn overlapping_boxes_of_one_class_are_suppressed_not_of_another() {
        let boxes = [
            b([0.0, 0.0, 10.0, 10.0], 0.9, 0),
            b([1.0, 1.0, 11.0, 11.0], 0.8, 0), // IoU 81/119 = 0.68 with the first
            b([1.0, 1.0, 11.0, 11.0], 0.7, 1),
            b([20.0, 20.0, 30.0, 30.0], 0.95, 0),
        ];
        assert_eq!(nms(&boxes, 0.5), vec![3, 0]);
        assert_eq!(nms(&boxes, 0.7), vec![3, 0, 1]);
        assert_eq!(batched_nms(&boxes, 0.5), vec![3, 0, 2]);
        assert!((box_iou(boxes[0].bbox, boxes[1].bbox) - 81.0 / 119.0).abs() < 1e-7);
        assert!(batched_nms(&[], 0.5).is_empty());
    }
}
