//! `Compose`: a classification transform written as data (serde), that says what each stage outputs.
//!
//! Geometric stages run on the decoded HWC u8 image in its stored colour order; the last step
//! converts to CHW f32 in the model's order and normalises; random erasing, if any, runs on the
//! result. Every random draw comes from the loader's per-sample generator.
//!
//! ```
//! use kiln_transforms::compose::Compose;
//!
//! let train = Compose::imagenet_train(224);
//! for line in train.describe("BGR") {
//!     println!("{line}");
//! }
//! // decode                     -> HWC BGR u8 [0, 255]
//! // random-resized-crop 224x224 (scale 0.08..1, ratio 0.75..1.33) -> HWC BGR u8 [0, 255], 224x224
//! // horizontal-flip p=0.5      -> HWC BGR u8 [0, 255], 224x224
//! // to CHW RGB f32, normalise `torch-imagenet` (byte scale) -> CHW RGB f32 ≈ mean 0, std 1, 224x224
//! let json = serde_json::to_string(&train)?;
//! assert_eq!(serde_json::from_str::<Compose>(&json)?, train);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use kiln_data::{Chw, Hwc, Image, SampleRng};
use serde::{Deserialize, Serialize};

use crate::affine::{Interpolation, Sampling};
use crate::augment::{
    ColorJitter, PadMode, RandomCrop, RandomErasing, RandomResizedCrop, center_window, crop_resize, pad_crop,
    random_flip, to_grayscale, vflip,
};
use crate::sample::full;
use crate::{ModelColor, NormalizationSpec, TransformError, normalize_image};

