//! Automatic augmentation policies with torchvision's v2 semantics: [`TrivialAugmentWide`],
//! [`RandAugment`], [`AutoAugment`] (ImageNet, CIFAR-10 and SVHN policies) and [`AugMix`], on u8
//! images, built from [`crate::pointwise`] and [`crate::affine`].
//!
//! Each policy draws operations and magnitudes from its table (torchvision's
//! `_AUGMENTATION_SPACE`, the magnitudes as float32 `torch.linspace` values) with the per-sample
//! generator, so a batch does not depend on the worker count; [`apply_op`] applies one as
//! torchvision's `_apply_image_or_video_transform` does (nearest sampling, zero fill). The draws
//! are kiln's own (its generator is not torch's); given the same draw the image is the same to the
//! bit (`tests/pointwise_vs_torchvision.rs`).
//!
//! ```
//! use kiln_data::{Bgr, Hwc, Image, SampleRng};
//! use kiln_transforms::autoaugment::{AugOp, TrivialAugmentWide, apply_op};
//!
//! let img = Image::<Hwc, Bgr>::new(8, 8, (0..192).map(|v| v as u8).collect())?;
//! let out = TrivialAugmentWide::default().apply(&img, &mut SampleRng::new(3));
//! assert_eq!((out.height(), out.width()), (8, 8));
//! assert_eq!(apply_op(&img, AugOp::Invert, 0.0).as_slice()[0], 255);
//! # Ok::<(), kiln_data::DataError>(())
//! ```

use kiln_data::{ColorOrder, Hwc, Image, SampleRng};
use serde::{Deserialize, Serialize};

use crate::affine::{self, Interpolation, Sampling};
use crate::pointwise;

/// One operation of the policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AugOp {
    /// Unchanged.
    Identity,
    /// [`affine::shear_x`].
    ShearX,
    /// [`affine::shear_y`].
    ShearY,
    /// [`affine::translate_x`] by `int(magnitude)` pixels.
    TranslateX,
    /// [`affine::translate_y`].
    TranslateY,
    /// [`affine::rotate`] by `magnitude` degrees.
    Rotate,
    /// [`pointwise::brightness`] by `1 + magnitude`.
    Brightness,
    /// [`pointwise::color`] by `1 + magnitude`.
    Color,
    /// [`pointwise::contrast`] by `1 + magnitude`.
    Contrast,
    /// [`pointwise::sharpness`] by `1 + magnitude`.
    Sharpness,
    /// [`pointwise::posterize`] to `int(magnitude)` bits.
    Posterize,
    /// [`pointwise::solarize`] at `255·magnitude`.
    Solarize,
    /// [`pointwise::autocontrast`].
    AutoContrast,
    /// [`pointwise::equalize`].
    Equalize,
    /// [`pointwise::invert`].
    Invert,
}

/// Applies `op` with `magnitude` as torchvision v2's `_apply_image_or_video_transform` does on a
/// uint8 image (nearest sampling, zero fill).
pub fn apply_op<C: ColorOrder>(img: &Image<Hwc, C>, op: AugOp, magnitude: f64) -> Image<Hwc, C> {
    apply_op_with(img, op, magnitude, &Sampling::default())
}

/// [`apply_op`] with the geometric operations sampling as `sampling` says.
pub fn apply_op_with<C: ColorOrder>(
    img: &Image<Hwc, C>,
    op: AugOp,
    magnitude: f64,
    sampling: &Sampling,
) -> Image<Hwc, C> {
    match op {
        AugOp::Identity => img.clone(),
        AugOp::ShearX => affine::shear_x_with(img, magnitude, sampling),
        AugOp::ShearY => affine::shear_y_with(img, magnitude, sampling),
        AugOp::TranslateX => affine::translate_x_with(img, magnitude as i64, sampling),
        AugOp::TranslateY => affine::translate_y_with(img, magnitude as i64, sampling),
        AugOp::Rotate => affine::rotate_with(img, magnitude, sampling),
        AugOp::Brightness => pointwise::brightness(img, (1.0 + magnitude) as f32),
        AugOp::Color => pointwise::color(img, 1.0 + magnitude),
        AugOp::Contrast => pointwise::contrast(img, 1.0 + magnitude),
        AugOp::Sharpness => pointwise::sharpness(img, 1.0 + magnitude),
        AugOp::Posterize => pointwise::posterize(img, magnitude.clamp(0.0, 8.0) as u8),
        AugOp::Solarize => pointwise::solarize(img, 255.0 * magnitude),
        AugOp::AutoContrast => pointwise::autocontrast(img),
        AugOp::Equalize => pointwise::equalize(img),
        AugOp::Invert => pointwise::invert(img),
    }
}

