//! FCOS (Tian et al. 2019) in torchvision's definition: a ResNet body, a feature pyramid P3–P7 and
//! the shared classification / box-regression + centre-ness heads with GroupNorm towers.
//!
//! * Backbone: torchvision's `_resnet_fpn_extractor(resnet, returned_layers=[2, 3, 4],
//!   extra_blocks=LastLevelP6P7(256, 256))` — `layer2..layer4` (C3–C5) into a
//!   `FeaturePyramidNetwork` (1×1 lateral and 3×3 output convolutions with biases, nearest 2×
//!   top-down upsampling), P6 and P7 by stride-2 3×3 convolutions from P5 (ReLU before P7).
//!   Depths 18, 34 and 50.
//! * Head: four (3×3 conv → GroupNorm(32) → ReLU) per branch; class logits (bias
//!   `−log((1 − 0.01) / 0.01)`), box distances (ReLU'd, in units of the level's stride — the box
//!   coder multiplies them back) and centre-ness, flattened per level to `[N, H·W, ·]` and
//!   concatenated P3 → P7, as `FCOSHead.forward` returns them.
//! * The initialisation is torchvision's (FPN: Kaiming uniform a = 1, zero bias; head: N(0, 0.01)).
//!
//! [`Fcos::torchvision_key_map`] maps an `FCOS` state dict (`backbone.body.*`, `backbone.fpn.*`,
//! `head.*`) onto this model.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::ModelError;
// kiln's convolution kernel (im2col + gemm, fused backward) on flex; Burn's elsewhere.
use crate::boxes::{BoxTargets, Detection};
use crate::kernels::conv2d as conv;
use crate::resnet::{ResNetBody, ResNetConfig, ResNetKind};

/// Configuration of [`Fcos`].
#[derive(Config, Debug, PartialEq)]
pub struct FcosConfig {
    /// The backbone: `ResNet18`, `ResNet34` or `ResNet50`.
    pub backbone: ResNetKind,
    /// Object classes (torchvision counts a background class in `num_classes`; FCOS's sigmoid
    /// classifier needs none, and kiln's count is the dataset's).
    pub num_classes: usize,
    /// Channels of the pyramid and the heads (torchvision: 256).
    #[config(default = 256)]
    pub channels: usize,
    /// Convolutions in each head tower (torchvision: 4).
    #[config(default = 4)]
    pub head_convs: usize,
    /// The classifier's prior probability of an object (torchvision: 0.01).
    #[config(default = 0.01)]
    pub prior_probability: f64,
}

/// 3×3 conv → GroupNorm(32) → ReLU, one stage of a head tower.
#[derive(Module, Debug)]
pub struct ConvGn {
    conv: Conv2d,
    gn: GroupNorm,
}

impl ConvGn {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.gn.forward(conv(&self.conv, x)))
    }
}

/// The feature pyramid: C3–C5 in, P3–P7 out.
#[derive(Module, Debug)]
pub struct Fpn {
    inner: Vec<Conv2d>,
    layer: Vec<Conv2d>,
    p6: Conv2d,
    p7: Conv2d,
}

impl Fpn {
    /// `[C3, C4, C5]` → `[P3, P4, P5, P6, P7]`.
    pub fn forward(&self, c: Vec<Tensor<4>>) -> Vec<Tensor<4>> {
        let n = c.len();
        let mut last = conv(&self.inner[n - 1], c[n - 1].clone());
        let mut out = vec![conv(&self.layer[n - 1], last.clone())];
        for i in (0..n - 1).rev() {
            let lateral = conv(&self.inner[i], c[i].clone());
            let [_, _, h, w] = lateral.dims();
            let up = interpolate(
                last,
                InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([h, w]),
            );
            last = lateral + up;
            out.insert(0, conv(&self.layer[i], last.clone()));
        }
        // LastLevelP6P7 with in = out channels: from P5.
        let p6 = conv(&self.p6, out[n - 1].clone());
        let p7 = conv(&self.p7, relu(p6.clone()));
        out.push(p6);
        out.push(p7);
        out
    }
}

/// The classification and regression heads, shared over the levels.
#[derive(Module, Debug)]
pub struct FcosHead {
    cls_tower: Vec<ConvGn>,
    cls_logits: Conv2d,
    reg_tower: Vec<ConvGn>,
    bbox_reg: Conv2d,
    bbox_ctrness: Conv2d,
}