/// One geometric stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Stage {
    /// Resize to exactly `height × width` (bilinear).
    Resize {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
    /// Resize so the shorter side is `size`, keeping the aspect ratio (torchvision's `Resize(int)`).
    ResizeShorter {
        /// The shorter side after resizing.
        size: usize,
    },
    /// torchvision's `CenterCrop`.
    CenterCrop {
        /// Crop height.
        height: usize,
        /// Crop width.
        width: usize,
    },
    /// torchvision's `RandomResizedCrop` with its default scale and ratio ranges.
    RandomResizedCrop {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
    /// torchvision's `RandomCrop(size, padding)`.
    RandomCrop {
        /// Crop height.
        height: usize,
        /// Crop width.
        width: usize,
        /// Padding on every side.
        padding: usize,
        /// Reflect instead of zero padding.
        #[serde(default)]
        reflect: bool,
    },
    /// Mirror left–right with probability `p`.
    HorizontalFlip {
        /// Probability.
        p: f64,
    },
    /// Mirror top–bottom with probability `p`.
    VerticalFlip {
        /// Probability.
        p: f64,
    },
    /// torchvision's `RandomGrayscale(p)`: PIL's grey level repeated on every channel.
    RandomGrayscale {
        /// Probability.
        p: f64,
    },
    /// torchvision's `ColorJitter` (bit-exact with its PIL path for given factors).
    ColorJitter {
        /// Brightness strength.
        #[serde(default)]
        brightness: f32,
        /// Contrast strength.
        #[serde(default)]
        contrast: f32,
        /// Saturation strength.
        #[serde(default)]
        saturation: f32,
        /// Hue strength (at most 0.5).
        #[serde(default)]
        hue: f32,
    },
    /// `255 − v` (torchvision's `invert`, bit-exact).
    Invert,
    /// Keep the `bits` highest bits (torchvision's `posterize`, bit-exact).
    Posterize {
        /// Bits kept, 0 to 8.
        bits: u8,
    },
    /// Invert the values at or above `threshold` (torchvision's `solarize`, bit-exact).
    Solarize {
        /// 0 to 255.
        threshold: f64,
    },
    /// `v·factor`, clamped (torchvision v2's `adjust_brightness` on uint8, bit-exact).
    Brightness {
        /// The factor, at least 0.
        factor: f32,
    },
    /// Blend with the mean luma by `factor` (torchvision v2's `adjust_contrast`, bit-exact).
    Contrast {
        /// 0: flat grey, 1: unchanged.
        factor: f64,
    },
    /// Blend each pixel with its luma by `factor` (torchvision v2's `adjust_saturation`,
    /// AutoAugment's `Color`, bit-exact).
    Color {
        /// 0: grey, 1: unchanged.
        factor: f64,
    },
    /// Blend with a 3×3 blur by `factor`, borders kept (torchvision v2's `adjust_sharpness`,
    /// bit-exact).
    Sharpness {
        /// 0: blurred, 1: unchanged, above 1: sharpened.
        factor: f64,
    },
    /// Stretch each channel to `[0, 255]` (torchvision's `autocontrast`, bit-exact).
    Autocontrast,
    /// Equalise each channel's histogram (torchvision's `equalize`, PIL's table, bit-exact).
    Equalize,
    /// Shear along x by `magnitude` (the tangent) about the top-left corner (AutoAugment's
    /// `ShearX`, bit-exact with torchvision v2 under nearest; bilinear within one grey level).
    ShearX {
        /// The shear's tangent (negative: the other way).
        magnitude: f64,
        /// `nearest` (default) or `bilinear`.
        #[serde(default)]
        interpolation: Interpolation,
        /// The value of pixels from outside: one, or one per channel in RGB order, as torchvision
        /// takes it (default: zeros, as torchvision's `fill=None`).
        #[serde(default)]
        fill: Option<Vec<f32>>,
    },
    /// Shear along y (AutoAugment's `ShearY`).
    ShearY {
        /// The shear's tangent.
        magnitude: f64,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        interpolation: Interpolation,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        fill: Option<Vec<f32>>,
    },
    /// Move right by `pixels` (left when negative) (AutoAugment's `TranslateX`).
    TranslateX {
        /// Pixels.
        pixels: i64,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        interpolation: Interpolation,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        fill: Option<Vec<f32>>,
    },
    /// Move down by `pixels` (AutoAugment's `TranslateY`).
    TranslateY {
        /// Pixels.
        pixels: i64,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        interpolation: Interpolation,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        fill: Option<Vec<f32>>,
    },
    /// Rotate by `degrees` counter-clockwise about the centre, same size (AutoAugment's
    /// `Rotate`).
    Rotate {
        /// Degrees.
        degrees: f64,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        interpolation: Interpolation,
        /// As [`Stage::ShearX`]'s.
        #[serde(default)]
        fill: Option<Vec<f32>>,
    },
    /// torchvision's `TrivialAugmentWide`: one operation at a random magnitude per image.
    TrivialAugmentWide {
        /// Magnitude bins (31).
        #[serde(default = "bins31")]
        num_magnitude_bins: usize,
    },
    /// torchvision's `AutoAugment` with a learned policy (`imagenet`, `cifar10`, `svhn`).
    AutoAugment {
        /// The policy (ImageNet's by default).
        #[serde(default)]
        policy: crate::autoaugment::AutoAugmentPolicy,
    },
    /// torchvision's `RandAugment`: `num_ops` random operations at magnitude bin `magnitude`.
    RandAugment {
        /// Operations per image (2).
        #[serde(default = "two")]
        num_ops: usize,
        /// The magnitude bin (9).
        #[serde(default = "nine")]
        magnitude: usize,
        /// Magnitude bins (31).
        #[serde(default = "bins31")]
        num_magnitude_bins: usize,
    },
    /// torchvision's `AugMix`: chains of random operations mixed with Dirichlet weights and
    /// blended with the image (its settings and defaults: [`crate::autoaugment::AugMix`]).
    AugMix(crate::autoaugment::AugMix),
}

fn sampling(interpolation: Interpolation, fill: &Option<Vec<f32>>) -> Sampling {
    Sampling {
        interpolation,
        fill: fill.clone(),
    }
}

/// How a sampling shows in `describe`.
fn sampling_text(interpolation: Interpolation, fill: &Option<Vec<f32>>) -> String {
    let how = match interpolation {
        Interpolation::Nearest => "nearest",
        Interpolation::Bilinear => "bilinear",
    };
    match fill {
        None => format!("{how}, zero fill"),
        Some(f) => format!("{how}, fill {f:?}"),
    }
}

fn bins31() -> usize {
    31
}
fn two() -> usize {
    2
}
fn nine() -> usize {
    9
}

impl Stage {
    /// Checks the stage's own settings (sizes at least 1, probabilities in `[0, 1]`, finite
    /// jitter strengths) before any image goes through it: `Err` says which setting and why.
    ///
    /// # Errors
    ///
    /// A sentence naming the setting.
    pub fn check(&self) -> Result<(), String> {
        let size = |what: &str, v: usize| {
            if v == 0 {
                Err(format!("{what} is 0: sizes must be at least 1"))
            } else {
                Ok(())
            }
        };
        let prob = |p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("p = {p}: a probability must be in [0, 1]"))
            }
        };
        match *self {
            Stage::Resize { height, width }
            | Stage::CenterCrop { height, width }
            | Stage::RandomResizedCrop { height, width }
            | Stage::RandomCrop { height, width, .. } => {
                size("height", height)?;
                size("width", width)
            }
            Stage::ResizeShorter { size: s } => size("size", s),
            Stage::HorizontalFlip { p } | Stage::VerticalFlip { p } | Stage::RandomGrayscale { p } => prob(p),
            Stage::ColorJitter {
                brightness,
                contrast,
                saturation,
                hue,
            } => {
                if [brightness, contrast, saturation, hue]
                    .iter()
                    .any(|v| !(v.is_finite() && *v >= 0.0))
                {
                    return Err("strengths must be finite and >= 0".into());
                }
                if hue > 0.5 {
                    return Err(format!("hue = {hue}: at most 0.5"));
                }
                Ok(())
            }
            Stage::Invert | Stage::Autocontrast | Stage::Equalize => Ok(()),
            Stage::Posterize { bits } if bits > 8 => Err(format!("bits = {bits}: at most 8")),
            Stage::Posterize { .. } => Ok(()),
            Stage::Solarize { threshold } if !(0.0..=255.0).contains(&threshold) => {
                Err(format!("threshold = {threshold}: must be in [0, 255]"))
            }
            Stage::Solarize { .. } => Ok(()),
            Stage::Brightness { factor } if !(factor.is_finite() && factor >= 0.0) => {
                Err(format!("factor = {factor}: must be finite and >= 0"))
            }
            Stage::Brightness { .. } => Ok(()),
            Stage::Contrast { factor } | Stage::Color { factor } | Stage::Sharpness { factor }
                if !(factor.is_finite() && factor >= 0.0) =>
            {
                Err(format!("factor = {factor}: must be finite and >= 0"))
            }
            Stage::Contrast { .. } | Stage::Color { .. } | Stage::Sharpness { .. } => Ok(()),
            Stage::ShearX { magnitude: v, .. }
            | Stage::ShearY { magnitude: v, .. }
            | Stage::Rotate { degrees: v, .. }
                if !v.is_finite() =>
            {
                Err(format!("{v}: must be finite"))
            }
            Stage::ShearX {
                interpolation,
                ref fill,
                ..
            }
            | Stage::ShearY {
                interpolation,
                ref fill,
                ..
            }
            | Stage::Rotate {
                interpolation,
                ref fill,
                ..
            }
            | Stage::TranslateX {
                interpolation,
                ref fill,
                ..
            }
            | Stage::TranslateY {
                interpolation,
                ref fill,
                ..
            } => sampling(interpolation, fill).check(None),
            Stage::AugMix(ref aug) => aug.check(),
            Stage::TrivialAugmentWide {
                num_magnitude_bins: b,
            }
            | Stage::RandAugment {
                num_magnitude_bins: b,
                ..
            } if b < 2 => Err(format!("num_magnitude_bins = {b}: at least 2")),
            Stage::RandAugment {
                magnitude,
                num_magnitude_bins,
                ..
            } if magnitude >= num_magnitude_bins => Err(format!(
                "magnitude = {magnitude}: a bin below num_magnitude_bins ({num_magnitude_bins})"
            )),
            Stage::TrivialAugmentWide { .. } | Stage::RandAugment { .. } | Stage::AutoAugment { .. } => {
                Ok(())
            }
        }
    }

    /// torchvision's evaluation recipe at input size `[h, w]`: the shorter side resized to
    /// `max(h, w) / 0.875` (256 for 224, as `transforms.Resize(256)`), then the centre crop.
    pub fn torchvision_eval([h, w]: [usize; 2]) -> Vec<Stage> {
        vec![
            Stage::ResizeShorter {
                size: ((h.max(w) as f64) / 0.875).round() as usize,
            },
            Stage::CenterCrop { height: h, width: w },
        ]
    }
}

