//! Mixup and CutMix with soft targets, timm's `Mixup` semantics, as a stage on the collated batch.
//!
//! Each image is mixed with its mirror in the batch (`x.flip(0)`: image `i` with image `N−1−i`):
//! Mixup blends them, `λ·x + (1−λ)·x_flip`; CutMix pastes a box of the mirror into the image and
//! sets `λ` to the part left (`correct_lam`, timm's default). `λ ~ Beta(α, α)`; with both alphas
//! set, CutMix is drawn with probability `switch_prob`; the whole mix happens with probability
//! `prob`. The targets become `λ·y + (1−λ)·y_flip` of the one-hot labels with the label
//! smoothing folded in (`(1−ε)·onehot + ε/C`, timm's `mixup_target`), and the loss is the
//! cross-entropy against them (timm's `SoftTargetCrossEntropy`, PyTorch's `cross_entropy` with
//! probability targets).
//!
//! Modes as timm's: `batch` (one draw for the batch), `pair` (one per mirrored pair; needs an even
//! batch) and `elem` (one per image). The draws come from a generator seeded by the run's seed and
//! the batch's sample indices, so a batch mixes the same way for any worker count and after a
//! resume.
//!
//! **Training accuracy on mixed batches** (timm reports none): the share of images whose top
//! logit is the target's largest class (the label with the larger weight; on a tie, the image's own).
//!
//! ```
//! use kiln_train::mixup::{MixupConfig, Mix};
//!
//! // The deterministic part, given the draw: 2 images of 1×1×2 pixels, λ = 0.75.
//! let mut data = vec![1.0, 1.0, 0.0, 0.0];
//! let mix = Mix::uniform(2, 0.75, None);
//! mix.apply(&mut data, [2, 1, 1, 2]);
//! assert_eq!(data, [0.75, 0.75, 0.25, 0.25]);
//! let targets = mix.targets(&[0, 1], 2, 0.0);
//! assert_eq!(targets, [0.75, 0.25, 0.25, 0.75]);
//! # let _ = MixupConfig::default();
//! ```

use kiln_data::SampleRng;
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// How many draws a batch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MixMode {
    /// One `λ` (and box) for the whole batch.
    #[default]
    Batch,
    /// One per mirrored pair `(i, N−1−i)`.
    Pair,
    /// One per image.
    Elem,
}

/// `[train.mixup]`: Mixup and/or CutMix (timm's `Mixup` arguments and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixupConfig {
    /// Mixup's Beta α (0: no Mixup). timm's default 1.0; DeiT/timm recipes use 0.8.
    pub mixup_alpha: f64,
    /// CutMix's Beta α (0: no CutMix). Recipes use 1.0.
    pub cutmix_alpha: f64,
    /// CutMix's box as a fraction of the image side drawn uniformly from `[min, max]` instead of
    /// from `λ` (timm's `cutmix_minmax`).
    pub cutmix_minmax: Option<[f64; 2]>,
    /// Probability that a batch (pair, image) is mixed at all.
    pub prob: f64,
    /// Probability of CutMix over Mixup when both are on.
    pub switch_prob: f64,
    /// One draw per batch, pair or image.
    pub mode: MixMode,
    /// Set CutMix's `λ` to the area actually kept (the box is clipped at the borders).
    pub correct_lam: bool,
}

impl Default for MixupConfig {
    fn default() -> Self {
        Self {
            mixup_alpha: 1.0,
            cutmix_alpha: 0.0,
            cutmix_minmax: None,
            prob: 1.0,
            switch_prob: 0.5,
            mode: MixMode::Batch,
            correct_lam: true,
        }
    }
}

