//! COCO box detection metrics: pycocotools' `COCOeval` (`iouType="bbox"`) step for step.
//!
//! [`coco_evaluate`] takes a ground-truth [`CocoFile`] and a results list ([`CocoResult`], the
//! list `COCO.loadRes` takes) and returns the twelve numbers `COCOeval.summarize()` prints —
//! AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100 and AR small/medium/large — plus
//! AP and AP50 per category. What it copies from pycocotools 2.0.11, on purpose:
//!
//! * IoU thresholds 0.50:0.05:0.95 and 101 recall points made as `np.linspace` makes them; areas
//!   split at 32² and 96² on the ground truth's `area` field (the box's `w·h` where a file has
//!   none) and on `w·h` for detections; at most 100 detections per image and category, the
//!   highest scores first, ties in file order (numpy's stable `mergesort`).
//! * Crowd boxes (`iscrowd`) are never counted as missed; a detection matched to one is ignored,
//!   and their IoU is the intersection over the *detection's* area. A crowd box can take any
//!   number of detections.
//! * Images without annotations count: every detection on them is a false positive.
//! * A category without any (non-crowd, in-range) ground truth gets no AP (-1) and is left out of
//!   the means; a summary entry with nothing to average is -1.
//! * pycocotools stores a match as the ground truth's annotation id, so a match with an annotation
//!   whose id is **0** reads as no match (a false positive). kiln does the same, to give the same
//!   numbers, and counts such annotations ([`CocoMetrics::zero_id_annotations`]) so a caller can
//!   warn.
//!
//! Detections of a category the ground truth does not list are dropped, as pycocotools drops them,
//! and counted ([`CocoMetrics::unknown_category_detections`]). An empty results list scores 0
//! where pycocotools raises an `IndexError`.

use std::collections::HashMap;
use std::fmt;

use kiln_data::{CocoFile, CocoResult, DataError};
use serde::{Deserialize, Serialize};

/// The names of [`CocoMetrics::stats`], in `COCOeval.stats` order.
pub const COCO_STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

const T: usize = 10;
const R: usize = 101;
const MAX_DETS: [usize; 3] = [1, 10, 100];
/// `Params.areaRng`: all, small, medium, large.
const AREAS: [[f64; 2]; 4] = [
    [0.0, 1e10],
    [0.0, 32.0 * 32.0],
    [32.0 * 32.0, 96.0 * 96.0],
    [96.0 * 96.0, 1e10],
];

/// `np.linspace(start, stop, num)`: `i·step + start`, the last value exactly `stop`.
fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let step = (stop - start) / (N - 1) as f64;
    let mut out = [0.0; N];
    for (i, v) in out.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    out[N - 1] = stop;
    out
}

/// AP of one category (`-1` where it has no ground truth to find).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryAp {
    /// COCO's category id.
    pub id: u64,
    /// The category's name.
    pub name: String,
    /// AP@[.5:.95], all areas, 100 detections.
    pub ap: f64,
    /// AP at IoU 0.5.
    pub ap50: f64,
}

/// What [`coco_evaluate`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoMetrics {
    /// `COCOeval.stats`: the twelve numbers, named by [`COCO_STAT_NAMES`].
    pub stats: [f64; 12],
    /// AP per category, by increasing id.
    pub per_category: Vec<CategoryAp>,
    /// Images evaluated (all the ground truth lists).
    pub images: usize,
    /// Ground-truth annotations.
    pub annotations: usize,
    /// Detections scored.
    pub detections: usize,
    /// Detections whose category the ground truth does not list (dropped).
    pub unknown_category_detections: usize,
    /// Ground-truth annotations with id 0, whose matches pycocotools (and so kiln) miscounts.
    pub zero_id_annotations: usize,
}

impl CocoMetrics {
    /// `stats` as `(name, value)` pairs.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        COCO_STAT_NAMES.iter().copied().zip(self.stats.iter().copied())
    }
}

/// The twelve lines of `COCOeval.summarize()`, formatted as it prints them.
impl fmt::Display for CocoMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const ROWS: [(bool, &str, &str, usize); 12] = [
            (true, "0.50:0.95", "all", 100),
            (true, "0.50", "all", 100),
            (true, "0.75", "all", 100),
            (true, "0.50:0.95", "small", 100),
            (true, "0.50:0.95", "medium", 100),
            (true, "0.50:0.95", "large", 100),
            (false, "0.50:0.95", "all", 1),
            (false, "0.50:0.95", "all", 10),
            (false, "0.50:0.95", "all", 100),
            (false, "0.50:0.95", "small", 100),
            (false, "0.50:0.95", "medium", 100),
            (false, "0.50:0.95", "large", 100),
        ];
        for ((ap, iou, area, dets), value) in ROWS.iter().zip(self.stats) {
            let (title, kind) = if *ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            writeln!(
                f,
                " {title:<18} {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {value:0.3}"
            )?;
        }
        Ok(())
    }
}

