//! Normalization that knows the scale and channel order it was defined for.

use serde::{Deserialize, Serialize};

use crate::{ChwBatch, Scale, TransformError};

/// The channel order a normalization (or a batch) is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// One grey channel.
    Gray,
    /// Red, green, blue.
    Rgb,
    /// Blue, green, red (Caffe-trained weights).
    Bgr,
}

impl ChannelOrder {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ChannelOrder::Gray => 1,
            ChannelOrder::Rgb | ChannelOrder::Bgr => 3,
        }
    }
}

/// `(x·scale − mean) / std` per channel, with the scale and order it was defined on.
///
/// Serialisable: checkpoints and pretrained weights carry the one they were trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// A short name for messages and reports (`"fashion-mnist"`, `"custom"`).
    pub name: String,
    /// Per-channel mean, on `scale`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, on `scale`.
    pub std: Vec<f32>,
    /// The scale `mean` and `std` are expressed on.
    pub scale: Scale,
    /// The channel order `mean` and `std` are listed in.
    pub order: ChannelOrder,
}

impl Normalization {
    /// A checked custom normalization.
    ///
    /// # Errors
    ///
    /// [`TransformError::ChannelCount`] when `mean`/`std` do not have one value per channel of
    /// `order`; [`TransformError::BadStd`] for a std that is not finite and positive.
    pub fn new(
        name: impl Into<String>,
        mean: Vec<f32>,
        std: Vec<f32>,
        scale: Scale,
        order: ChannelOrder,
    ) -> Result<Self, TransformError> {
        let n = Self {
            name: name.into(),
            mean,
            std,
            scale,
            order,
        };
        n.validate()?;
        Ok(n)
    }

    /// Fashion-MNIST, computed over its 60,000 training images (47,040,000 pixels) on the unit scale:
    /// mean 0.2860406, std 0.3530242 (population std).
    ///
    /// Reference: `x = idx("train-images-idx3-ubyte.gz") / 255; x.mean(), x.std()` in numpy gives
    /// 0.28604059698879553, 0.35302424451492237; `kiln_transforms::ChannelStats` reproduces it.
    pub fn fashion_mnist() -> Self {
        Self {
            name: "fashion-mnist".into(),
            mean: vec![0.286_040_6],
            std: vec![0.353_024_24],
            scale: Scale::Unit,
            order: ChannelOrder::Gray,
        }
    }

    /// torchvision's ImageNet statistics, on the **byte** scale, RGB: mean
    /// `[123.675, 116.28, 103.53]`, std `[58.395, 57.12, 57.375]` — exactly 255 × torchvision's
    /// `[0.485, 0.456, 0.406]` / `[0.229, 0.224, 0.225]` (see [`Normalization::torch_imagenet_unit`]).
    /// For weights trained with torchvision (`ToTensor` + `Normalize`).
    pub fn torch_imagenet() -> Self {
        Self {
            name: "torch-imagenet".into(),
            mean: vec![123.675, 116.28, 103.53],
            std: vec![58.395, 57.12, 57.375],
            scale: Scale::Byte,
            order: ChannelOrder::Rgb,
        }
    }

    /// [`Normalization::torch_imagenet`] on the unit scale: the numbers in torchvision's docs.
    pub fn torch_imagenet_unit() -> Self {
        Self {
            name: "torch-imagenet".into(),
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            scale: Scale::Unit,
            order: ChannelOrder::Rgb,
        }
    }

    /// Caffe's ImageNet preprocessing (the original ResNet/VGG Caffe weights, mmdetection's
    /// `caffe` style): the ImageNet mean subtracted on the byte scale, std 1, **BGR** order —
    /// mean `[103.53, 116.28, 123.675]` listed B, G, R. Feed it BGR data
    /// ([`normalize_image_to::<Bgr, _>`](crate::sample::normalize_image_to)).
    pub fn caffe_imagenet() -> Self {
        Self {
            name: "caffe-imagenet".into(),
            mean: vec![103.53, 116.28, 123.675],
            std: vec![1.0, 1.0, 1.0],
            scale: Scale::Byte,
            order: ChannelOrder::Bgr,
        }
    }