/// The raw outputs of [`Fcos::forward`], every level's locations concatenated (P3 first, row-major
/// within a level).
#[derive(Debug, Clone)]
pub struct FcosOutput {
    /// `[N, L, classes]` class logits.
    pub cls_logits: Tensor<3>,
    /// `[N, L, 4]` distances to the box's left, top, right and bottom edges, over the stride.
    pub bbox_regression: Tensor<3>,
    /// `[N, L, 1]` centre-ness logits.
    pub bbox_ctrness: Tensor<3>,
    /// `[H, W]` of each level, P3 → P7.
    pub level_sizes: Vec<[usize; 2]>,
}

/// torchvision's FCOS post-processing settings (`FCOS(...)`'s keyword arguments).
#[derive(Config, Debug, PartialEq)]
pub struct FcosPostprocess {
    /// Locations scoring `√(σ(class) · σ(centre-ness))` at or below this are dropped.
    #[config(default = 0.2)]
    pub score_thresh: f64,
    /// IoU above which a lower-scoring box of the same class is suppressed.
    #[config(default = 0.6)]
    pub nms_thresh: f64,
    /// Detections kept per image, best first.
    #[config(default = 100)]
    pub detections_per_img: usize,
    /// Best (location, class) pairs kept per level before NMS.
    #[config(default = 1000)]
    pub topk_candidates: usize,
}

/// torchvision's `AnchorGenerator` for FCOS: at level `l` (size `8·2^l`, stride `image / level`,
/// integer division), location `(y, x)` has the box `[x·sx − s/2, y·sy − s/2, x·sx + s/2, y·sy +
/// s/2]` — centred on the cell's corner, as torchvision's are.
pub fn fcos_anchors(padded: [usize; 2], level_sizes: &[[usize; 2]]) -> Vec<[f32; 4]> {
    let mut out = Vec::new();
    for (l, &[h, w]) in level_sizes.iter().enumerate() {
        let half = (8u32 << l) as f32 / 2.0;
        let (sy, sx) = ((padded[0] / h.max(1)) as f32, (padded[1] / w.max(1)) as f32);
        for y in 0..h {
            for x in 0..w {
                let (cx, cy) = (x as f32 * sx, y as f32 * sy);
                out.push([cx - half, cy - half, cx + half, cy + half]);
            }
        }
    }
    out
}