/// Geometric stages, then conversion and normalisation, then optional random erasing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// Geometric stages, in order.
    pub stages: Vec<Stage>,
    /// The normalization applied after conversion to CHW f32.
    pub normalization: NormalizationSpec,
    /// Probability of torchvision's default `RandomErasing` after normalisation (0 = off).
    #[serde(default)]
    pub erasing: f64,
}

impl Compose {
    /// The reduced-size JPEG decoding this pipeline allows ([`kiln_data::decode::imread_draft`],
    /// PIL's `Image.draft`): when the first stage is a resize, an image may be decoded at down to
    /// the size that resize produces; `None` when the first stage needs the full image (a crop,
    /// a random resized crop, a flip before the resize).
    pub fn draft(&self) -> Option<kiln_data::decode::DraftSize> {
        use kiln_data::decode::DraftSize;
        match *self.stages.first()? {
            Stage::Resize { height, width } => Some(DraftSize::new(move |_| Some([height, width]))),
            Stage::ResizeShorter { size } => {
                Some(DraftSize::new(move |[h, w]| Some(shorter_side(h, w, size))))
            }
            _ => None,
        }
    }

    /// The training augmentation written as a short list (`kiln train --augment`): `none` (or
    /// nothing), or a comma list of `crop=P` (a random 28×28 crop of the image padded by P
    /// pixels), `flip` / `flip=p` (horizontal), `erase=p` (random erasing); the normalization is
    /// Fashion-MNIST's.
    ///
    /// # Errors
    ///
    /// [`TransformError::BadShorthand`] naming the item.
    pub fn from_shorthand(list: &str) -> Result<Option<Compose>, TransformError> {
        let list = list.trim();
        if list == "none" || list.is_empty() {
            return Ok(None);
        }
        let mut compose = Compose {
            stages: Vec::new(),
            normalization: NormalizationSpec::FashionMnist,
            erasing: 0.0,
        };
        let bad = |item: &str, reason: &str| TransformError::BadShorthand {
            item: item.to_string(),
            reason: reason.to_string(),
        };
        let prob = |item: &str, v: &str| -> Result<f64, TransformError> {
            match v.parse::<f64>() {
                Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
                _ => Err(bad(item, "the probability must be a number in [0, 1]")),
            }
        };
        for item in list.split(',').map(str::trim) {
            let (name, value) = item.split_once('=').map_or((item, None), |(n, v)| (n, Some(v)));
            match (name, value) {
                ("crop", Some(v)) => {
                    let padding = v
                        .parse()
                        .map_err(|_| bad(item, "the padding must be a whole number of pixels"))?;
                    compose.stages.push(Stage::RandomCrop {
                        height: 28,
                        width: 28,
                        padding,
                        reflect: false,
                    });
                }
                ("flip", None) => compose.stages.push(Stage::HorizontalFlip { p: 0.5 }),
                ("flip", Some(v)) => compose.stages.push(Stage::HorizontalFlip { p: prob(item, v)? }),
                ("erase", Some(v)) => compose.erasing = prob(item, v)?,
                _ => {
                    return Err(bad(
                        item,
                        &format!(
                            "unknown item `{item}`; use none or a comma list of crop=PADDING, flip, flip=P, erase=P"
                        ),
                    ));
                }
            }
        }
        Ok(Some(compose))
    }