    /// The CIFAR-10 statistics most CIFAR code uses, unit scale, RGB: mean
    /// `[0.4914, 0.4822, 0.4465]`, std `[0.2023, 0.1994, 0.2010]`.
    ///
    /// The means are the training set's; these stds are **not** its per-channel population stds
    /// (those are about `[0.247, 0.243, 0.261]`; the widely copied numbers are the mean of per-image
    /// stds). Models trained with this preset expect exactly it, so it is kept as published; compute
    /// your own with [`ChannelStats`](crate::ChannelStats) for a new model.
    pub fn cifar10() -> Self {
        Self {
            name: "cifar10".into(),
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2023, 0.1994, 0.2010],
            scale: Scale::Unit,
            order: ChannelOrder::Rgb,
        }
    }

    /// MNIST, unit scale, grey: mean 0.1307, std 0.3081 — the values of PyTorch's official MNIST
    /// example, computed there from the 60,000 training images (population std).
    ///
    /// Not recomputed on kiln's build machines: MNIST is not installable there (only
    /// Fashion-MNIST is). `dataset_stats` on `MnistDataset::from_dir(…, Train)` reproduces them;
    /// `tests/fashion_mnist_stats.rs` checks it whenever `/usr/share/datasets/mnist` exists.
    pub fn mnist() -> Self {
        Self {
            name: "mnist".into(),
            mean: vec![0.1307],
            std: vec![0.3081],
            scale: Scale::Unit,
            order: ChannelOrder::Gray,
        }
    }

    /// Checks channel counts and std values.
    ///
    /// # Errors
    ///
    /// As [`Normalization::new`].
    pub fn validate(&self) -> Result<(), TransformError> {
        let expected = self.order.channels();
        for (what, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != expected {
                return Err(TransformError::ChannelCount {
                    name: self.name.clone(),
                    what,
                    order: self.order,
                    expected,
                    found: v.len(),
                });
            }
        }
        if let Some((channel, &value)) = self
            .std
            .iter()
            .enumerate()
            .find(|&(_, &s)| !(s.is_finite() && s > 0.0))
        {
            return Err(TransformError::BadStd {
                name: self.name.clone(),
                channel,
                value,
            });
        }
        Ok(())
    }

    /// Normalises a batch in place and records the normalization's name on it.
    ///
    /// # Errors
    ///
    /// [`TransformError::ScaleMismatch`] or [`TransformError::OrderMismatch`] when the batch is not
    /// on this normalization's scale or channel order; the errors of [`Normalization::validate`].
    pub fn apply(&self, mut batch: ChwBatch) -> Result<ChwBatch, TransformError> {
        self.validate()?;
        if batch.scale != self.scale {
            return Err(TransformError::ScaleMismatch {
                name: self.name.clone(),
                expected: self.scale,
                found: batch.scale,
            });
        }
        if batch.order != self.order {
            return Err(TransformError::OrderMismatch {
                name: self.name.clone(),
                expected: self.order,
                found: batch.order,
            });
        }
        let [_, c, h, w] = batch.shape;
        let plane = h * w;
        for image in batch.data.chunks_exact_mut(c * plane) {
            for (ch, values) in image.chunks_exact_mut(plane).enumerate() {
                let (m, inv) = (self.mean[ch], 1.0 / self.std[ch]);
                values.iter_mut().for_each(|v| *v = (*v - m) * inv);
            }
        }
        batch.normalized_by = Some(self.name.clone());
        Ok(batch)
    }
}