/// `torch.linspace(start, end, steps)` in float32, as its CPU kernel computes it (from the start
/// for the first half, from the end for the second, each value rounded once), widened to f64 as
/// Python's `float()` does.
pub fn linspace(start: f32, end: f32, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![f64::from(start)];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            // One rounding (the vectorised kernel's fused multiply-add): exact in f64, then f32.
            let v = if i < half {
                f64::from(start) + f64::from(step) * i as f64
            } else {
                f64::from(end) - f64::from(step) * (steps - i - 1) as f64
            };
            f64::from(v as f32)
        })
        .collect()
}

/// Posterize's bits: `(base − arange(n) / ((n − 1)/d)).round().int()` (float32, half to even).
fn posterize_bins(bins: usize, base: f32, divisor: f64) -> Vec<f64> {
    let per = ((bins as f64 - 1.0) / divisor) as f32;
    (0..bins)
        .map(|i| f64::from((base - i as f32 / per).round_ties_even()))
        .collect()
}

/// A policy's table: each operation, its magnitudes (`None`: it takes none) and whether the
/// magnitude's sign is drawn.
pub type Space = Vec<(AugOp, Option<Vec<f64>>, bool)>;

/// TrivialAugmentWide's table for `bins` magnitudes (torchvision's `_AUGMENTATION_SPACE`).
pub fn trivial_augment_wide_space(bins: usize) -> Space {
    use AugOp::*;
    let l = |end: f32| Some(linspace(0.0, end, bins));
    vec![
        (Identity, None, false),
        (ShearX, l(0.99), true),
        (ShearY, l(0.99), true),
        (TranslateX, l(32.0), true),
        (TranslateY, l(32.0), true),
        (Rotate, l(135.0), true),
        (Brightness, l(0.99), true),
        (Color, l(0.99), true),
        (Contrast, l(0.99), true),
        (Sharpness, l(0.99), true),
        (Posterize, Some(posterize_bins(bins, 8.0, 6.0)), false),
        (Solarize, Some(linspace(1.0, 0.0, bins)), false),
        (AutoContrast, None, false),
        (Equalize, None, false),
    ]
}

/// RandAugment's table for `bins` magnitudes on `height × width` images.
pub fn rand_augment_space(bins: usize, height: usize, width: usize) -> Space {
    use AugOp::*;
    let l = |end: f32| Some(linspace(0.0, end, bins));
    // torchvision: 150.0 / 331.0 * width, in double, then float32 for linspace's end.
    let tx = (150.0 / 331.0 * width as f64) as f32;
    let ty = (150.0 / 331.0 * height as f64) as f32;
    vec![
        (Identity, None, false),
        (ShearX, l(0.3), true),
        (ShearY, l(0.3), true),
        (TranslateX, l(tx), true),
        (TranslateY, l(ty), true),
        (Rotate, l(30.0), true),
        (Brightness, l(0.9), true),
        (Color, l(0.9), true),
        (Contrast, l(0.9), true),
        (Sharpness, l(0.9), true),
        (Posterize, Some(posterize_bins(bins, 8.0, 4.0)), false),
        (Solarize, Some(linspace(1.0, 0.0, bins)), false),
        (AutoContrast, None, false),
        (Equalize, None, false),
    ]
}

/// The magnitude of `entry` at `bin`, with its sign drawn when the table says so (torchvision:
/// negative when `rand() <= 0.5`).
fn magnitude(entry: &(AugOp, Option<Vec<f64>>, bool), bin: usize, rng: &mut SampleRng) -> f64 {
    match &entry.1 {
        Some(values) => {
            let m = values[bin.min(values.len() - 1)];
            if entry.2 && rng.uniform() <= 0.5 { -m } else { m }
        }
        None => 0.0,
    }
}

/// torchvision's `TrivialAugmentWide`: one operation, uniformly, at a uniform magnitude bin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrivialAugmentWide {
    /// Magnitude bins (torchvision's 31).
    pub num_magnitude_bins: usize,
}