/// `BoxLinearCoder(normalize_by_size=True).decode`: distances in anchor sizes → `[x1, y1, x2, y2]`.
fn decode(rel: [f32; 4], anchor: [f32; 4]) -> [f32; 4] {
    let cx = 0.5 * (anchor[0] + anchor[2]);
    let cy = 0.5 * (anchor[1] + anchor[3]);
    let (w, h) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
    [cx - rel[0] * w, cy - rel[1] * h, cx + rel[2] * w, cy + rel[3] * h]
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl FcosOutput {
    /// torchvision's `FCOS.postprocess_detections` and `GeneralizedRCNNTransform.postprocess`:
    /// per image and level, scores above the threshold, the best `topk_candidates`, boxes decoded
    /// from the anchors and clipped to the image's resized size (`image_sizes[i]`, `[H, W]`),
    /// batched NMS, the best `detections_per_img`, then boxes scaled to `original_sizes[i]`.
    /// `padded` is the batch's `[H, W]`.
    pub fn detections(
        &self,
        padded: [usize; 2],
        image_sizes: &[[usize; 2]],
        original_sizes: &[[usize; 2]],
        cfg: &FcosPostprocess,
    ) -> Vec<Vec<Detection>> {
        let [n, locations, classes] = self.cls_logits.dims();
        let anchors = fcos_anchors(padded, &self.level_sizes);
        let floats = |t: &Tensor<3>| t.clone().into_data().try_into_vec_as::<f32>().unwrap_or_default();
        let (cls, reg, ctr) = (
            floats(&self.cls_logits),
            floats(&self.bbox_regression),
            floats(&self.bbox_ctrness),
        );
        let mut out = Vec::with_capacity(n);
        for (i, (&[h, w], &[oh, ow])) in image_sizes.iter().zip(original_sizes).enumerate().take(n) {
            let mut candidates: Vec<crate::boxes::ScoredBox> = Vec::new();
            let mut start = 0;
            for &[lh, lw] in &self.level_sizes {
                let end = start + lh * lw;
                // (score, location, class) above the threshold, in torch's flattened order.
                let mut kept: Vec<(f32, usize, usize)> = Vec::new();
                for loc in start..end {
                    let c = sigmoid(ctr[i * locations + loc]);
                    for k in 0..classes {
                        let score = (sigmoid(cls[(i * locations + loc) * classes + k]) * c).sqrt();
                        if f64::from(score) > cfg.score_thresh {
                            kept.push((score, loc, k));
                        }
                    }
                }
                kept.sort_by(|a, b| b.0.total_cmp(&a.0));
                kept.truncate(cfg.topk_candidates);
                for (score, loc, k) in kept {
                    let r = (i * locations + loc) * 4;
                    let b = decode([reg[r], reg[r + 1], reg[r + 2], reg[r + 3]], anchors[loc]);
                    let clip = |v: f32, hi: usize| v.clamp(0.0, hi as f32);
                    candidates.push(crate::boxes::ScoredBox {
                        bbox: [clip(b[0], w), clip(b[1], h), clip(b[2], w), clip(b[3], h)],
                        score,
                        label: k as u32,
                    });
                }
                start = end;
            }
            let keep = crate::boxes::batched_nms(&candidates, cfg.nms_thresh);
            let (rh, rw) = (oh as f32 / h as f32, ow as f32 / w as f32);
            out.push(
                keep.into_iter()
                    .take(cfg.detections_per_img)
                    .map(|k| {
                        let c = candidates[k];
                        Detection {
                            bbox: [c.bbox[0] * rw, c.bbox[1] * rh, c.bbox[2] * rw, c.bbox[3] * rh],
                            score: c.score,
                            label: c.label,
                        }
                    })
                    .collect(),
            );
        }
        out
    }
}

/// FCOS's three losses, each summed and divided by the batch's foreground locations (at least 1),
/// as torchvision's `FCOSHead.compute_loss` returns them.
#[derive(Debug, Clone)]
pub struct FcosLoss {
    /// Sigmoid focal loss (α 0.25, γ 2) of the class logits against one-hot targets.
    pub classification: Tensor<1>,
    /// GIoU loss of the decoded boxes of foreground locations.
    pub bbox_regression: Tensor<1>,
    /// Binary cross-entropy of the centre-ness logits of foreground locations.
    pub bbox_ctrness: Tensor<1>,
    /// Foreground locations in the batch.
    pub foreground: usize,
}

impl FcosLoss {
    /// The sum torchvision's reference script trains on.
    pub fn total(&self) -> Tensor<1> {
        self.classification.clone() + self.bbox_regression.clone() + self.bbox_ctrness.clone()
    }
}

/// torchvision's `FCOS.compute_loss` matching: for each anchor, the index of its ground-truth box
/// or `None`. A location matches a box when it lies inside it, within 1.5 anchor sizes of its centre
/// (centre sampling), and its largest distance to the box's sides falls in its level's range
/// (`(4s, 8s)` for anchor size `s`, from 0 at P3 and without bound at P7); of several boxes, the
/// smallest wins.
pub fn fcos_match(
    anchors: &[[f32; 4]],
    level_sizes: &[[usize; 2]],
    boxes: &[[f32; 4]],
) -> Vec<Option<usize>> {
    let first_level = level_sizes.first().map_or(0, |[h, w]| h * w);
    let last_level = level_sizes.last().map_or(0, |[h, w]| h * w);
    anchors
        .iter()
        .enumerate()
        .map(|(a, anchor)| {
            let (x, y) = ((anchor[0] + anchor[2]) / 2.0, (anchor[1] + anchor[3]) / 2.0);
            let size = anchor[2] - anchor[0];
            let lower = if a < first_level { 0.0 } else { size * 4.0 };
            let upper = if a >= anchors.len() - last_level {
                f32::INFINITY
            } else {
                size * 8.0
            };
            let mut best: Option<(f32, usize)> = None;
            for (m, b) in boxes.iter().enumerate() {
                let (gx, gy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                let near = (x - gx).abs().max((y - gy).abs()) < 1.5 * size;
                let d = [x - b[0], y - b[1], b[2] - x, b[3] - y];
                let inside = d.iter().fold(f32::INFINITY, |m, v| m.min(*v)) > 0.0;
                let far = d.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                if near && inside && far > lower && far < upper {
                    // torchvision: max over matches of 1e8 − area; ties go to the first box.
                    let value = 1e8 - (b[2] - b[0]) * (b[3] - b[1]);
                    if best.is_none_or(|(v, _)| value > v) {
                        best = Some((value, m));
                    }
                }
            }
            best.filter(|(v, _)| *v >= 1e-5).map(|(_, m)| m)
        })
        .collect()
}

/// `F.binary_cross_entropy_with_logits(x, t, reduction="none")`, stably.
fn bce_with_logits<const D: usize>(x: Tensor<D>, t: Tensor<D>) -> Tensor<D> {
    relu(x.clone()) - x.clone() * t + (x.abs().neg().exp() + 1.0).log()
}

impl FcosOutput {
    /// torchvision's FCOS training loss for this batch (`padded`: the batch's `[H, W]`; `targets`:
    /// one per image). The matching runs on the CPU; the losses stay on the outputs' graph.
    pub fn loss(&self, padded: [usize; 2], targets: &[BoxTargets]) -> FcosLoss {
        let [n, locations, classes] = self.cls_logits.dims();
        let device = self.cls_logits.device();
        let anchors = fcos_anchors(padded, &self.level_sizes);
        let mut one_hot = vec![0.0f32; n * locations * classes];
        let mut fg_index: Vec<i64> = Vec::new();
        let (mut fg_anchor, mut fg_box, mut fg_ctrness) = (Vec::new(), Vec::new(), Vec::new());
        for (i, t) in targets.iter().enumerate().take(n) {
            let matched = fcos_match(&anchors, &self.level_sizes, &t.boxes);
            for (a, m) in matched.into_iter().enumerate() {
                let Some(m) = m else { continue };
                let label = t.labels.get(m).copied().unwrap_or(0) as usize;
                one_hot[(i * locations + a) * classes + label.min(classes - 1)] = 1.0;
                fg_index.push((i * locations + a) as i64);
                let (anchor, b) = (anchors[a], t.boxes[m]);
                fg_anchor.extend(anchor);
                fg_box.extend(b);
                // BoxLinearCoder.encode: distances over the anchor's size, then centre-ness.
                let (cx, cy) = (0.5 * (anchor[0] + anchor[2]), 0.5 * (anchor[1] + anchor[3]));
                let (w, h) = (anchor[2] - anchor[0], anchor[3] - anchor[1]);
                let [l, tp, r, bt] = [(cx - b[0]) / w, (cy - b[1]) / h, (b[2] - cx) / w, (b[3] - cy) / h];
                fg_ctrness.push(((l.min(r) / l.max(r)) * (tp.min(bt) / tp.max(bt))).sqrt());
            }
        }
        let foreground = fg_index.len();
        let norm = foreground.max(1) as f32;

        let targets_t = Tensor::<3>::from_data(TensorData::new(one_hot, [n, locations, classes]), &device);
        let x = self.cls_logits.clone();
        let p = burn::tensor::activation::sigmoid(x.clone());
        let ce = bce_with_logits(x, targets_t.clone());
        let p_t = p.clone() * targets_t.clone() + (p.neg() + 1.0) * (targets_t.clone().neg() + 1.0);
        let alpha_t = targets_t.clone() * 0.25 + (targets_t.neg() + 1.0) * 0.75;
        let focal = ce * (p_t.neg() + 1.0).powi_scalar(2) * alpha_t;
        let classification = focal.sum() / norm;

        if foreground == 0 {
            let zero = self.bbox_regression.clone().sum() * 0.0;
            return FcosLoss {
                classification,
                bbox_regression: zero.clone(),
                bbox_ctrness: self.bbox_ctrness.clone().sum() * 0.0,
                foreground,
            };
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(fg_index, [foreground]), &device);
        let rel = self
            .bbox_regression
            .clone()
            .reshape([n * locations, 4])
            .select(0, index.clone());
        let anchor = Tensor::<2>::from_data(TensorData::new(fg_anchor, [foreground, 4]), &device);
        let gt = Tensor::<2>::from_data(TensorData::new(fg_box, [foreground, 4]), &device);
        let col = |t: &Tensor<2>, c: usize| t.clone().slice([0..foreground, c..c + 1]);
        // BoxLinearCoder.decode on the foreground locations.
        let (cx, cy) = (
            (col(&anchor, 0) + col(&anchor, 2)) * 0.5,
            (col(&anchor, 1) + col(&anchor, 3)) * 0.5,
        );
        let (w, h) = (
            col(&anchor, 2) - col(&anchor, 0),
            col(&anchor, 3) - col(&anchor, 1),
        );
        let x1 = cx.clone() - col(&rel, 0) * w.clone();
        let y1 = cy.clone() - col(&rel, 1) * h.clone();
        let x2 = cx + col(&rel, 2) * w;
        let y2 = cy + col(&rel, 3) * h;
        // torchvision's generalized_box_iou_loss (eps 1e-7).
        let (gx1, gy1, gx2, gy2) = (col(&gt, 0), col(&gt, 1), col(&gt, 2), col(&gt, 3));
        let iw = (x2.clone().min_pair(gx2.clone()) - x1.clone().max_pair(gx1.clone())).clamp_min(0.0);
        let ih = (y2.clone().min_pair(gy2.clone()) - y1.clone().max_pair(gy1.clone())).clamp_min(0.0);
        let inter = iw * ih;
        let union = (x2.clone() - x1.clone()) * (y2.clone() - y1.clone())
            + (gx2.clone() - gx1.clone()) * (gy2.clone() - gy1.clone())
            - inter.clone();
        let iou = inter / (union.clone() + 1e-7);
        let area_c = (x2.max_pair(gx2) - x1.min_pair(gx1)) * (y2.max_pair(gy2) - y1.min_pair(gy1));
        let giou = iou - (area_c.clone() - union) / (area_c + 1e-7);
        let bbox_regression = (giou.neg() + 1.0).sum() / norm;

        let ctr_logits = self
            .bbox_ctrness
            .clone()
            .reshape([n * locations])
            .select(0, index);
        let ctr_targets = Tensor::<1>::from_data(TensorData::new(fg_ctrness, [foreground]), &device);
        let bbox_ctrness = bce_with_logits(ctr_logits, ctr_targets).sum() / norm;
        FcosLoss {
            classification,
            bbox_regression,
            bbox_ctrness,
            foreground,
        }
    }
}

/// `[N, C, H, W]` → `[N, H·W, C]` (torchvision's view/permute/reshape with one anchor).
fn flatten_level(x: Tensor<4>) -> Tensor<3> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w]).swap_dims(1, 2)
}