    /// torchvision's ImageNet training transform: RandomResizedCrop, flip, ImageNet normalisation.
    pub fn imagenet_train(size: usize) -> Self {
        Self {
            stages: vec![
                Stage::RandomResizedCrop {
                    height: size,
                    width: size,
                },
                Stage::HorizontalFlip { p: 0.5 },
            ],
            normalization: NormalizationSpec::TorchImagenet,
            erasing: 0.0,
        }
    }

    /// torchvision's ImageNet evaluation transform: shorter side to `resize`, centre `crop`.
    pub fn imagenet_eval(resize: usize, crop: usize) -> Self {
        Self {
            stages: vec![
                Stage::ResizeShorter { size: resize },
                Stage::CenterCrop {
                    height: crop,
                    width: crop,
                },
            ],
            normalization: NormalizationSpec::TorchImagenet,
            erasing: 0.0,
        }
    }

    /// The classic CIFAR-10 training transform: `RandomCrop(32, padding=4)`, flip, CIFAR stats.
    pub fn cifar_train() -> Self {
        Self {
            stages: vec![
                Stage::RandomCrop {
                    height: 32,
                    width: 32,
                    padding: 4,
                    reflect: false,
                },
                Stage::HorizontalFlip { p: 0.5 },
            ],
            normalization: NormalizationSpec::Cifar10,
            erasing: 0.0,
        }
    }

    /// Checks, before any data is seen, that this transform fits images stored in order `C`: the
    /// normalization must resolve and be in the model order `C` converts to (e.g. `caffe-imagenet`,
    /// a BGR preset, does not fit the RGB output of BGR data), and colour stages need 3 channels.
    ///
    /// # Errors
    ///
    /// [`TransformError::OrderMismatch`], the normalization's own errors,
    /// [`TransformError::BadFactor`] for a hue strength above 0.5, or [`TransformError::BadStage`]
    /// for a fill whose values do not match the channels.
    pub fn validate_for<C: ModelColor>(&self) -> Result<(), TransformError> {
        let norm = self.normalization.resolve()?;
        if norm.order != C::OUT_ORDER {
            return Err(TransformError::OrderMismatch {
                name: norm.name,
                expected: norm.order,
                found: C::OUT_ORDER,
            });
        }
        for stage in &self.stages {
            if let Stage::ColorJitter { hue, .. } = stage
                && !(0.0..=0.5).contains(hue)
            {
                return Err(TransformError::BadFactor {
                    what: "hue",
                    value: *hue,
                    range: "[0, 0.5]",
                });
            }
            // A per-channel fill must have one value per channel of these images.
            let fill = match stage {
                Stage::ShearX { fill, .. } => Some(("shear-x", fill)),
                Stage::ShearY { fill, .. } => Some(("shear-y", fill)),
                Stage::TranslateX { fill, .. } => Some(("translate-x", fill)),
                Stage::TranslateY { fill, .. } => Some(("translate-y", fill)),
                Stage::Rotate { fill, .. } => Some(("rotate", fill)),
                Stage::AugMix(aug) => Some(("aug-mix", &aug.fill)),
                _ => None,
            };
            if let Some((name, fill)) = fill {
                sampling(Interpolation::Nearest, fill)
                    .check(Some(C::CHANNELS))
                    .map_err(|reason| TransformError::BadStage { stage: name, reason })?;
            }
        }
        Ok(())
    }

