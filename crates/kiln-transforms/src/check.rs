//! The first-batch check: does a normalised batch look normalised?
//!
//! After normalisation each channel of a batch should have a mean near 0 and a std near 1. When it
//! does not, the usual causes leave fingerprints, found by undoing the normalization once
//! (`u = x·std + mean`, what the data looked like before it):
//!
//! * `u` reaches far above 1 with a unit-scale preset: the pixels were still on 0–255 (`/255` missed);
//! * `u` stays within 0–1 with a byte-scale preset: 0–1 data given a 0–255 preset;
//! * `u` itself has mean ≈ 0 and std ≈ 1: the batch was normalised twice;
//! * `u`'s channel means fit the preset better in reverse order: BGR and RGB are swapped.
//!
//! ```
//! use kiln_transforms::check::{check_batch, BatchWarning};
//! use kiln_transforms::Normalization;
//!
//! let norm = Normalization::torch_imagenet_unit();
//! // Pixels on 0..255 normalised with 0..1 statistics: values in the hundreds.
//! let data: Vec<f32> = (0..3 * 16).map(|i| ((i % 7) as f32 * 30.0 - 0.45) / 0.226).collect();
//! let report = check_batch(&data, [1, 3, 4, 4], &norm);
//! assert!(matches!(report.warnings[0], BatchWarning::ScaleMissed { .. }));
//! println!("{}", report.warnings[0]); // names the likely cause and the fix
//! ```

use std::fmt;

use crate::{Normalization, Scale};

/// Per-channel statistics of a batch and what looks wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// Mean of each channel over the batch.
    pub mean: Vec<f64>,
    /// Population std of each channel over the batch.
    pub std: Vec<f64>,
    /// Likely mistakes, most specific first; empty when the batch looks normalised.
    pub warnings: Vec<BatchWarning>,
}

/// A likely normalisation mistake.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchWarning {
    /// Pixels on 0–255 normalised with 0–1 statistics.
    ScaleMissed {
        /// The normalization's name.
        name: String,
        /// The largest pre-normalisation value seen.
        max_before: f64,
    },
    /// Pixels on 0–1 normalised with 0–255 statistics.
    UnitDataBytePreset {
        /// The normalization's name.
        name: String,
    },
    /// A batch that was normalised twice.
    NormalizedTwice {
        /// The normalization's name.
        name: String,
    },
    /// Channels in the opposite order to the preset (BGR vs RGB).
    ChannelsSwapped {
        /// The normalization's name.
        name: String,
        /// Sum of |channel mean| as the batch is.
        as_is: f64,
        /// Sum of |channel mean| had the channels been reversed.
        reversed: f64,
    },
    /// Channel statistics far from 0 and 1 without a recognised cause.
    OffStatistics {
        /// The channel.
        channel: usize,
        /// Its mean.
        mean: f64,
        /// Its std.
        std: f64,
    },
}

impl fmt::Display for BatchWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchWarning::ScaleMissed { name, max_before } => write!(
                f,
                "the first batch looks like 0–255 pixels normalised with `{name}`'s 0–1 statistics (values before normalisation reach {max_before:.1}); convert with Scale::Unit (x/255) or use a byte-scale preset"
            ),
            BatchWarning::UnitDataBytePreset { name } => write!(
                f,
                "the first batch looks like 0–1 pixels normalised with `{name}`'s 0–255 statistics (std far below 1); convert with Scale::Byte or use a unit-scale preset"
            ),
            BatchWarning::NormalizedTwice { name } => write!(
                f,
                "the first batch looks normalised twice: undoing `{name}` once already gives mean 0, std 1"
            ),
            BatchWarning::ChannelsSwapped {
                name,
                as_is,
                reversed,
            } => write!(
                f,
                "the first batch's channel means fit `{name}` better in reverse order (sum |mean| {as_is:.2} as is, {reversed:.2} reversed): BGR and RGB are probably swapped"
            ),
            BatchWarning::OffStatistics { channel, mean, std } => write!(
                f,
                "channel {channel} of the first batch has mean {mean:.3} and std {std:.3} after normalisation (expected near 0 and 1): check that the preset matches the data"
            ),
        }
    }
}

fn channel_stats(data: &[f32], shape: [usize; 4], f: impl Fn(usize, f32) -> f64) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = shape;
    let plane = h * w;
    let count = (n * plane).max(1) as f64;
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for (i, chunk) in data.chunks_exact(plane.max(1)).enumerate() {
        let ch = i % c.max(1);
        for &v in chunk {
            let v = f(ch, v);
            sum[ch] += v;
            sq[ch] += v * v;
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / count - m * m).max(0.0).sqrt())
        .collect();
    (mean, std)
}