/// A normalization as written in a config, a checkpoint or next to pretrained weights: a preset
/// name, or custom values with their scale and order.
///
/// ```
/// use kiln_transforms::{Normalization, NormalizationSpec};
///
/// let spec: NormalizationSpec = serde_json::from_str(r#"{"preset": "caffe-imagenet"}"#)?;
/// assert_eq!(spec.resolve()?, Normalization::caffe_imagenet());
/// let custom: NormalizationSpec = serde_json::from_str(
///     r#"{"preset": "custom", "mean": [0.5], "std": [0.25], "scale": "unit", "order": "gray"}"#,
/// )?;
/// assert_eq!(custom.resolve()?.mean, vec![0.5]);
/// assert_eq!("cifar10".parse::<NormalizationSpec>()?, NormalizationSpec::Cifar10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "preset", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NormalizationSpec {
    /// [`Normalization::torch_imagenet`] (byte scale, RGB).
    TorchImagenet,
    /// [`Normalization::caffe_imagenet`] (byte scale, BGR, std 1).
    CaffeImagenet,
    /// [`Normalization::cifar10`] (unit scale, RGB).
    Cifar10,
    /// [`Normalization::fashion_mnist`] (unit scale, grey).
    FashionMnist,
    /// [`Normalization::mnist`] (unit scale, grey).
    Mnist,
    /// Your own values, with the scale and order they are on.
    Custom {
        /// Per-channel mean.
        mean: Vec<f32>,
        /// Per-channel std.
        std: Vec<f32>,
        /// The scale of `mean` and `std`.
        scale: Scale,
        /// The order `mean` and `std` are listed in.
        order: ChannelOrder,
    },
}

impl NormalizationSpec {
    /// The preset names [`FromStr`](std::str::FromStr) accepts.
    pub const PRESETS: [&'static str; 5] = [
        "torch-imagenet",
        "caffe-imagenet",
        "cifar10",
        "fashion-mnist",
        "mnist",
    ];

    /// The normalization this spec names.
    ///
    /// # Errors
    ///
    /// The errors of [`Normalization::new`] for custom values.
    pub fn resolve(&self) -> Result<Normalization, TransformError> {
        Ok(match self {
            NormalizationSpec::TorchImagenet => Normalization::torch_imagenet(),
            NormalizationSpec::CaffeImagenet => Normalization::caffe_imagenet(),
            NormalizationSpec::Cifar10 => Normalization::cifar10(),
            NormalizationSpec::FashionMnist => Normalization::fashion_mnist(),
            NormalizationSpec::Mnist => Normalization::mnist(),
            NormalizationSpec::Custom {
                mean,
                std,
                scale,
                order,
            } => Normalization::new("custom", mean.clone(), std.clone(), *scale, *order)?,
        })
    }
}

impl std::str::FromStr for NormalizationSpec {
    type Err = TransformError;