    /// Applies every stage to one image.
    ///
    /// # Errors
    ///
    /// A stage that does not fit the image (e.g. a crop larger than it), or a normalization that
    /// does not fit the model's channel order.
    pub fn apply<C: ModelColor>(
        &self,
        img: &Image<Hwc, C>,
        rng: &mut SampleRng,
    ) -> Result<Image<Chw, C::Out, f32>, TransformError> {
        // Borrowed until a stage changes it: a large image is never copied whole first.
        let mut cur = std::borrow::Cow::Borrowed(img);
        for stage in &self.stages {
            cur = std::borrow::Cow::Owned(match *stage {
                Stage::Resize { height, width } => crop_resize(&cur, full(&cur), height, width, false)?,
                Stage::ResizeShorter { size } => {
                    let [h, w] = shorter_side(cur.height(), cur.width(), size);
                    crop_resize(&cur, full(&cur), h, w, false)?
                }
                Stage::CenterCrop { height, width } => {
                    let win = center_window(cur.height(), cur.width(), height, width)?;
                    crop_resize(&cur, win, height, width, false)?
                }
                Stage::RandomResizedCrop { height, width } => {
                    let win = RandomResizedCrop::new(height, width).sample(cur.height(), cur.width(), rng);
                    crop_resize(&cur, win, height, width, false)?
                }
                Stage::RandomCrop {
                    height,
                    width,
                    padding,
                    reflect,
                } => {
                    let mode = if reflect { PadMode::Reflect } else { PadMode::Zero };
                    let rc = RandomCrop {
                        height,
                        width,
                        padding,
                        mode,
                    };
                    let corner = rc.sample(cur.height(), cur.width(), rng)?;
                    pad_crop(&cur, padding, mode, corner, [height, width])?
                }
                Stage::HorizontalFlip { p } => {
                    if random_flip(rng, p) {
                        crop_resize(&cur, full(&cur), cur.height(), cur.width(), true)?
                    } else {
                        continue;
                    }
                }
                Stage::VerticalFlip { p } => {
                    if random_flip(rng, p) {
                        vflip(&cur)?
                    } else {
                        continue;
                    }
                }
                Stage::RandomGrayscale { p } => {
                    if random_flip(rng, p) {
                        let grey = to_grayscale(&cur)?;
                        let c = C::CHANNELS;
                        let data = grey
                            .as_bytes()
                            .iter()
                            .flat_map(|&v| std::iter::repeat_n(v, c))
                            .collect();
                        Image::new(cur.height(), cur.width(), data)
                            .map_err(|e| TransformError::Internal(e.to_string()))?
                    } else {
                        continue;
                    }
                }
                Stage::ColorJitter {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                } => ColorJitter {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                }
                .apply(&cur, rng)?,
                Stage::Invert => crate::pointwise::invert(&cur),
                Stage::Posterize { bits } => crate::pointwise::posterize(&cur, bits),
                Stage::Solarize { threshold } => crate::pointwise::solarize(&cur, threshold),
                Stage::Brightness { factor } => crate::pointwise::brightness(&cur, factor),
                Stage::Contrast { factor } => crate::pointwise::contrast(&cur, factor),
                Stage::Color { factor } => crate::pointwise::color(&cur, factor),
                Stage::Sharpness { factor } => crate::pointwise::sharpness(&cur, factor),
                Stage::Autocontrast => crate::pointwise::autocontrast(&cur),
                Stage::Equalize => crate::pointwise::equalize(&cur),
                Stage::ShearX {
                    magnitude,
                    interpolation,
                    ref fill,
                } => crate::affine::shear_x_with(&cur, magnitude, &sampling(interpolation, fill)),
                Stage::ShearY {
                    magnitude,
                    interpolation,
                    ref fill,
                } => crate::affine::shear_y_with(&cur, magnitude, &sampling(interpolation, fill)),
                Stage::TranslateX {
                    pixels,
                    interpolation,
                    ref fill,
                } => crate::affine::translate_x_with(&cur, pixels, &sampling(interpolation, fill)),
                Stage::TranslateY {
                    pixels,
                    interpolation,
                    ref fill,
                } => crate::affine::translate_y_with(&cur, pixels, &sampling(interpolation, fill)),
                Stage::Rotate {
                    degrees,
                    interpolation,
                    ref fill,
                } => crate::affine::rotate_with(&cur, degrees, &sampling(interpolation, fill)),
                Stage::AugMix(ref aug) => aug.apply(&cur, rng),
                Stage::TrivialAugmentWide { num_magnitude_bins } => {
                    crate::autoaugment::TrivialAugmentWide { num_magnitude_bins }.apply(&cur, rng)
                }
                Stage::AutoAugment { policy } => crate::autoaugment::AutoAugment { policy }.apply(&cur, rng),
                Stage::RandAugment {
                    num_ops,
                    magnitude,
                    num_magnitude_bins,
                } => crate::autoaugment::RandAugment {
                    num_ops,
                    magnitude,
                    num_magnitude_bins,
                }
                .apply(&cur, rng),
            });
        }
        let mut out = normalize_image(&cur, &self.normalization.resolve()?)?;
        if self.erasing > 0.0 {
            let erase = RandomErasing {
                p: self.erasing,
                ..RandomErasing::default()
            };
            erase.apply(&mut out, rng);
        }
        Ok(out)
    }