impl Default for TrivialAugmentWide {
    fn default() -> Self {
        Self {
            num_magnitude_bins: 31,
        }
    }
}

impl TrivialAugmentWide {
    /// The operation and magnitude drawn from `rng`.
    pub fn sample(&self, rng: &mut SampleRng) -> (AugOp, f64) {
        let space = trivial_augment_wide_space(self.num_magnitude_bins.max(1));
        let entry = &space[rng.below(space.len() as u64) as usize];
        let bin = rng.below(self.num_magnitude_bins.max(1) as u64) as usize;
        (entry.0, magnitude(entry, bin, rng))
    }

    /// One drawn operation applied to `img`.
    pub fn apply<C: ColorOrder>(&self, img: &Image<Hwc, C>, rng: &mut SampleRng) -> Image<Hwc, C> {
        let (op, m) = self.sample(rng);
        apply_op(img, op, m)
    }
}

/// torchvision's `RandAugment`: `num_ops` operations drawn uniformly (with repetition), each at
/// the fixed `magnitude` bin.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RandAugment {
    /// Operations per image (torchvision's 2).
    pub num_ops: usize,
    /// The magnitude bin (torchvision's 9).
    pub magnitude: usize,
    /// Magnitude bins (torchvision's 31).
    pub num_magnitude_bins: usize,
}

impl Default for RandAugment {
    fn default() -> Self {
        Self {
            num_ops: 2,
            magnitude: 9,
            num_magnitude_bins: 31,
        }
    }
}

impl RandAugment {
    /// The operations and magnitudes drawn from `rng` for an image of `height × width`.
    pub fn sample(&self, height: usize, width: usize, rng: &mut SampleRng) -> Vec<(AugOp, f64)> {
        let space = rand_augment_space(self.num_magnitude_bins.max(1), height, width);
        (0..self.num_ops)
            .map(|_| {
                let entry = &space[rng.below(space.len() as u64) as usize];
                (entry.0, magnitude(entry, self.magnitude, rng))
            })
            .collect()
    }

    /// The drawn operations applied to `img` in order.
    pub fn apply<C: ColorOrder>(&self, img: &Image<Hwc, C>, rng: &mut SampleRng) -> Image<Hwc, C> {
        let ops = self.sample(img.height(), img.width(), rng);
        ops.into_iter()
            .fold(img.clone(), |cur, (op, m)| apply_op(&cur, op, m))
    }
}

/// AutoAugment's table (10 bins): RandAugment's operations without identity, plus invert.
pub fn auto_augment_space(height: usize, width: usize) -> Space {
    let mut space: Space = rand_augment_space(10, height, width)
        .into_iter()
        .filter(|e| e.0 != AugOp::Identity)
        .collect();
    space.push((AugOp::Invert, None, false));
    space
}

/// Two (operation, probability, magnitude bin) steps.
type SubPolicy = [(AugOp, f64, Option<usize>); 2];

/// torchvision's `AutoAugmentPolicy.IMAGENET` sub-policies: (operation, probability, magnitude bin).
const IMAGENET: &[SubPolicy] = &[
    [(AugOp::Posterize, 0.4, Some(8)), (AugOp::Rotate, 0.6, Some(9))],
    [(AugOp::Solarize, 0.6, Some(5)), (AugOp::AutoContrast, 0.6, None)],
    [(AugOp::Equalize, 0.8, None), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Posterize, 0.6, Some(7)), (AugOp::Posterize, 0.6, Some(6))],
    [(AugOp::Equalize, 0.4, None), (AugOp::Solarize, 0.2, Some(4))],
    [(AugOp::Equalize, 0.4, None), (AugOp::Rotate, 0.8, Some(8))],
    [(AugOp::Solarize, 0.6, Some(3)), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Posterize, 0.8, Some(5)), (AugOp::Equalize, 1.0, None)],
    [(AugOp::Rotate, 0.2, Some(3)), (AugOp::Solarize, 0.6, Some(8))],
    [(AugOp::Equalize, 0.6, None), (AugOp::Posterize, 0.4, Some(6))],
    [(AugOp::Rotate, 0.8, Some(8)), (AugOp::Color, 0.4, Some(0))],
    [(AugOp::Rotate, 0.4, Some(9)), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Equalize, 0.0, None), (AugOp::Equalize, 0.8, None)],
    [(AugOp::Invert, 0.6, None), (AugOp::Equalize, 1.0, None)],
    [(AugOp::Color, 0.6, Some(4)), (AugOp::Contrast, 1.0, Some(8))],
    [(AugOp::Rotate, 0.8, Some(8)), (AugOp::Color, 1.0, Some(2))],
    [(AugOp::Color, 0.8, Some(8)), (AugOp::Solarize, 0.8, Some(7))],
    [(AugOp::Sharpness, 0.4, Some(7)), (AugOp::Invert, 0.6, None)],
    [(AugOp::ShearX, 0.6, Some(5)), (AugOp::Equalize, 1.0, None)],
    [(AugOp::Color, 0.4, Some(0)), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Equalize, 0.4, None), (AugOp::Solarize, 0.2, Some(4))],
    [(AugOp::Solarize, 0.6, Some(5)), (AugOp::AutoContrast, 0.6, None)],
    [(AugOp::Invert, 0.6, None), (AugOp::Equalize, 1.0, None)],
    [(AugOp::Color, 0.6, Some(4)), (AugOp::Contrast, 1.0, Some(8))],
    [(AugOp::Equalize, 0.8, None), (AugOp::Equalize, 0.6, None)],
];