/// Checks a normalised CHW batch (`[N, C, H, W]`, `data` in that layout) against the normalization
/// that produced it. Thresholds: a channel is fine with |mean| < 0.5 and std in [0.5, 2].
pub fn check_batch(data: &[f32], shape: [usize; 4], norm: &Normalization) -> BatchReport {
    let c = shape[1];
    let (mean, std) = channel_stats(data, shape, |_, v| f64::from(v));
    let mut warnings = Vec::new();
    if c != norm.mean.len() || c != norm.std.len() || data.len() != shape.iter().product::<usize>() {
        // Shape problems are the batcher's and the normalization's to report.
        return BatchReport { mean, std, warnings };
    }
    let off = |m: f64, s: f64| m.abs() >= 0.5 || !(0.5..=2.0).contains(&s);
    let any_off = mean.iter().zip(&std).any(|(&m, &s)| off(m, s));
    // Undo the normalization once.
    let undo = |ch: usize, v: f32| f64::from(v) * f64::from(norm.std[ch]) + f64::from(norm.mean[ch]);
    let (u_mean, u_std) = channel_stats(data, shape, undo);
    let max_before = data
        .chunks_exact((shape[2] * shape[3]).max(1))
        .enumerate()
        .flat_map(|(i, chunk)| chunk.iter().map(move |&v| (i % c, v)))
        .map(|(ch, v)| undo(ch, v))
        .fold(f64::MIN, f64::max);
    let name = norm.name.clone();
    if any_off {
        if norm.scale == Scale::Unit && max_before > 2.0 {
            warnings.push(BatchWarning::ScaleMissed {
                name: name.clone(),
                max_before,
            });
        } else if norm.scale == Scale::Byte && max_before <= 1.0 + 1e-3 {
            warnings.push(BatchWarning::UnitDataBytePreset { name: name.clone() });
        } else if u_mean
            .iter()
            .zip(&u_std)
            .all(|(&m, &s)| m.abs() < 0.25 && (0.75..=1.33).contains(&s))
        {
            warnings.push(BatchWarning::NormalizedTwice { name: name.clone() });
        }
    }
    if c == 3 {
        // Normalised means had the data's channels been in the other order.
        let reversed: f64 = (0..3)
            .map(|ch| (u_mean[2 - ch] - f64::from(norm.mean[ch])) / f64::from(norm.std[ch]))
            .map(f64::abs)
            .sum();
        let as_is: f64 = mean.iter().map(|m| m.abs()).sum();
        if as_is > 0.3 && reversed < 0.5 * as_is && warnings.is_empty() {
            warnings.push(BatchWarning::ChannelsSwapped {
                name,
                as_is,
                reversed,
            });
        }
    }
    if warnings.is_empty() {
        for (channel, (&m, &s)) in mean.iter().zip(&std).enumerate() {
            if off(m, s) {
                warnings.push(BatchWarning::OffStatistics {
                    channel,
                    mean: m,
                    std: s,
                });
            }
        }
    }
    BatchReport { mean, std, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "dataset" batch on the unit scale, RGB, whose channel c has exactly the preset's mean and
    /// std (values mean ± std, alternating): normalised correctly it is mean 0, std 1.
    fn raw_unit(norm: &Normalization) -> Vec<f32> {
        let plane = 64;
        (0..2)
            .flat_map(|_| {
                (0..3).flat_map(move |c| {
                    (0..plane).map(move |i| {
                        let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
                        norm.mean[c] + sign * norm.std[c]
                    })
                })
            })
            .collect()
    }

    fn normalise(raw: &[f32], norm: &Normalization, scale_raw: f32) -> Vec<f32> {
        raw.chunks_exact(64)
            .enumerate()
            .flat_map(|(i, ch)| {
                let c = i % 3;
                ch.iter()
                    .map(move |&v| (v * scale_raw - norm.mean[c]) / norm.std[c])
            })
            .collect()
    }

    const SHAPE: [usize; 4] = [2, 3, 8, 8];

    #[test]
    fn a_correct_batch_has_no_warnings() {
        let norm = Normalization::torch_imagenet_unit();
        let r = check_batch(&normalise(&raw_unit(&norm), &norm, 1.0), SHAPE, &norm);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert!(r.mean.iter().all(|m| m.abs() < 1e-5) && r.std.iter().all(|s| (s - 1.0).abs() < 1e-5));
        // The same data on the byte scale with the byte preset is fine too.
        let byte = Normalization::torch_imagenet();
        let r = check_batch(&normalise(&raw_unit(&norm), &byte, 255.0), SHAPE, &byte);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn each_mistake_is_named() {
        let unit = Normalization::torch_imagenet_unit();
        let byte = Normalization::torch_imagenet();
        let raw = raw_unit(&unit);
        // 0–255 pixels with 0–1 statistics.
        let r = check_batch(&normalise(&raw, &unit, 255.0), SHAPE, &unit);
        assert!(
            matches!(r.warnings[..], [BatchWarning::ScaleMissed { .. }]),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings[0].to_string().contains("Scale::Unit"));
        // 0–1 pixels with 0–255 statistics.
        let r = check_batch(&normalise(&raw, &byte, 1.0), SHAPE, &byte);
        assert!(
            matches!(r.warnings[..], [BatchWarning::UnitDataBytePreset { .. }]),
            "{:?}",
            r.warnings
        );
        // Normalised twice.
        let once = normalise(&raw, &unit, 1.0);
        let r = check_batch(&normalise(&once, &unit, 1.0), SHAPE, &unit);
        assert!(
            matches!(r.warnings[..], [BatchWarning::NormalizedTwice { .. }]),
            "{:?}",
            r.warnings
        );
        // BGR data normalised with an RGB preset: reverse each image's channel planes first.
        let swapped: Vec<f32> = raw
            .chunks_exact(3 * 64)
            .flat_map(|img| [&img[128..192], &img[64..128], &img[0..64]].concat())
            .collect();
        let r = check_batch(&normalise(&swapped, &unit, 1.0), SHAPE, &unit);
        assert!(
            matches!(r.warnings[..], [BatchWarning::ChannelsSwapped { .. }]),
            "{:?}",
            r.warnings
        );
        assert!(r.warnings[0].to_string().contains("BGR and RGB"));
        // Something else off (a constant image): reported per channel.
        let flat = vec![3.0f32; 2 * 3 * 64];
        let r = check_batch(&flat, SHAPE, &unit);
        assert!(
            matches!(r.warnings[0], BatchWarning::OffStatistics { channel: 0, .. }),
            "{:?}",
            r.warnings
        );
    }
}