/// FCOS; see the [module docs](self).
#[derive(Module, Debug)]
pub struct Fcos {
    body: ResNetBody,
    fpn: Fpn,
    head: FcosHead,
    #[module(skip)]
    num_classes: usize,
    #[module(skip)]
    postprocess: FcosPostprocess,
}

impl FcosConfig {
    /// Builds the model.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidConfig`] for a CIFAR backbone, fewer than one class, channels that
    /// GroupNorm(32) cannot split, or a prior outside (0, 1).
    pub fn init(&self, device: &Device) -> Result<Fcos, ModelError> {
        if !matches!(
            self.backbone,
            ResNetKind::ResNet18 | ResNetKind::ResNet34 | ResNetKind::ResNet50
        ) {
            return Err(ModelError::InvalidConfig {
                field: "backbone",
                value: self.backbone.id().to_string(),
                reason: "FCOS takes resnet18, resnet34 or resnet50",
            });
        }
        if self.num_classes == 0 {
            return Err(ModelError::InvalidConfig {
                field: "num_classes",
                value: "0".into(),
                reason: "a detector needs at least one class",
            });
        }
        if self.channels == 0 || !self.channels.is_multiple_of(32) {
            return Err(ModelError::InvalidConfig {
                field: "channels",
                value: self.channels.to_string(),
                reason: "GroupNorm(32) needs a positive multiple of 32",
            });
        }
        if !(self.prior_probability > 0.0 && self.prior_probability < 1.0) {
            return Err(ModelError::InvalidConfig {
                field: "prior_probability",
                value: self.prior_probability.to_string(),
                reason: "must be strictly between 0 and 1",
            });
        }
        let body = ResNetConfig::new(self.backbone).init(device)?.into_body();
        let c = self.channels;
        let fpn_conv = |c_in: usize, k: usize, stride: usize| {
            let pad = k / 2;
            let mut conv = Conv2dConfig::new([c_in, c], [k, k])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .with_initializer(Initializer::KaimingUniform {
                    gain: 1.0,
                    fan_out_only: false,
                })
                .init(device);
            conv.bias = Some(Initializer::Zeros.init([c], device));
            conv
        };
        let channels = body.stage_channels();
        let inputs = &channels[1..];
        let fpn = Fpn {
            inner: inputs.iter().map(|&ci| fpn_conv(ci, 1, 1)).collect(),
            layer: inputs.iter().map(|_| fpn_conv(c, 3, 1)).collect(),
            p6: fpn_conv(c, 3, 2),
            p7: fpn_conv(c, 3, 2),
        };
        let head_conv = |c_out: usize, bias: f64| {
            let mut conv = Conv2dConfig::new([c, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
                .init(device);
            conv.bias = Some(Initializer::Constant { value: bias }.init([c_out], device));
            conv
        };
        let tower = || {
            (0..self.head_convs)
                .map(|_| ConvGn {
                    conv: head_conv(c, 0.0),
                    gn: GroupNormConfig::new(32, c).init(device),
                })
                .collect::<Vec<_>>()
        };
        let prior = self.prior_probability;
        let head = FcosHead {
            cls_tower: tower(),
            cls_logits: head_conv(self.num_classes, -((1.0 - prior) / prior).ln()),
            reg_tower: tower(),
            bbox_reg: head_conv(4, 0.0),
            bbox_ctrness: head_conv(1, 0.0),
        };
        Ok(Fcos {
            body,
            fpn,
            head,
            num_classes: self.num_classes,
            postprocess: FcosPostprocess::new(),
        })
    }
}

impl Fcos {
    /// The pyramid's levels P3–P7 for a `[N, 3, H, W]` batch.
    pub fn features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let stages = self.body.forward_stages(x);
        self.fpn.forward(stages.into_iter().skip(1).collect())
    }

    /// Class logits, box distances and centre-ness at every location of every level.
    pub fn forward(&self, x: Tensor<4>) -> FcosOutput {
        let features = self.features(x);
        let level_sizes = features
            .iter()
            .map(|f| {
                let [_, _, h, w] = f.dims();
                [h, w]
            })
            .collect();
        let (mut cls, mut reg, mut ctr) = (Vec::new(), Vec::new(), Vec::new());
        for f in features {
            let t = self.head.cls_tower.iter().fold(f.clone(), |h, b| b.forward(h));
            cls.push(flatten_level(conv(&self.head.cls_logits, t)));
            let t = self.head.reg_tower.iter().fold(f, |h, b| b.forward(h));
            reg.push(flatten_level(relu(conv(&self.head.bbox_reg, t.clone()))));
            ctr.push(flatten_level(conv(&self.head.bbox_ctrness, t)));
        }
        FcosOutput {
            cls_logits: Tensor::cat(cls, 1),
            bbox_regression: Tensor::cat(reg, 1),
            bbox_ctrness: Tensor::cat(ctr, 1),
            level_sizes,
        }
    }

    /// Object classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The post-processing [`Detector::detect`](crate::detector::Detector::detect) applies
    /// (torchvision's defaults unless set).
    pub fn postprocess(&self) -> &FcosPostprocess {
        &self.postprocess
    }

    /// The model with other post-processing settings.
    pub fn with_postprocess(mut self, postprocess: FcosPostprocess) -> Self {
        self.postprocess = postprocess;
        self
    }

    /// torchvision's `FCOS` state-dict names → this model's parameter paths, as `(regex,
    /// replacement)` pairs.
    pub fn torchvision_key_map(&self) -> Vec<(String, String)> {
        let mut pairs = self.body.torchvision_prefixes("backbone.body.", "body.");
        for i in 0..self.fpn.inner.len() {
            pairs.push((
                format!("backbone.fpn.inner_blocks.{i}.0."),
                format!("fpn.inner.{i}."),
            ));
            pairs.push((
                format!("backbone.fpn.layer_blocks.{i}.0."),
                format!("fpn.layer.{i}."),
            ));
        }
        for p in ["p6", "p7"] {
            pairs.push((format!("backbone.fpn.extra_blocks.{p}."), format!("fpn.{p}.")));
        }
        for (tv, kiln) in [
            ("classification_head", "cls_tower"),
            ("regression_head", "reg_tower"),
        ] {
            for j in 0..self.head.cls_tower.len() {
                pairs.push((
                    format!("head.{tv}.conv.{}.", 3 * j),
                    format!("head.{kiln}.{j}.conv."),
                ));
                pairs.push((
                    format!("head.{tv}.conv.{}.", 3 * j + 1),
                    format!("head.{kiln}.{j}.gn."),
                ));
            }
        }
        for (tv, kiln) in [
            ("classification_head.cls_logits.", "cls_logits."),
            ("regression_head.bbox_reg.", "bbox_reg."),
            ("regression_head.bbox_ctrness.", "bbox_ctrness."),
        ] {
            pairs.push((format!("head.{tv}"), format!("head.{kiln}")));
        }
        crate::import::prefix_map(pairs, false)
    }
}

/// `[model] name = "fcos"`: FCOS as a registered detector ([`crate::detector`]), with torchvision's
/// `fcos_resnet50_fpn` settings by default. `min_size` / `max_size` are
/// `GeneralizedRCNNTransform`'s (every image is resized so its shorter side is `min_size` and its
/// longer side at most `max_size`); the rest are `FCOS(...)`'s keyword arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcosArch {
    /// The backbone: `resnet18`, `resnet34` or `resnet50`.
    pub backbone: ResNetKind,
    /// Channels of the pyramid and the heads.
    pub channels: usize,
    /// Convolutions in each head tower.
    pub head_convs: usize,
    /// Shorter image side after the resize.
    pub min_size: usize,
    /// Longest image side after the resize.
    pub max_size: usize,
    /// Detections scoring at or below this are dropped.
    pub score_thresh: f64,
    /// IoU above which a lower-scoring box of the same class is suppressed.
    pub nms_thresh: f64,
    /// Detections kept per image.
    pub detections_per_img: usize,
    /// Candidates kept per pyramid level before NMS.
    pub topk_candidates: usize,
}