/// torchvision's `AutoAugmentPolicy.CIFAR10` sub-policies: (operation, probability, magnitude bin).
const CIFAR10: &[SubPolicy] = &[
    [(AugOp::Invert, 0.1, None), (AugOp::Contrast, 0.2, Some(6))],
    [(AugOp::Rotate, 0.7, Some(2)), (AugOp::TranslateX, 0.3, Some(9))],
    [(AugOp::Sharpness, 0.8, Some(1)), (AugOp::Sharpness, 0.9, Some(3))],
    [(AugOp::ShearY, 0.5, Some(8)), (AugOp::TranslateY, 0.7, Some(9))],
    [(AugOp::AutoContrast, 0.5, None), (AugOp::Equalize, 0.9, None)],
    [(AugOp::ShearY, 0.2, Some(7)), (AugOp::Posterize, 0.3, Some(7))],
    [(AugOp::Color, 0.4, Some(3)), (AugOp::Brightness, 0.6, Some(7))],
    [
        (AugOp::Sharpness, 0.3, Some(9)),
        (AugOp::Brightness, 0.7, Some(9)),
    ],
    [(AugOp::Equalize, 0.6, None), (AugOp::Equalize, 0.5, None)],
    [(AugOp::Contrast, 0.6, Some(7)), (AugOp::Sharpness, 0.6, Some(5))],
    [(AugOp::Color, 0.7, Some(7)), (AugOp::TranslateX, 0.5, Some(8))],
    [(AugOp::Equalize, 0.3, None), (AugOp::AutoContrast, 0.4, None)],
    [
        (AugOp::TranslateY, 0.4, Some(3)),
        (AugOp::Sharpness, 0.2, Some(6)),
    ],
    [(AugOp::Brightness, 0.9, Some(6)), (AugOp::Color, 0.2, Some(8))],
    [(AugOp::Solarize, 0.5, Some(2)), (AugOp::Invert, 0.0, None)],
    [(AugOp::Equalize, 0.2, None), (AugOp::AutoContrast, 0.6, None)],
    [(AugOp::Equalize, 0.2, None), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Color, 0.9, Some(9)), (AugOp::Equalize, 0.6, None)],
    [(AugOp::AutoContrast, 0.8, None), (AugOp::Solarize, 0.2, Some(8))],
    [(AugOp::Brightness, 0.1, Some(3)), (AugOp::Color, 0.7, Some(0))],
    [(AugOp::Solarize, 0.4, Some(5)), (AugOp::AutoContrast, 0.9, None)],
    [
        (AugOp::TranslateY, 0.9, Some(9)),
        (AugOp::TranslateY, 0.7, Some(9)),
    ],
    [(AugOp::AutoContrast, 0.9, None), (AugOp::Solarize, 0.8, Some(3))],
    [(AugOp::Equalize, 0.8, None), (AugOp::Invert, 0.1, None)],
    [
        (AugOp::TranslateY, 0.7, Some(9)),
        (AugOp::AutoContrast, 0.9, None),
    ],
];