impl MixupConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field, value: String, reason: &str| {
            Err(TrainError::InvalidConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        for (field, a) in [
            ("mixup.mixup_alpha", self.mixup_alpha),
            ("mixup.cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(a.is_finite() && a >= 0.0) {
                return bad(field, a.to_string(), "must be finite and >= 0 (0 turns it off)");
            }
        }
        if self.mixup_alpha == 0.0 && self.cutmix_alpha == 0.0 && self.cutmix_minmax.is_none() {
            return bad(
                "mixup",
                "mixup_alpha = 0, cutmix_alpha = 0".into(),
                "mixes nothing: set mixup_alpha or cutmix_alpha (or remove [train.mixup])",
            );
        }
        for (field, p) in [("mixup.prob", self.prob), ("mixup.switch_prob", self.switch_prob)] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, p.to_string(), "must be in [0, 1]");
            }
        }
        if let Some([lo, hi]) = self.cutmix_minmax
            && !(0.0 < lo && lo < hi && hi <= 1.0)
        {
            return bad(
                "mixup.cutmix_minmax",
                format!("[{lo}, {hi}]"),
                "needs 0 < min < max <= 1",
            );
        }
        Ok(())
    }

    /// The mix of a batch of `shape` (`[N, C, H, W]`), drawn from `rng`.
    ///
    /// # Errors
    ///
    /// [`TrainError::InvalidConfig`] for `pair` mode on an odd batch.
    pub fn draw(&self, shape: [usize; 4], rng: &mut SampleRng) -> Result<Mix, TrainError> {
        let n = shape[0];
        let draws = match self.mode {
            MixMode::Batch => 1,
            MixMode::Pair => {
                if !n.is_multiple_of(2) {
                    return Err(TrainError::InvalidConfig {
                        field: "mixup.mode",
                        value: format!("pair, on a batch of {n}"),
                        reason: "pairs need an even batch (batch_size, and its share per device)".into(),
                    });
                }
                n / 2
            }
            MixMode::Elem => n,
        };
        let per: Vec<(f64, Option<[usize; 4]>)> = (0..draws).map(|_| self.draw_one(shape, rng)).collect();
        let each = match self.mode {
            MixMode::Batch => vec![per[0]; n],
            // Pair i mixes images i and N−1−i with the same draw.
            MixMode::Pair => (0..n).map(|i| per[i.min(n - 1 - i)]).collect(),
            MixMode::Elem => per,
        };
        Ok(Mix { each })
    }

    /// One `(λ, CutMix box)` (timm's `_params_per_batch` + `cutmix_bbox_and_lam`).
    fn draw_one(&self, [_, _, h, w]: [usize; 4], rng: &mut SampleRng) -> (f64, Option<[usize; 4]>) {
        if rng.uniform() >= self.prob {
            return (1.0, None);
        }
        let mixup_on = self.mixup_alpha > 0.0;
        let cutmix_on = self.cutmix_alpha > 0.0 || self.cutmix_minmax.is_some();
        let use_cutmix = match (mixup_on, cutmix_on) {
            (true, true) => rng.uniform() < self.switch_prob,
            (false, true) => true,
            _ => false,
        };
        let alpha = if use_cutmix {
            self.cutmix_alpha
        } else {
            self.mixup_alpha
        };
        let lam = if alpha > 0.0 { beta(alpha, rng) } else { 1.0 };
        if !use_cutmix {
            return (lam, None);
        }
        // numpy's randint(a, b): uniform in [a, b) (a when the range is empty).
        let mut randint = |a: usize, b: usize| {
            if b > a {
                a + rng.below((b - a) as u64) as usize
            } else {
                a
            }
        };
        let [yl, yh, xl, xh] = match self.cutmix_minmax {
            // timm's rand_bbox_minmax: the box's sides uniform in [min, max) of the image's, anywhere inside.
            Some([lo, hi]) => {
                let cut_h = randint((h as f64 * lo) as usize, (h as f64 * hi) as usize);
                let cut_w = randint((w as f64 * lo) as usize, (w as f64 * hi) as usize);
                let yl = randint(0, h - cut_h);
                let xl = randint(0, w - cut_w);
                [yl, yl + cut_h, xl, xl + cut_w]
            }
            // timm's rand_bbox: sides √(1−λ) of the image's, centred anywhere, clipped.
            None => {
                let ratio = (1.0 - lam).sqrt();
                let (cut_h, cut_w) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
                let cy = randint(0, h) as isize;
                let cx = randint(0, w) as isize;
                let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
                [
                    clip(cy - (cut_h / 2) as isize, h),
                    clip(cy + (cut_h / 2) as isize, h),
                    clip(cx - (cut_w / 2) as isize, w),
                    clip(cx + (cut_w / 2) as isize, w),
                ]
            }
        };
        let lam = if self.correct_lam || self.cutmix_minmax.is_some() {
            1.0 - ((yh - yl) * (xh - xl)) as f64 / (h * w) as f64
        } else {
            lam
        };
        (lam, Some([yl, yh, xl, xh]))
    }
}

/// A drawn mix: for each image, its `λ` and, for CutMix, the box `[y0, y1, x0, x1)` taken from
/// its mirror `N−1−i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// `(λ, box)` per image.
    pub each: Vec<(f64, Option<[usize; 4]>)>,
}

impl Mix {
    /// The same `λ` (and box) for `n` images.
    pub fn uniform(n: usize, lam: f64, cutmix: Option<[usize; 4]>) -> Self {
        Self {
            each: vec![(lam, cutmix); n],
        }
    }