    fn from_str(s: &str) -> Result<Self, TransformError> {
        match s {
            "torch-imagenet" => Ok(NormalizationSpec::TorchImagenet),
            "caffe-imagenet" => Ok(NormalizationSpec::CaffeImagenet),
            "cifar10" => Ok(NormalizationSpec::Cifar10),
            "fashion-mnist" => Ok(NormalizationSpec::FashionMnist),
            "mnist" => Ok(NormalizationSpec::Mnist),
            other => Err(TransformError::UnknownPreset {
                name: other.to_string(),
                known: Self::PRESETS.join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::to_chw;
    use kiln_data::{Bgr, Gray, Hwc, Image, collate};

    fn gray_batch(scale: Scale) -> ChwBatch {
        to_chw(
            &collate([(Image::<Hwc, Gray>::new(1, 2, vec![0, 255]).unwrap(), 0)]).unwrap(),
            scale,
        )
    }

    #[test]
    fn applies_mean_and_std_per_channel() {
        // torch: (torch.tensor([0., 1.]) - 0.5) / 0.25 -> [-2., 2.]
        let n = Normalization::new("t", vec![0.5], vec![0.25], Scale::Unit, ChannelOrder::Gray).unwrap();
        let out = n.apply(gray_batch(Scale::Unit)).unwrap();
        assert_eq!(out.data, vec![-2.0, 2.0]);
        assert_eq!(out.normalized_by.as_deref(), Some("t"));
    }

    #[test]
    fn wrong_scale_is_an_error_not_garbage() {
        let err = Normalization::fashion_mnist()
            .apply(gray_batch(Scale::Byte))
            .unwrap_err();
        assert!(matches!(
            err,
            TransformError::ScaleMismatch {
                expected: Scale::Unit,
                found: Scale::Byte,
                ..
            }
        ));
        assert!(err.to_string().contains("Unit"), "{err}");
    }

    #[test]
    fn wrong_order_is_an_error() {
        let img = Image::<Hwc, Bgr>::new(1, 1, vec![1, 2, 3]).unwrap();
        let rgb = to_chw(&collate([(img, 0)]).unwrap(), Scale::Unit);
        let bgr_norm =
            Normalization::new("caffe", vec![0.; 3], vec![1.; 3], Scale::Unit, ChannelOrder::Bgr).unwrap();
        assert!(matches!(
            bgr_norm.apply(rgb),
            Err(TransformError::OrderMismatch { .. })
        ));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert!(matches!(
            Normalization::new("x", vec![0.1, 0.2], vec![1.0], Scale::Unit, ChannelOrder::Gray),
            Err(TransformError::ChannelCount {
                what: "mean",
                expected: 1,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            Normalization::new("x", vec![0.1], vec![0.0], Scale::Unit, ChannelOrder::Gray),
            Err(TransformError::BadStd { channel: 0, .. })
        ));
    }

    #[test]
    fn unit_and_byte_imagenet_presets_give_the_same_values() {
        use crate::sample::normalize_image;
        // 0.485 · 255 = 123.675 and 0.229 · 255 = 58.395 exactly: the presets are one normalization
        // on two scales; float rounding differs in the last bits only.
        let px: Vec<u8> = (0..=255u8).flat_map(|v| [v, 255 - v, v / 2]).collect();
        let img = Image::<Hwc, Bgr>::new(16, 16, px).unwrap();
        let byte = normalize_image(&img, &Normalization::torch_imagenet()).unwrap();
        let unit = normalize_image(&img, &Normalization::torch_imagenet_unit()).unwrap();
        let worst = byte
            .as_slice()
            .iter()
            .zip(unit.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "max difference {worst}");
        // The unit preset is torchvision's arithmetic: the first pixel's red is 0 (BGR [0, 255, 0]),
        // Normalize(...)(ToTensor()(...)) gives (0/255 - 0.485)/0.229 for it.
        assert_eq!(unit.as_slice()[0], (0f32 / 255.0 - 0.485) / 0.229);
    }

    #[test]
    fn caffe_preset_takes_bgr_data_on_the_byte_scale() {
        use crate::sample::{normalize_image, normalize_image_to};
        // One BGR pixel (b=110, g=120, r=130): Caffe subtracts [103.53, 116.28, 123.675] in B, G, R.
        let img = Image::<Hwc, Bgr>::new(1, 1, vec![110, 120, 130]).unwrap();
        let out = normalize_image_to::<Bgr, _>(&img, &Normalization::caffe_imagenet()).unwrap();
        assert_eq!(out.as_slice(), &[110.0 - 103.53, 120.0 - 116.28, 130.0 - 123.675]);
        // Converting to RGB first (the torchvision habit) is refused, not silently wrong.
        assert!(matches!(
            normalize_image(&img, &Normalization::caffe_imagenet()),
            Err(TransformError::OrderMismatch {
                expected: ChannelOrder::Bgr,
                found: ChannelOrder::Rgb,
                ..
            })
        ));
    }

    #[test]
    fn specs_round_trip_and_unknown_presets_list_the_known_ones() {
        for name in NormalizationSpec::PRESETS {
            let spec: NormalizationSpec = name.parse().unwrap();
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(json, format!("{{\"preset\":\"{name}\"}}"));
            assert_eq!(serde_json::from_str::<NormalizationSpec>(&json).unwrap(), spec);
            assert_eq!(spec.resolve().unwrap().name, name);
        }
        let err = "imagenet".parse::<NormalizationSpec>().unwrap_err().to_string();
        assert!(
            err.contains("imagenet") && err.contains("torch-imagenet, caffe-imagenet"),
            "{err}"
        );
        let bad =
            r#"{"preset": "custom", "mean": [0.5, 0.5], "std": [1.0], "scale": "unit", "order": "gray"}"#;
        let spec: NormalizationSpec = serde_json::from_str(bad).unwrap();
        assert!(matches!(spec.resolve(), Err(TransformError::ChannelCount { .. })));
    }
}