/// torchvision's `AutoAugmentPolicy.SVHN` sub-policies: (operation, probability, magnitude bin).
const SVHN: &[SubPolicy] = &[
    [(AugOp::ShearX, 0.9, Some(4)), (AugOp::Invert, 0.2, None)],
    [(AugOp::ShearY, 0.9, Some(8)), (AugOp::Invert, 0.7, None)],
    [(AugOp::Equalize, 0.6, None), (AugOp::Solarize, 0.6, Some(6))],
    [(AugOp::Invert, 0.9, None), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Equalize, 0.6, None), (AugOp::Rotate, 0.9, Some(3))],
    [(AugOp::ShearX, 0.9, Some(4)), (AugOp::AutoContrast, 0.8, None)],
    [(AugOp::ShearY, 0.9, Some(8)), (AugOp::Invert, 0.4, None)],
    [(AugOp::ShearY, 0.9, Some(5)), (AugOp::Solarize, 0.2, Some(6))],
    [(AugOp::Invert, 0.9, None), (AugOp::AutoContrast, 0.8, None)],
    [(AugOp::Equalize, 0.6, None), (AugOp::Rotate, 0.9, Some(3))],
    [(AugOp::ShearX, 0.9, Some(4)), (AugOp::Solarize, 0.3, Some(3))],
    [(AugOp::ShearY, 0.8, Some(8)), (AugOp::Invert, 0.7, None)],
    [(AugOp::Equalize, 0.9, None), (AugOp::TranslateY, 0.6, Some(6))],
    [(AugOp::Invert, 0.9, None), (AugOp::Equalize, 0.6, None)],
    [(AugOp::Contrast, 0.3, Some(3)), (AugOp::Rotate, 0.8, Some(4))],
    [(AugOp::Invert, 0.8, None), (AugOp::TranslateY, 0.0, Some(2))],
    [(AugOp::ShearY, 0.7, Some(6)), (AugOp::Solarize, 0.4, Some(8))],
    [(AugOp::Invert, 0.6, None), (AugOp::Rotate, 0.8, Some(4))],
    [(AugOp::ShearY, 0.3, Some(7)), (AugOp::TranslateX, 0.9, Some(3))],
    [(AugOp::ShearX, 0.1, Some(6)), (AugOp::Invert, 0.6, None)],
    [(AugOp::Solarize, 0.7, Some(2)), (AugOp::TranslateY, 0.6, Some(7))],
    [(AugOp::ShearY, 0.8, Some(4)), (AugOp::Invert, 0.8, None)],
    [(AugOp::ShearX, 0.7, Some(9)), (AugOp::TranslateY, 0.8, Some(3))],
    [(AugOp::ShearY, 0.8, Some(5)), (AugOp::AutoContrast, 0.7, None)],
    [(AugOp::ShearX, 0.7, Some(2)), (AugOp::Invert, 0.1, None)],
];

/// Which learned AutoAugment policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAugmentPolicy {
    /// Learned on ImageNet (torchvision's default).
    #[default]
    Imagenet,
    /// Learned on CIFAR-10.
    Cifar10,
    /// Learned on SVHN.
    Svhn,
}

impl AutoAugmentPolicy {
    /// The policy's 25 sub-policies.
    pub fn sub_policies(self) -> &'static [[(AugOp, f64, Option<usize>); 2]] {
        match self {
            AutoAugmentPolicy::Imagenet => IMAGENET,
            AutoAugmentPolicy::Cifar10 => CIFAR10,
            AutoAugmentPolicy::Svhn => SVHN,
        }
    }
}

/// torchvision's `AutoAugment`: one of the policy's sub-policies, uniformly; each of its two steps
/// applied with its probability at its magnitude bin (sign drawn where the table says).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AutoAugment {
    /// The learned policy.
    pub policy: AutoAugmentPolicy,
}

impl AutoAugment {
    /// The steps drawn from `rng` for an image of `height × width` (those that fire, in order).
    pub fn sample(&self, height: usize, width: usize, rng: &mut SampleRng) -> Vec<(AugOp, f64)> {
        let subs = self.policy.sub_policies();
        let sub = &subs[rng.below(subs.len() as u64) as usize];
        let space = auto_augment_space(height, width);
        let mut steps = Vec::new();
        for &(op, p, bin) in sub {
            // torchvision: skipped unless rand() <= p.
            if rng.uniform() > p {
                continue;
            }
            let m = match (space.iter().find(|e| e.0 == op), bin) {
                (Some(entry), Some(bin)) => magnitude(entry, bin, rng),
                _ => 0.0,
            };
            steps.push((op, m));
        }
        steps
    }