    /// Mixes `data` (`[N, C, H, W]` planar) in place, every image with the original of its
    /// mirror.
    pub fn apply(&self, data: &mut [f32], [n, c, h, w]: [usize; 4]) {
        let per = c * h * w;
        let original = data.to_vec();
        for (i, &(lam, cutmix)) in self.each.iter().enumerate().take(n) {
            if lam == 1.0 {
                continue;
            }
            let j = n - 1 - i;
            let (dst, src) = (
                &mut data[i * per..(i + 1) * per],
                &original[j * per..(j + 1) * per],
            );
            match cutmix {
                Some([y0, y1, x0, x1]) => {
                    for ch in 0..c {
                        for y in y0..y1 {
                            let row = ch * h * w + y * w;
                            dst[row + x0..row + x1].copy_from_slice(&src[row + x0..row + x1]);
                        }
                    }
                }
                None => {
                    // timm: x·λ + x_flip·(1−λ), in float32.
                    let (a, b) = (lam as f32, (1.0 - lam) as f32);
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = *d * a + *s * b;
                    }
                }
            }
        }
    }

    /// The soft targets `[N, classes]` (row-major): `λ·y + (1−λ)·y_flip` of one-hot labels with
    /// `smoothing` folded in (timm's `mixup_target`).
    pub fn targets(&self, labels: &[u32], classes: usize, smoothing: f64) -> Vec<f32> {
        let n = labels.len();
        // timm: off = ε/C, on = 1 − ε + off, in double precision, then float32.
        let off64 = smoothing / classes as f64;
        let (off, on) = (off64 as f32, (1.0 - smoothing + off64) as f32);
        let mut t = vec![0f32; n * classes];
        for (i, &(lam, _)) in self.each.iter().enumerate().take(n) {
            let (lam, rest) = (lam as f32, (1.0 - lam) as f32);
            let row = &mut t[i * classes..(i + 1) * classes];
            let (own, other) = (labels[i] as usize, labels[n - 1 - i] as usize);
            for (k, v) in row.iter_mut().enumerate() {
                let y1 = if k == own { on } else { off };
                let y2 = if k == other { on } else { off };
                *v = y1 * lam + y2 * rest;
            }
        }
        t
    }

    /// Each image's dominant label (the larger weight; its own on a tie): what training accuracy
    /// on a mixed batch counts.
    pub fn dominant(&self, labels: &[u32]) -> Vec<u32> {
        let n = labels.len();
        (0..n)
            .map(|i| {
                let lam = self.each.get(i).map_or(1.0, |e| e.0);
                if lam >= 0.5 { labels[i] } else { labels[n - 1 - i] }
            })
            .collect()
    }
}

/// A draw from `Beta(a, a)`: `X/(X+Y)` with `X, Y ~ Gamma(a, 1)`.
fn beta(a: f64, rng: &mut SampleRng) -> f64 {
    let x = rng.gamma(a);
    let y = rng.gamma(a);
    if x + y == 0.0 { 0.5 } else { x / (x + y) }
}

/// The generator of a batch: the run's seed and the batch's sample indices (so the mix does not
/// depend on which worker built the batch, and repeats after a resume).
pub fn batch_rng(seed: u64, positions: &[usize]) -> SampleRng {
    let mut h = seed ^ 0xA076_1D64_78BD_642F;
    for &p in positions {
        h = (h ^ p as u64).wrapping_mul(0x1000_0000_01B3).rotate_left(29);
    }
    SampleRng::new(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_draws_have_the_beta_distributions_moments() {
        // Beta(a, a): mean 1/2, variance 1 / (4(2a + 1)).
        for a in [0.2, 0.8, 1.0, 3.0] {
            let mut rng = SampleRng::new(11);
            let n = 40_000;
            let xs: Vec<f64> = (0..n).map(|_| beta(a, &mut rng)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let want = 1.0 / (4.0 * (2.0 * a + 1.0));
            assert!((mean - 0.5).abs() < 0.01, "a={a}: mean {mean}");
            assert!((var - want).abs() < 0.05 * want, "a={a}: var {var} vs {want}");
        }
    }

    #[test]
    fn switching_probability_and_modes() {
        let cfg = MixupConfig {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            switch_prob: 0.3,
            ..MixupConfig::default()
        };
        let mut rng = SampleRng::new(3);
        let n = 4000;
        let cut = (0..n)
            .filter(|_| cfg.draw([2, 1, 8, 8], &mut rng).unwrap().each[0].1.is_some())
            .count();
        assert!((cut as f64 / n as f64 - 0.3).abs() < 0.03, "{cut}");
        let pair = MixupConfig {
            mode: MixMode::Pair,
            ..cfg
        };
        let m = pair.draw([6, 1, 4, 4], &mut rng).unwrap();
        assert_eq!(m.each[0], m.each[5]);
        assert_eq!(m.each[1], m.each[4]);
        assert!(
            pair.draw([5, 1, 4, 4], &mut rng)
                .unwrap_err()
                .to_string()
                .contains("even")
        );
        let off = MixupConfig { prob: 0.0, ..cfg };
        assert_eq!(off.draw([2, 1, 4, 4], &mut rng).unwrap().each[0], (1.0, None));
        assert_eq!(
            batch_rng(1, &[3, 9, 4]).next_u64(),
            batch_rng(1, &[3, 9, 4]).next_u64(),
            "the same batch mixes the same way"
        );
        assert!(
            MixupConfig {
                mixup_alpha: 0.0,
                ..MixupConfig::default()
            }
            .validate()
            .is_err()
        );
    }
}