impl Default for FcosArch {
    fn default() -> Self {
        let post = FcosPostprocess::new();
        Self {
            backbone: ResNetKind::ResNet50,
            channels: 256,
            head_convs: 4,
            min_size: 800,
            max_size: 1333,
            score_thresh: post.score_thresh,
            nms_thresh: post.nms_thresh,
            detections_per_img: post.detections_per_img,
            topk_candidates: post.topk_candidates,
        }
    }
}

impl FcosArch {
    /// The post-processing settings.
    pub fn postprocess(&self) -> FcosPostprocess {
        FcosPostprocess {
            score_thresh: self.score_thresh,
            nms_thresh: self.nms_thresh,
            detections_per_img: self.detections_per_img,
            topk_candidates: self.topk_candidates,
        }
    }
}

impl crate::detector::DetectorArch for FcosArch {
    type Model = Fcos;

    fn presets() -> Vec<crate::zoo::Preset<Self>> {
        vec![crate::zoo::Preset {
            name: "fcos",
            about: "FCOS, ResNet-FPN P3-P7 (torchvision's fcos_resnet50_fpn; `backbone` 18/34/50)",
            config: Self::default(),
        }]
    }

    fn build(&self, num_classes: usize, device: &Device) -> Result<Fcos, ModelError> {
        let bad = |field, value: String, reason| Err(ModelError::InvalidConfig { field, value, reason });
        if self.min_size == 0 || self.max_size < self.min_size {
            return bad(
                "min_size",
                format!("{} (max_size {})", self.min_size, self.max_size),
                "must be at least 1 and at most max_size",
            );
        }
        for (field, v) in [
            ("score_thresh", self.score_thresh),
            ("nms_thresh", self.nms_thresh),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, v.to_string(), "must be in [0, 1]");
            }
        }
        if self.detections_per_img == 0 || self.topk_candidates == 0 {
            return bad(
                "detections_per_img",
                format!(
                    "{} (topk_candidates {})",
                    self.detections_per_img, self.topk_candidates
                ),
                "both must be at least 1",
            );
        }
        Ok(FcosConfig::new(self.backbone, num_classes)
            .with_channels(self.channels)
            .with_head_convs(self.head_convs)
            .init(device)?
            .with_postprocess(self.postprocess()))
    }

    fn id(&self) -> String {
        "fcos".into()
    }

    fn describe(&self, num_classes: usize) -> String {
        format!(
            "FCOS({} FPN, {} channels, images {}..{} px -> {num_classes} classes)",
            self.backbone.name(),
            self.channels,
            self.min_size,
            self.max_size
        )
    }

    fn input_sizes(&self) -> [usize; 2] {
        [self.min_size, self.max_size]
    }
}