struct Gt {
    id: u64,
    bbox: [f64; 4],
    area: f64,
    crowd: bool,
}

struct Dt {
    /// `loadRes`'s id: position in the results list + 1.
    id: u64,
    bbox: [f64; 4],
    area: f64,
    score: f64,
}

/// One image's annotations and detections of one category, and their IoUs (`computeIoU`).
struct ImgCat<'a> {
    gts: &'a [&'a Gt],
    dts: &'a [&'a Dt],
    /// `[d][g]`: detections by score (at most 100), annotations in file order.
    ious: Vec<Vec<f64>>,
}

/// `evaluateImg`'s result for one image, category and area range.
struct ImgEval {
    /// Scores of the (at most 100) detections, highest first.
    scores: Vec<f64>,
    /// `[t][d]`: the matched annotation's id, 0 for none.
    matches: Vec<Vec<u64>>,
    /// `[t][d]`: ignored.
    ignored: Vec<Vec<bool>>,
    /// Per annotation: ignored (crowd or out of the area range).
    gt_ignored: Vec<bool>,
}

/// `maskUtils.iou` on `[x, y, w, h]` boxes (the C `bbIou`): over the union, or over the
/// detection's area for a crowd box.
fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let da = d[2] * d[3];
    let u = if crowd { da } else { da + g[2] * g[3] - i };
    i / u
}

/// Indices of `dts` by decreasing score, ties in their order (`np.argsort(-s, kind='mergesort')`).
fn by_score(dts: &[&Dt]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..dts.len()).collect();
    order.sort_by(|&a, &b| dts[b].score.total_cmp(&dts[a].score));
    order
}

/// `COCOeval.evaluateImg` for one image and category.
fn evaluate_img(c: &ImgCat, range: [f64; 2], thresholds: &[f64; T]) -> Option<ImgEval> {
    let ImgCat { gts, dts, ious } = c;
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let out_of = |area: f64| area < range[0] || area > range[1];
    let ignore: Vec<bool> = gts.iter().map(|g| g.crowd || out_of(g.area)).collect();
    // Annotations not ignored first, in their order (a stable sort on the flag).
    let mut gt_order: Vec<usize> = (0..gts.len()).collect();
    gt_order.sort_by_key(|&g| ignore[g]);
    let dt_order: Vec<usize> = by_score(dts).into_iter().take(MAX_DETS[2]).collect();
    let gt_ignored: Vec<bool> = gt_order.iter().map(|&g| ignore[g]).collect();
    let n_d = dt_order.len();
    let n_g = gt_order.len();
    let mut matches = vec![vec![0u64; n_d]; T];
    let mut ignored = vec![vec![false; n_d]; T];
    if !ious.is_empty() && n_g > 0 {
        for (t, &threshold) in thresholds.iter().enumerate() {
            let mut gt_taken = vec![0u64; n_g];
            for (di, &d) in dt_order.iter().enumerate() {
                let mut best = threshold.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for (gi, &g) in gt_order.iter().enumerate() {
                    if gt_taken[gi] > 0 && !gts[g].crowd {
                        continue;
                    }
                    if let Some(m) = m
                        && !gt_ignored[m]
                        && gt_ignored[gi]
                    {
                        break;
                    }
                    // `ious` rows follow the score order, like computeIoU's.
                    let v = ious[di][g];
                    if v < best {
                        continue;
                    }
                    best = v;
                    m = Some(gi);
                }
                if let Some(m) = m {
                    ignored[t][di] = gt_ignored[m];
                    matches[t][di] = gts[gt_order[m]].id;
                    gt_taken[m] = dts[d].id;
                }
            }
        }
    }
    for (di, &d) in dt_order.iter().enumerate() {
        if out_of(dts[d].area) {
            for t in 0..T {
                if matches[t][di] == 0 {
                    ignored[t][di] = true;
                }
            }
        }
    }
    Some(ImgEval {
        scores: dt_order.iter().map(|&d| dts[d].score).collect(),
        matches,
        ignored,
        gt_ignored,
    })
}