    /// The drawn steps applied to `img` in order.
    pub fn apply<C: ColorOrder>(&self, img: &Image<Hwc, C>, rng: &mut SampleRng) -> Image<Hwc, C> {
        let steps = self.sample(img.height(), img.width(), rng);
        steps
            .into_iter()
            .fold(img.clone(), |cur, (op, m)| apply_op(&cur, op, m))
    }
}

/// AugMix's table on `height × width` images (torchvision's `AugMix._AUGMENTATION_SPACE`, 10
/// bins); without `all_ops`, its partial table (no brightness, color, contrast or sharpness, the
/// operations of ImageNet-C).
pub fn aug_mix_space(height: usize, width: usize, all_ops: bool) -> Space {
    use AugOp::*;
    const BINS: usize = 10;
    let l = |end: f32| Some(linspace(0.0, end, BINS));
    let mut space = vec![
        (ShearX, l(0.3), true),
        (ShearY, l(0.3), true),
        (TranslateX, l((width as f64 / 3.0) as f32), true),
        (TranslateY, l((height as f64 / 3.0) as f32), true),
        (Rotate, l(30.0), true),
        (Posterize, Some(posterize_bins(BINS, 4.0, 4.0)), false),
        (Solarize, Some(linspace(1.0, 0.0, BINS)), false),
        (AutoContrast, None, false),
        (Equalize, None, false),
    ];
    if all_ops {
        space.extend([
            (Brightness, l(0.9), true),
            (Color, l(0.9), true),
            (Contrast, l(0.9), true),
            (Sharpness, l(0.9), true),
        ]);
    }
    space
}

/// torchvision's `AugMix` (Hendrycks et al., 2020): `mixture_width` chains of 1 to 3 random
/// operations at a severity-limited magnitude, mixed with Dirichlet(α) weights, and the mix
/// blended with the original by a Beta(α, α) weight. The result is cast back to u8 by truncation,
/// as torchvision's `.to(uint8)` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugMix {
    /// Magnitude bins drawn from, 1 to 10 (torchvision's 3).
    pub severity: usize,
    /// Chains mixed (3).
    pub mixture_width: usize,
    /// Operations per chain; 0 or less draws 1 to 3 per chain (torchvision's −1).
    pub chain_depth: i64,
    /// The Dirichlet and Beta parameter (1.0).
    pub alpha: f64,
    /// Brightness, color, contrast and sharpness too (true).
    pub all_ops: bool,
    /// The geometric operations' interpolation (bilinear, torchvision's default for AugMix).
    pub interpolation: Interpolation,
    /// Their fill (`None`: zeros, as torchvision's `fill=None`; one value, or three in RGB
    /// order).
    pub fill: Option<Vec<f32>>,
}

impl Default for AugMix {
    fn default() -> Self {
        Self {
            severity: 3,
            mixture_width: 3,
            chain_depth: -1,
            alpha: 1.0,
            all_ops: true,
            interpolation: Interpolation::Bilinear,
            fill: None,
        }
    }
}

/// What one AugMix application drew.
#[derive(Debug, Clone, PartialEq)]
pub struct AugMixDraw {
    /// The Beta(α, α) pair: the original's weight, then the chains' share.
    pub beta: [f32; 2],
    /// The Dirichlet(α) weights of the chains (before scaling by `beta[1]`).
    pub weights: Vec<f32>,
    /// Each chain's operations and magnitudes, in order.
    pub chains: Vec<Vec<(AugOp, f64)>>,
}