    /// One line per stage: what it does and what it outputs (layout, colour order, dtype, range,
    /// size where known). `stored_order` is the decoded order (`"BGR"` for kiln's loaders).
    pub fn describe(&self, stored_order: &str) -> Vec<String> {
        let mut lines = vec![format!("decode -> HWC {stored_order} u8 [0, 255]")];
        let mut size: Option<[usize; 2]> = None;
        let shown = |size: Option<[usize; 2]>| size.map(|[h, w]| format!(", {h}x{w}")).unwrap_or_default();
        for stage in &self.stages {
            let what = match stage {
                Stage::Resize { height, width } => {
                    size = Some([*height, *width]);
                    format!("resize {height}x{width} (bilinear)")
                }
                Stage::ResizeShorter { size: s } => {
                    size = None;
                    format!("resize shorter side to {s} (bilinear)")
                }
                Stage::CenterCrop { height, width } => {
                    size = Some([*height, *width]);
                    format!("center-crop {height}x{width}")
                }
                Stage::RandomResizedCrop { height, width } => {
                    size = Some([*height, *width]);
                    format!("random-resized-crop {height}x{width} (scale 0.08..1, ratio 0.75..1.33)")
                }
                Stage::RandomCrop {
                    height,
                    width,
                    padding,
                    reflect,
                } => {
                    size = Some([*height, *width]);
                    let mode = if *reflect { "reflect" } else { "zero" };
                    format!("random-crop {height}x{width} after {mode} padding {padding}")
                }
                Stage::HorizontalFlip { p } => format!("horizontal-flip p={p}"),
                Stage::VerticalFlip { p } => format!("vertical-flip p={p}"),
                Stage::RandomGrayscale { p } => {
                    format!("random-grayscale p={p} (grey repeated on every channel)")
                }
                Stage::ColorJitter {
                    brightness,
                    contrast,
                    saturation,
                    hue,
                } => format!(
                    "color-jitter brightness={brightness} contrast={contrast} saturation={saturation} hue={hue}"
                ),
                Stage::Invert => "invert (255 - v)".to_string(),
                Stage::Posterize { bits } => format!("posterize to {bits} bits"),
                Stage::Solarize { threshold } => format!("solarize (invert values >= {threshold})"),
                Stage::Brightness { factor } => format!("brightness x{factor}"),
                Stage::Contrast { factor } => format!("contrast x{factor} (blend with the mean luma)"),
                Stage::Color { factor } => format!("color x{factor} (blend with each pixel's luma)"),
                Stage::Sharpness { factor } => format!("sharpness x{factor} (blend with a 3x3 blur)"),
                Stage::Autocontrast => "autocontrast (each channel stretched to 0..255)".to_string(),
                Stage::Equalize => "equalize (each channel's histogram, PIL's table)".to_string(),
                Stage::ShearX {
                    magnitude,
                    interpolation,
                    fill,
                } => format!("shear-x {magnitude} ({})", sampling_text(*interpolation, fill)),
                Stage::ShearY {
                    magnitude,
                    interpolation,
                    fill,
                } => format!("shear-y {magnitude} ({})", sampling_text(*interpolation, fill)),
                Stage::TranslateX {
                    pixels,
                    interpolation,
                    fill,
                } => format!(
                    "translate-x {pixels} px ({})",
                    sampling_text(*interpolation, fill)
                ),
                Stage::TranslateY {
                    pixels,
                    interpolation,
                    fill,
                } => format!(
                    "translate-y {pixels} px ({})",
                    sampling_text(*interpolation, fill)
                ),
                Stage::Rotate {
                    degrees,
                    interpolation,
                    fill,
                } => format!("rotate {degrees}° ({})", sampling_text(*interpolation, fill)),
                Stage::AugMix(aug) => {
                    let depth = if aug.chain_depth > 0 {
                        aug.chain_depth.to_string()
                    } else {
                        "1-3".to_string()
                    };
                    let ops = if aug.all_ops {
                        "all operations"
                    } else {
                        "no brightness, color, contrast or sharpness"
                    };
                    format!(
                        "aug-mix {} chains of {depth} ops ({ops}) at severity {}, alpha {} ({})",
                        aug.mixture_width,
                        aug.severity,
                        aug.alpha,
                        sampling_text(aug.interpolation, &aug.fill)
                    )
                }
                Stage::TrivialAugmentWide { num_magnitude_bins } => {
                    format!("trivial-augment-wide ({num_magnitude_bins} magnitude bins)")
                }
                Stage::AutoAugment { policy } => format!("auto-augment ({policy:?} policy)"),
                Stage::RandAugment {
                    num_ops,
                    magnitude,
                    num_magnitude_bins,
                } => format!("rand-augment {num_ops} ops at magnitude {magnitude}/{num_magnitude_bins}"),
            };
            lines.push(format!("{what} -> HWC {stored_order} u8 [0, 255]{}", shown(size)));
        }
        match self.normalization.resolve() {
            Ok(n) => lines.push(format!(
                "to CHW {} f32, normalise `{}` ({} scale) -> CHW {} f32 ≈ mean 0, std 1{}",
                order_name(n.order),
                n.name,
                match n.scale {
                    crate::Scale::Unit => "unit",
                    crate::Scale::Byte => "byte",
                },
                order_name(n.order),
                shown(size)
            )),
            Err(e) => lines.push(format!("normalise: invalid ({e})")),
        }
        if self.erasing > 0.0 {
            lines.push(format!(
                "random-erasing p={} (value 0) -> unchanged{}",
                self.erasing,
                shown(size)
            ));
        }
        lines
    }
}

fn order_name(order: crate::ChannelOrder) -> &'static str {
    match order {
        crate::ChannelOrder::Gray => "Gray",
        crate::ChannelOrder::Rgb => "RGB",
        crate::ChannelOrder::Bgr => "BGR",
    }
}

