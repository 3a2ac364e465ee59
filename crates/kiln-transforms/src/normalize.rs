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
}