impl AugMix {
    /// Checks the settings: severity 1 to 10, at least one chain, a finite positive α, the fill.
    ///
    /// # Errors
    ///
    /// A sentence naming the setting.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.severity) {
            return Err(format!("severity = {}: must be in [1, 10]", self.severity));
        }
        if self.mixture_width == 0 {
            return Err("mixture_width = 0: at least one chain".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("alpha = {}: must be finite and > 0", self.alpha));
        }
        self.sampling().check(None)
    }

    /// The geometric operations' sampling.
    pub fn sampling(&self) -> Sampling {
        Sampling {
            interpolation: self.interpolation,
            fill: self.fill.clone(),
        }
    }

    /// The weights and chains drawn from `rng` for an image of `height × width`.
    pub fn sample(&self, height: usize, width: usize, rng: &mut SampleRng) -> AugMixDraw {
        let space = aug_mix_space(height, width, self.all_ops);
        let b = dirichlet(&[self.alpha; 2], rng);
        let beta = [b[0], b[1]];
        let weights = dirichlet(&vec![self.alpha; self.mixture_width.max(1)], rng);
        let severity = self.severity.clamp(1, 10) as u64;
        let chains = (0..weights.len())
            .map(|_| {
                let depth = if self.chain_depth > 0 {
                    self.chain_depth as usize
                } else {
                    1 + rng.below(3) as usize
                };
                (0..depth)
                    .map(|_| {
                        let entry = &space[rng.below(space.len() as u64) as usize];
                        let bin = rng.below(severity) as usize;
                        (entry.0, magnitude(entry, bin, rng))
                    })
                    .collect()
            })
            .collect();
        AugMixDraw {
            beta,
            weights,
            chains,
        }
    }

    /// `img` mixed as `draw` says: `beta[0]·img + Σ beta[1]·weights[i]·chain_i(img)` in float32,
    /// in torchvision's order, truncated to u8.
    pub fn mix<C: ColorOrder>(&self, img: &Image<Hwc, C>, draw: &AugMixDraw) -> Image<Hwc, C> {
        let sampling = self.sampling();
        let mut acc: Vec<f32> = img
            .as_slice()
            .iter()
            .map(|&v| draw.beta[0] * f32::from(v))
            .collect();
        for (chain, &w) in draw.chains.iter().zip(&draw.weights) {
            let aug = chain
                .iter()
                .fold(img.clone(), |cur, &(op, m)| apply_op_with(&cur, op, m, &sampling));
            // `combined_weights[:, i] * aug` is a float32 tensor, then added to the mix.
            let w = w * draw.beta[1];
            for (a, &v) in acc.iter_mut().zip(aug.as_slice()) {
                *a += w * f32::from(v);
            }
        }
        let out: Vec<u8> = acc.iter().map(|v| v.clamp(0.0, 255.0) as u8).collect();
        Image::new(img.height(), img.width(), out).unwrap_or_else(|_| img.clone())
    }

    /// AugMix applied to `img` with draws from `rng`.
    pub fn apply<C: ColorOrder>(&self, img: &Image<Hwc, C>, rng: &mut SampleRng) -> Image<Hwc, C> {
        let draw = self.sample(img.height(), img.width(), rng);
        self.mix(img, &draw)
    }
}