/// Scores `results` against `gt` with pycocotools' `COCOeval` (bbox); see the module docs.
///
/// # Errors
///
/// [`DataError::Format`] naming `gt`'s file when an annotation has no `id` (pycocotools indexes
/// annotations by it) or a category `gt` does not list.
pub fn coco_evaluate(gt: &CocoFile, results: &[CocoResult]) -> Result<CocoMetrics, DataError> {
    let thresholds: [f64; T] = linspace(0.5, 0.95);
    let recall_points: [f64; R] = linspace(0.0, 1.0);
    let mut image_ids: Vec<u64> = gt.images.iter().map(|i| i.id).collect();
    image_ids.sort_unstable();
    let cat_ids: Vec<u64> = gt.categories.iter().map(|c| c.id).collect();
    let cat_index: HashMap<u64, usize> = cat_ids.iter().enumerate().map(|(k, &c)| (c, k)).collect();

    let mut gts: Vec<Gt> = Vec::with_capacity(gt.annotations.len());
    let mut gt_keys = Vec::with_capacity(gt.annotations.len());
    for (n, a) in gt.annotations.iter().enumerate() {
        let id = a.id.ok_or_else(|| DataError::Format {
            path: gt.path.clone(),
            problem: format!("annotation #{n} has no \"id\"; COCO evaluation matches annotations by id"),
        })?;
        // CocoFile::read checks categories, but its fields are public: a built file may not.
        let k = *cat_index.get(&a.category_id).ok_or_else(|| DataError::Format {
            path: gt.path.clone(),
            problem: format!(
                "annotation id {id} has category id {}, which is not in \"categories\"",
                a.category_id
            ),
        })?;
        gts.push(Gt {
            id,
            bbox: a.bbox,
            area: a.area.unwrap_or(a.bbox[2] * a.bbox[3]),
            crowd: a.iscrowd,
        });
        gt_keys.push((a.image_id, k));
    }
    let dts: Vec<Dt> = results
        .iter()
        .enumerate()
        .map(|(n, r)| Dt {
            id: n as u64 + 1,
            bbox: r.bbox,
            area: r.bbox[2] * r.bbox[3],
            score: r.score,
        })
        .collect();
    // Per (image, category), in file order.
    let mut gt_of: HashMap<(u64, usize), Vec<&Gt>> = HashMap::new();
    for (g, key) in gts.iter().zip(&gt_keys) {
        gt_of.entry(*key).or_default().push(g);
    }
    let mut dt_of: HashMap<(u64, usize), Vec<&Dt>> = HashMap::new();
    let mut unknown_category_detections = 0;
    for (d, r) in dts.iter().zip(results) {
        match cat_index.get(&r.category_id) {
            Some(&k) => dt_of.entry((r.image_id, k)).or_default().push(d),
            None => unknown_category_detections += 1,
        }
    }

    let n_k = cat_ids.len();
    let n_a = AREAS.len();
    let n_m = MAX_DETS.len();
    // precision[t][r][k][a][m] and recall[t][k][a][m], flattened; -1 where undefined.
    let p_at =
        |t: usize, r: usize, k: usize, a: usize, m: usize| (((t * R + r) * n_k + k) * n_a + a) * n_m + m;
    let r_at = |t: usize, k: usize, a: usize, m: usize| ((t * n_k + k) * n_a + a) * n_m + m;
    let mut precision = vec![-1.0f64; T * R * n_k * n_a * n_m];
    let mut recall = vec![-1.0f64; T * n_k * n_a * n_m];
    for k in 0..n_k {
        // computeIoU, once per image: rows are detections by score (at most 100).
        let per_image: Vec<ImgCat> = image_ids
            .iter()
            .map(|&img| {
                let gts = gt_of.get(&(img, k)).map_or(&[][..], Vec::as_slice);
                let dts = dt_of.get(&(img, k)).map_or(&[][..], Vec::as_slice);
                let ious = if gts.is_empty() || dts.is_empty() {
                    Vec::new()
                } else {
                    by_score(dts)
                        .into_iter()
                        .take(MAX_DETS[2])
                        .map(|di| gts.iter().map(|g| iou(&dts[di].bbox, &g.bbox, g.crowd)).collect())
                        .collect()
                };
                ImgCat { gts, dts, ious }
            })
            .collect();
        for (a, &range) in AREAS.iter().enumerate() {
            let evals: Vec<ImgEval> = per_image
                .iter()
                .filter_map(|c| evaluate_img(c, range, &thresholds))
                .collect();
            if evals.is_empty() {
                continue;
            }
            let npig = evals.iter().flat_map(|e| &e.gt_ignored).filter(|&&i| !i).count();
            if npig == 0 {
                continue;
            }
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                // (score, image's eval, position) of every kept detection, by score, stably.
                let mut all: Vec<(f64, usize, usize)> = evals
                    .iter()
                    .enumerate()
                    .flat_map(|(e, ev)| {
                        ev.scores
                            .iter()
                            .take(max_det)
                            .enumerate()
                            .map(move |(d, &s)| (s, e, d))
                    })
                    .collect();
                all.sort_by(|x, y| y.0.total_cmp(&x.0));
                for t in 0..T {
                    let (mut tp, mut fp) = (0usize, 0usize);
                    let mut rc = Vec::with_capacity(all.len());
                    let mut pr = Vec::with_capacity(all.len());
                    for &(_, e, d) in &all {
                        if evals[e].ignored[t][d] {
                        } else if evals[e].matches[t][d] != 0 {
                            tp += 1;
                        } else {
                            fp += 1;
                        }
                        let (tpf, fpf) = (tp as f64, fp as f64);
                        rc.push(tpf / npig as f64);
                        pr.push(tpf / (fpf + tpf + f64::EPSILON));
                    }
                    recall[r_at(t, k, a, m)] = rc.last().copied().unwrap_or(0.0);
                    for i in (1..pr.len()).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (ri, &point) in recall_points.iter().enumerate() {
                        // np.searchsorted(rc, point, side='left'); beyond the end leaves 0.
                        let pi = rc.partition_point(|&v| v < point);
                        precision[p_at(t, ri, k, a, m)] = pr.get(pi).copied().unwrap_or(0.0);
                    }
                }
            }
        }
    }

    let mean_defined = |values: &mut dyn Iterator<Item = f64>| {
        let (sum, n) = values
            .filter(|&v| v > -1.0)
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        if n == 0 { -1.0 } else { sum / n as f64 }
    };
    let ap = |t: Option<usize>, ks: &[usize], a: usize, m: usize| {
        let ts: Vec<usize> = t.map_or_else(|| (0..T).collect(), |t| vec![t]);
        mean_defined(
            &mut ts
                .iter()
                .flat_map(|&t| (0..R).flat_map(move |r| ks.iter().map(move |&k| (t, r, k))))
                .map(|(t, r, k)| precision[p_at(t, r, k, a, m)]),
        )
    };
    let ar = |a: usize, m: usize| {
        mean_defined(
            &mut (0..T)
                .flat_map(|t| (0..n_k).map(move |k| (t, k)))
                .map(|(t, k)| recall[r_at(t, k, a, m)]),
        )
    };
    let all_k: Vec<usize> = (0..n_k).collect();
    // iouThrs[0] is 0.5 and iouThrs[5] is 0.75, as `np.where(iouThr == p.iouThrs)` finds them.
    let stats = [
        ap(None, &all_k, 0, 2),
        ap(Some(0), &all_k, 0, 2),
        ap(Some(5), &all_k, 0, 2),
        ap(None, &all_k, 1, 2),
        ap(None, &all_k, 2, 2),
        ap(None, &all_k, 3, 2),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ];
    let per_category = gt
        .categories
        .iter()
        .enumerate()
        .map(|(k, c)| CategoryAp {
            id: c.id,
            name: c.name.clone(),
            ap: ap(None, &[k], 0, 2),
            ap50: ap(Some(0), &[k], 0, 2),
        })
        .collect();
    Ok(CocoMetrics {
        stats,
        per_category,
        images: image_ids.len(),
        annotations: gts.len(),
        detections: results.len(),
        unknown_category_detections,
        zero_id_annotations: gts.iter().filter(|g| g.id == 0).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_numpys() {
        // np.linspace(.5, .95, 10)[5] == .75 and np.linspace(0, 1, 101)[7] == 0.07
        let t: [f64; T] = linspace(0.5, 0.95);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
        let r: [f64; R] = linspace(0.0, 1.0);
        assert_eq!(r[7], 0.07);
        assert_eq!(r[100], 1.0);
    }

    #[test]
    fn crowd_iou_is_over_the_detection() {
        let d = [0.0, 0.0, 2.0, 2.0];
        let g = [1.0, 1.0, 10.0, 10.0];
        // maskUtils.iou([[0,0,2,2]], [[1,1,10,10]], [0]) = 1/(4+100-1); with [1]: 1/4
        assert_eq!(iou(&d, &g, false), 1.0 / 103.0);
        assert_eq!(iou(&d, &g, true), 0.25);
        assert_eq!(iou(&d, &[2.0, 0.0, 1.0, 1.0], false), 0.0);
    }
}