impl crate::detector::Detector for Fcos {
    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn loss(&self, images: Tensor<4>, targets: &[BoxTargets]) -> Tensor<1> {
        let [_, _, h, w] = images.dims();
        self.forward(images).loss([h, w], targets).total()
    }

    fn detect(
        &self,
        images: Tensor<4>,
        targets: Option<&[BoxTargets]>,
        image_sizes: &[[usize; 2]],
        original_sizes: &[[usize; 2]],
    ) -> (Option<Tensor<1>>, Vec<Vec<Detection>>) {
        let [_, _, h, w] = images.dims();
        let out = self.forward(images);
        let loss = targets.map(|t| out.loss([h, w], t).total());
        (
            loss,
            out.detections([h, w], image_sizes, original_sizes, &self.postprocess),
        )
    }

    fn torchvision_key_map(&self) -> Vec<(String, String)> {
        Fcos::torchvision_key_map(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_strides_8_to_128_and_outputs_line_up() {
        let device = Device::flex();
        let model = FcosConfig::new(ResNetKind::ResNet18, 3)
            .with_channels(32)
            .with_head_convs(1)
            .init(&device)
            .unwrap();
        let out = model.forward(Tensor::zeros([2, 3, 64, 96], &device));
        assert_eq!(out.level_sizes, vec![[8, 12], [4, 6], [2, 3], [1, 2], [1, 1]]);
        let locations = 96 + 24 + 6 + 2 + 1;
        assert_eq!(out.cls_logits.dims(), [2, locations, 3]);
        assert_eq!(out.bbox_regression.dims(), [2, locations, 4]);
        assert_eq!(out.bbox_ctrness.dims(), [2, locations, 1]);
        // On a blank image the class logits start near the prior's bias, −log(99) ≈ −4.595.
        let first: f32 = out.cls_logits.slice([0..1, 0..1, 0..1]).into_scalar();
        assert!((first + 4.595).abs() < 0.5, "{first}");
        for bad in [
            FcosConfig::new(ResNetKind::Cifar20, 3),
            FcosConfig::new(ResNetKind::ResNet18, 0),
            FcosConfig::new(ResNetKind::ResNet18, 3).with_channels(48),
            FcosConfig::new(ResNetKind::ResNet18, 3).with_prior_probability(1.0),
        ] {
            assert!(bad.init(&device).is_err(), "{bad:?}");
        }
    }

    /// The loss is differentiable end to end: every part reaches the head's and the backbone's
    /// weights, and an image without boxes trains only the classifier (towards background).
    #[test]
    fn the_loss_reaches_every_branch() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        let model = FcosConfig::new(ResNetKind::ResNet18, 2)
            .with_channels(32)
            .with_head_convs(1)
            .init(&plain)
            .unwrap()
            .fork(&ad)
            .train();
        let x = Tensor::<4>::random([2, 3, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), &ad);
        let out = model.forward(x);
        let targets = [
            BoxTargets {
                boxes: vec![[8.0, 8.0, 40.0, 44.0]],
                labels: vec![1],
            },
            BoxTargets::default(),
        ];
        let loss = out.loss([64, 64], &targets);
        assert!(loss.foreground > 0);
        let total: f32 = loss.total().clone().inner().into_scalar();
        assert!(total.is_finite() && total > 0.0, "{total}");
        let grads = loss.total().backward();
        assert!(model.head.cls_logits.weight.grad(&grads).is_some());
        assert!(model.head.bbox_reg.weight.grad(&grads).is_some());
        assert!(model.head.bbox_ctrness.weight.grad(&grads).is_some());
        assert!(model.fpn.p7.weight.grad(&grads).is_some());

        let empty = model
            .forward(Tensor::<4>::zeros([1, 3, 64, 64], &ad))
            .loss([64, 64], &[BoxTargets::default()]);
        assert_eq!(empty.foreground, 0);
        let reg: f32 = empty.bbox_regression.clone().inner().into_scalar();
        assert_eq!(reg, 0.0);
        let grads = empty.total().backward();
        assert!(model.head.cls_logits.weight.grad(&grads).is_some());
    }
}