/// `[H, W]` after resizing an `h × w` image so that its shorter side is `size`, keeping the aspect
/// ratio as torchvision's `Resize(size)` does (the longer side truncated: `int(size * long / short)`).
pub fn shorter_side(h: usize, w: usize, size: usize) -> [usize; 2] {
    if h <= w {
        [size, (size * w / h.max(1)).max(1)]
    } else {
        [(size * h / w.max(1)).max(1), size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Normalization;
    use crate::augment::Window;
    use kiln_data::Bgr;

    #[test]
    fn pointwise_stages_parse_check_and_apply() {
        let parse = |json: &str| serde_json::from_str::<Stage>(json).unwrap();
        assert!(
            parse(r#"{"op": "posterize", "bits": 9}"#)
                .check()
                .unwrap_err()
                .contains("at most 8")
        );
        assert!(parse(r#"{"op": "solarize", "threshold": 300}"#).check().is_err());
        assert!(parse(r#"{"op": "brightness", "factor": -1}"#).check().is_err());
        let stages = vec![
            parse(r#"{"op": "invert"}"#),
            parse(r#"{"op": "posterize", "bits": 4}"#),
        ];
        for s in &stages {
            s.check().unwrap();
        }
        // On the byte scale with mean 0 and std 1 the output is the pixels themselves.
        let identity = NormalizationSpec::Custom {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            scale: crate::Scale::Byte,
            order: crate::ChannelOrder::Rgb,
        };
        let t = Compose {
            stages,
            normalization: identity,
            erasing: 0.0,
        };
        let img = Image::<Hwc, Bgr>::new(1, 1, vec![10, 100, 250]).unwrap();
        let out = t.apply(&img, &mut SampleRng::new(0)).unwrap();
        // invert: 245, 155, 5; keep 4 bits: 240, 144, 0; then BGR -> RGB.
        assert_eq!(out.as_slice(), &[0.0, 144.0, 240.0]);
        assert!(t.describe("BGR")[2].starts_with("posterize to 4 bits"));

        // The policies: torchvision's defaults, checked settings, the same draw for the same seed.
        assert_eq!(
            parse(r#"{"op": "rand-augment"}"#),
            Stage::RandAugment {
                num_ops: 2,
                magnitude: 9,
                num_magnitude_bins: 31
            }
        );
        assert!(
            parse(r#"{"op": "rand-augment", "magnitude": 31}"#)
                .check()
                .is_err()
        );
        assert!(
            parse(r#"{"op": "trivial-augment-wide", "num_magnitude_bins": 1}"#)
                .check()
                .is_err()
        );
        let policy = Compose {
            stages: vec![parse(r#"{"op": "trivial-augment-wide"}"#)],
            ..t
        };
        let img = Image::<Hwc, Bgr>::new(6, 7, (0..126).map(|v| (v * 2) as u8).collect()).unwrap();
        let outs: Vec<Vec<f32>> = (0..12)
            .map(|seed| policy.apply(&img, &mut SampleRng::new(seed)).unwrap().into_vec())
            .collect();
        assert_eq!(
            outs[3],
            policy.apply(&img, &mut SampleRng::new(3)).unwrap().into_vec()
        );
        assert!(outs.iter().any(|o| o != &outs[0]), "draws differ between samples");
    }

    #[test]
    fn torchvision_eval_is_resize_256_then_centre_crop_224() {
        // torchvision's reference eval: Resize(256), CenterCrop(224); 256 = round(224 / 0.875).
        assert_eq!(
            Stage::torchvision_eval([224, 224]),
            [
                Stage::ResizeShorter { size: 256 },
                Stage::CenterCrop {
                    height: 224,
                    width: 224
                }
            ]
        );
        assert_eq!(
            Stage::torchvision_eval([32, 40])[0],
            Stage::ResizeShorter { size: 46 } // round(40 / 0.875) = round(45.71)
        );
    }

    fn ramp(h: usize, w: usize) -> Image<Hwc, Bgr> {
        Image::new(h, w, (0..h * w * 3).map(|i| ((i * 13) % 256) as u8).collect()).unwrap()
    }

    #[test]
    fn eval_transform_is_resize_then_centre_crop_then_normalise() {
        let img = ramp(40, 60);
        let t = Compose::imagenet_eval(32, 28);
        let out = t.apply(&img, &mut SampleRng::new(0)).unwrap();
        assert_eq!(out.chw_shape(), [3, 28, 28]);
        // By hand: shorter side 40 → 32 gives 32x48; centre crop 28: top 2, left 10.
        assert_eq!(shorter_side(40, 60, 32), [32, 48]);
        let resized = crop_resize(&img, full(&img), 32, 48, false).unwrap();
        let win = Window {
            top: 2,
            left: 10,
            height: 28,
            width: 28,
        };
        let want = normalize_image(
            &crop_resize(&resized, win, 28, 28, false).unwrap(),
            &Normalization::torch_imagenet(),
        )
        .unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn train_transforms_are_seeded_and_errors_name_the_stage_problem() {
        let img = ramp(40, 60);
        let t = Compose::imagenet_train(24);
        let a = t.apply(&img, &mut SampleRng::new(9)).unwrap();
        assert_eq!(
            a,
            t.apply(&img, &mut SampleRng::new(9)).unwrap(),
            "same seed, same output"
        );
        assert_ne!(a, t.apply(&img, &mut SampleRng::new(10)).unwrap());
        let cifar = Compose::cifar_train();
        assert_eq!(
            cifar
                .apply(&ramp(32, 32), &mut SampleRng::new(1))
                .unwrap()
                .chw_shape(),
            [3, 32, 32]
        );
        let too_big = Compose::imagenet_eval(32, 40);
        assert!(matches!(
            too_big.apply(&img, &mut SampleRng::new(0)),
            Err(TransformError::BadWindow { .. })
        ));
    }

    #[test]
    fn describe_lists_outputs_and_configs_round_trip() {
        let t = Compose {
            erasing: 0.25,
            ..Compose::cifar_train()
        };
        let lines = t.describe("BGR");
        assert_eq!(lines[0], "decode -> HWC BGR u8 [0, 255]");
        assert_eq!(
            lines[1],
            "random-crop 32x32 after zero padding 4 -> HWC BGR u8 [0, 255], 32x32"
        );
        assert_eq!(
            lines[3],
            "to CHW RGB f32, normalise `cifar10` (unit scale) -> CHW RGB f32 ≈ mean 0, std 1, 32x32"
        );
        assert_eq!(lines.len(), 5);
        let json = r#"{"stages": [{"op": "resize", "height": 8, "width": 8}, {"op": "horizontal-flip", "p": 1.0}],
                       "normalization": {"preset": "caffe-imagenet"}}"#;
        let c: Compose = serde_json::from_str(json).unwrap();
        assert_eq!(c.stages.len(), 2);
        // caffe-imagenet wants BGR output: converting BGR data to RGB for it is refused.
        assert!(matches!(
            c.apply(&ramp(4, 4), &mut SampleRng::new(0)),
            Err(TransformError::OrderMismatch { .. })
        ));
        assert!(
            serde_json::from_str::<Compose>(
                r#"{"stages": [{"op": "rotate"}], "normalization": {"preset": "cifar10"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn colour_stages_and_up_front_validation() {
        let json = r#"{"stages": [
            {"op": "vertical-flip", "p": 1.0},
            {"op": "random-grayscale", "p": 1.0},
            {"op": "color-jitter", "brightness": 0.2}
          ], "normalization": {"preset": "torch-imagenet"}}"#;
        let c: Compose = serde_json::from_str(json).unwrap();
        c.validate_for::<Bgr>().unwrap();
        let out = c.apply(&ramp(5, 6), &mut SampleRng::new(2)).unwrap();
        // Grey on every channel, before normalisation: (v - mean_c) / std_c recovers the same v.
        let n = Normalization::torch_imagenet();
        let plane = 30;
        for i in 0..plane {
            let v: Vec<f32> = (0..3)
                .map(|ch| out.as_slice()[ch * plane + i] * n.std[ch] + n.mean[ch])
                .collect();
            assert!((v[0] - v[1]).abs() < 1e-3 && (v[1] - v[2]).abs() < 1e-3, "{v:?}");
        }
        assert_eq!(c.describe("BGR").len(), 5);
        let caffe: Compose =
            serde_json::from_str(r#"{"stages": [], "normalization": {"preset": "caffe-imagenet"}}"#).unwrap();
        assert!(matches!(
            caffe.validate_for::<Bgr>(),
            Err(TransformError::OrderMismatch { .. })
        ));
        let hue: Compose = serde_json::from_str(
            r#"{"stages": [{"op": "color-jitter", "hue": 0.9}], "normalization": {"preset": "cifar10"}}"#,
        )
        .unwrap();
        assert!(matches!(
            hue.validate_for::<Bgr>(),
            Err(TransformError::BadFactor { .. })
        ));
    }

    #[test]
    fn aug_mix_and_the_affine_stages_sampling_options() {
        let parse = |json: &str| serde_json::from_str::<Stage>(json).unwrap();
        // torchvision's defaults.
        assert_eq!(
            parse(r#"{"op": "aug-mix"}"#),
            Stage::AugMix(crate::autoaugment::AugMix::default())
        );
        assert!(serde_json::from_str::<Stage>(r#"{"op": "aug-mix", "width": 2}"#).is_err());
        assert!(parse(r#"{"op": "aug-mix", "severity": 11}"#).check().is_err());
        assert!(parse(r#"{"op": "aug-mix", "mixture_width": 0}"#).check().is_err());
        let shear =
            parse(r#"{"op": "shear-x", "magnitude": 0.2, "interpolation": "bilinear", "fill": [1, 2, 3]}"#);
        shear.check().unwrap();
        assert_eq!(
            parse(r#"{"op": "rotate", "degrees": 5}"#),
            Stage::Rotate {
                degrees: 5.0,
                interpolation: Interpolation::Nearest,
                fill: None,
            }
        );
        assert!(
            parse(r#"{"op": "rotate", "degrees": 5, "fill": [300]}"#)
                .check()
                .is_err()
        );
        let compose = |stage: &str| -> Compose {
            serde_json::from_str(&format!(
                r#"{{"stages": [{stage}], "normalization": {{"preset": "cifar10"}}}}"#
            ))
            .unwrap()
        };
        let c =
            compose(r#"{"op": "shear-x", "magnitude": 0.2, "interpolation": "bilinear", "fill": [1, 2, 3]}"#);
        c.validate_for::<Bgr>().unwrap();
        assert_eq!(
            c.describe("BGR")[1],
            "shear-x 0.2 (bilinear, fill [1.0, 2.0, 3.0]) -> HWC BGR u8 [0, 255]"
        );
        // Two values for three channels: refused before any image.
        let bad = compose(r#"{"op": "translate-x", "pixels": 2, "fill": [1, 2]}"#);
        assert!(matches!(
            bad.validate_for::<Bgr>(),
            Err(TransformError::BadStage {
                stage: "translate-x",
                ..
            })
        ));
        // AugMix runs through the pipeline, the same for the same sample generator.
        let mix = compose(r#"{"op": "aug-mix", "mixture_width": 2}"#);
        let a = mix.apply(&ramp(8, 8), &mut SampleRng::new(4)).unwrap();
        let b = mix.apply(&ramp(8, 8), &mut SampleRng::new(4)).unwrap();
        assert_eq!(a.as_slice(), b.as_slice());
        assert!(mix.describe("BGR")[1].starts_with("aug-mix 2 chains of 1-3 ops"));
    }
}