/// A Dirichlet(`alphas`) draw: independent Gamma(αᵢ, 1) draws, normalised (float32, as
/// `torch._sample_dirichlet` returns them).
fn dirichlet(alphas: &[f64], rng: &mut SampleRng) -> Vec<f32> {
    let g: Vec<f64> = alphas.iter().map(|&a| rng.gamma(a)).collect();
    let total: f64 = g.iter().sum();
    if total > 0.0 {
        g.iter().map(|v| (v / total) as f32).collect()
    } else {
        vec![1.0 / alphas.len() as f32; alphas.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_over_the_table_and_signs_are_even() {
        let t = TrivialAugmentWide::default();
        let mut rng = SampleRng::new(17);
        let n = 28_000;
        let mut counts = std::collections::BTreeMap::new();
        let mut negative = 0usize;
        for _ in 0..n {
            let (op, m) = t.sample(&mut rng);
            *counts.entry(format!("{op:?}")).or_insert(0usize) += 1;
            if op == AugOp::Rotate && m < 0.0 {
                negative += 1;
            }
        }
        assert_eq!(counts.len(), 14, "{counts:?}");
        for (op, c) in &counts {
            assert!((c * 14).abs_diff(n) < n / 10, "{op}: {c}");
        }
        let rotations = counts["Rotate"];
        assert!(
            (negative * 2).abs_diff(rotations) < rotations / 8,
            "{negative} of {rotations}"
        );
        let r = RandAugment::default();
        assert_eq!(r.sample(32, 32, &mut rng).len(), 2);
    }

    #[test]
    fn auto_augment_fires_each_step_with_its_probability() {
        // ImageNet's third sub-policy is (Equalize 0.8, Equalize 0.6): over many draws the steps
        // that fire average the policy's mean probability, 25 sub-policies drawn uniformly.
        let a = AutoAugment::default();
        let mut rng = SampleRng::new(5);
        let n = 20_000;
        let fired: usize = (0..n).map(|_| a.sample(32, 32, &mut rng).len()).sum();
        let mean_p: f64 = IMAGENET.iter().flat_map(|s| s.iter().map(|t| t.1)).sum::<f64>() / 25.0;
        let rate = fired as f64 / n as f64;
        assert!((rate - mean_p).abs() < 0.03, "{rate} vs {mean_p}");
        assert_eq!(auto_augment_space(8, 8).len(), 14);
        assert!(auto_augment_space(8, 8).iter().all(|e| e.0 != AugOp::Identity));
    }

    #[test]
    fn dirichlet_and_beta_draws_have_their_moments() {
        // Dirichlet(α·1ₖ): each weight has mean 1/k and variance (k−1)/(k²(kα+1)).
        let mut rng = SampleRng::new(5);
        for (alpha, k) in [(1.0, 3usize), (0.5, 2), (4.0, 4)] {
            let n = 20_000;
            let (mut sum, mut sq) = (0f64, 0f64);
            for _ in 0..n {
                let d = dirichlet(&vec![alpha; k], &mut rng);
                assert!((d.iter().map(|&v| f64::from(v)).sum::<f64>() - 1.0).abs() < 1e-5);
                sum += f64::from(d[0]);
                sq += f64::from(d[0]).powi(2);
            }
            let mean = sum / n as f64;
            let var = sq / n as f64 - mean * mean;
            let kf = k as f64;
            let want = (kf - 1.0) / (kf * kf * (kf * alpha + 1.0));
            assert!((mean - 1.0 / kf).abs() < 0.01, "α={alpha} k={k}: mean {mean}");
            assert!(
                (var - want).abs() < 0.1 * want,
                "α={alpha} k={k}: var {var} vs {want}"
            );
        }
    }

    #[test]
    fn aug_mix_draws_follow_its_settings() {
        let mut rng = SampleRng::new(11);
        let aug = AugMix {
            severity: 2,
            mixture_width: 4,
            all_ops: false,
            ..AugMix::default()
        };
        let space = aug_mix_space(20, 30, false);
        let mut depths = [0usize; 4];
        for _ in 0..300 {
            let d = aug.sample(20, 30, &mut rng);
            assert_eq!((d.weights.len(), d.chains.len()), (4, 4));
            for chain in &d.chains {
                depths[chain.len()] += 1;
                for &(op, m) in chain {
                    let entry = space
                        .iter()
                        .find(|e| e.0 == op)
                        .expect("an op of the partial table");
                    // Severity 2: the first two bins only, with a sign when the table signs.
                    let allowed = entry.1.as_ref().map_or(vec![0.0], |v| v[..2].to_vec());
                    assert!(allowed.contains(&m.abs()) || allowed.contains(&m), "{op:?} {m}");
                }
            }
        }
        assert_eq!(depths[0], 0);
        assert!(depths[1..].iter().all(|&n| n > 300), "{depths:?}");
        let fixed = AugMix {
            chain_depth: 2,
            ..AugMix::default()
        };
        assert!(fixed.sample(8, 8, &mut rng).chains.iter().all(|c| c.len() == 2));
        assert!(
            AugMix {
                severity: 11,
                ..AugMix::default()
            }
            .check()
            .is_err()
        );
        assert!(
            AugMix {
                alpha: 0.0,
                ..AugMix::default()
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn aug_mix_with_all_weight_on_the_original_is_the_original() {
        let img = Image::<Hwc, kiln_data::Bgr>::new(6, 5, (0..90).map(|v| (v * 2) as u8).collect()).unwrap();
        let aug = AugMix::default();
        let draw = AugMixDraw {
            beta: [1.0, 0.0],
            weights: vec![0.5, 0.5],
            chains: vec![vec![(AugOp::Equalize, 0.0)], vec![(AugOp::Rotate, 10.0)]],
        };
        assert_eq!(aug.mix(&img, &draw).as_slice(), img.as_slice());
        // All weight on one chain of autocontrast: that chain's image.
        let draw = AugMixDraw {
            beta: [0.0, 1.0],
            weights: vec![1.0],
            chains: vec![vec![(AugOp::Invert, 0.0)]],
        };
        let inverted: Vec<u8> = img.as_slice().iter().map(|v| 255 - v).collect();
        assert_eq!(aug.mix(&img, &draw).as_slice(), &inverted[..]);
    }
}
