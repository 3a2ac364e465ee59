//! HWC u8 → CHW f32 on an explicit scale, in the model's colour order.

use burn::prelude::*;
use burn::tensor::TensorData;
use kiln_data::{Bgr, ColorOrder, Gray, ImageBatch, Rgb};
use serde::{Deserialize, Serialize};

use crate::ChannelOrder;

/// The numeric scale of float pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// `x / 255`, values in `0..=1` (torchvision's `ToTensor`).
    Unit,
    /// `x` as is, values in `0..=255` (Caffe, mmdetection).
    Byte,
}

impl std::str::FromStr for Scale {
    type Err = String;

    /// `unit` or `byte`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unit" => Ok(Scale::Unit),
            "byte" => Ok(Scale::Byte),
            other => Err(format!("unknown scale `{other}`: use unit (0-1) or byte (0-255)")),
        }
    }
}

impl Scale {
    /// The divisor that maps a u8 value onto this scale (255 or 1).
    pub fn divisor(self) -> f32 {
        match self {
            Scale::Unit => 255.0,
            Scale::Byte => 1.0,
        }
    }
}

/// A stored colour order and the order a model receives it in.
pub trait ModelColor: ColorOrder {
    /// The order after conversion (BGR → RGB; grey and RGB unchanged).
    type Out: ColorOrder;
    /// For each output channel, the input channel it comes from.
    const SOURCE: &'static [usize];
    /// The output order as a value.
    const OUT_ORDER: ChannelOrder;
}

impl ModelColor for Gray {
    type Out = Gray;
    const SOURCE: &'static [usize] = &[0];
    const OUT_ORDER: ChannelOrder = ChannelOrder::Gray;
}

impl ModelColor for Bgr {
    type Out = Rgb;
    const SOURCE: &'static [usize] = &[2, 1, 0];
    const OUT_ORDER: ChannelOrder = ChannelOrder::Rgb;
}

impl ModelColor for Rgb {
    type Out = Rgb;
    const SOURCE: &'static [usize] = &[0, 1, 2];
    const OUT_ORDER: ChannelOrder = ChannelOrder::Rgb;
}

/// The [`ChannelOrder`] value of a colour-order type.
pub trait OrderValue: ColorOrder {
    /// The order as a value.
    const ORDER: ChannelOrder;
}

impl OrderValue for Gray {
    const ORDER: ChannelOrder = ChannelOrder::Gray;
}
impl OrderValue for Rgb {
    const ORDER: ChannelOrder = ChannelOrder::Rgb;
}
impl OrderValue for Bgr {
    const ORDER: ChannelOrder = ChannelOrder::Bgr;
}

/// A colour order whose channels can be rearranged into order `O` (e.g. BGR kept as BGR for
/// Caffe-trained weights, or turned into RGB for torchvision-trained ones).
pub trait ReorderTo<O: ColorOrder>: ColorOrder {
    /// For each output channel, the input channel it comes from.
    const MAP: &'static [usize];
}

impl ReorderTo<Rgb> for Bgr {
    const MAP: &'static [usize] = &[2, 1, 0];
}
impl ReorderTo<Bgr> for Bgr {
    const MAP: &'static [usize] = &[0, 1, 2];
}
impl ReorderTo<Rgb> for Rgb {
    const MAP: &'static [usize] = &[0, 1, 2];
}
impl ReorderTo<Bgr> for Rgb {
    const MAP: &'static [usize] = &[2, 1, 0];
}
impl ReorderTo<Gray> for Gray {
    const MAP: &'static [usize] = &[0];
}

/// A batch of CHW float images that knows its scale, channel order and whether it is normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct ChwBatch {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    /// Planar float data, `N·C·H·W` values.
    pub data: Vec<f32>,
    /// Labels, one per image.
    pub labels: Vec<u32>,
    /// The scale the pixels were converted to.
    pub scale: Scale,
    /// The channel order of `data`.
    pub order: ChannelOrder,
    /// The name of the normalization applied, if any.
    pub normalized_by: Option<String>,
}

/// Converts an HWC u8 batch to CHW f32 on `scale`, reordering BGR to RGB.
///
/// # Shapes
///
/// `[N, H, W, C]` bytes in, `[N, C, H, W]` floats out.
pub fn to_chw<C: ModelColor>(batch: &ImageBatch<C>, scale: Scale) -> ChwBatch {
    let [h, w, c] = batch.shape;
    let n = batch.len();
    let plane = h * w;
    // A division, not a multiplication by 1/255: bit-identical to torchvision's `x.float().div(255)`.
    let divisor = scale.divisor();
    let mut data = vec![0f32; n * c * plane];
    for (img, out) in batch
        .pixels
        .chunks_exact(plane * c)
        .zip(data.chunks_exact_mut(plane * c))
    {
        for (oc, &src) in C::SOURCE.iter().enumerate() {
            let dst = &mut out[oc * plane..(oc + 1) * plane];
            for (p, d) in dst.iter_mut().enumerate() {
                *d = f32::from(img[p * c + src]) / divisor;
            }
        }
    }
    ChwBatch {
        shape: [n, c, h, w],
        data,
        labels: batch.labels.clone(),
        scale,
        order: C::OUT_ORDER,
        normalized_by: None,
    }
}

impl ChwBatch {
    /// Moves the batch onto `device` as `([N, C, H, W]` float images, `[N]` int labels`)`.
    pub fn into_tensors(self, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let n = self.labels.len();
        let labels: Vec<i64> = self.labels.into_iter().map(i64::from).collect();
        let images = Tensor::<4>::from_data(TensorData::new(self.data, self.shape), device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
        (images, targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_data::{Hwc, Image, collate};

    #[test]
    fn scales_parse_by_name() {
        assert_eq!("unit".parse::<Scale>(), Ok(Scale::Unit));
        assert_eq!("byte".parse::<Scale>(), Ok(Scale::Byte));
        assert!(
            "0-255"
                .parse::<Scale>()
                .unwrap_err()
                .contains("unit (0-1) or byte (0-255)")
        );
    }

    #[test]
    fn bgr_becomes_planar_rgb_on_the_unit_scale() {
        // One 1x2 BGR image: pixel0 = (b=10, g=20, r=30), pixel1 = (b=40, g=50, r=255).
        let img = Image::<Hwc, Bgr>::new(1, 2, vec![10, 20, 30, 40, 50, 255]).unwrap();
        let b = to_chw(&collate([(img, 1)]).unwrap(), Scale::Unit);
        assert_eq!(b.shape, [1, 3, 1, 2]);
        assert_eq!(b.order, ChannelOrder::Rgb);
        // torch: torch.tensor([30, 255, 20, 50, 10, 40]).float().div(255) — exact equality.
        let want: Vec<f32> = [30f32, 255., 20., 50., 10., 40.]
            .iter()
            .map(|v| v / 255.)
            .collect();
        assert_eq!(b.data, want);
    }

    #[test]
    fn byte_scale_keeps_values() {
        let img = Image::<Hwc, Gray>::new(1, 3, vec![0, 128, 255]).unwrap();
        let b = to_chw(&collate([(img, 0)]).unwrap(), Scale::Byte);
        assert_eq!(b.data, vec![0., 128., 255.]);
        assert_eq!(b.scale, Scale::Byte);
    }

    #[test]
    fn tensors_have_the_right_shapes_and_int_labels() {
        let imgs = (0..3).map(|i| {
            (
                Image::<Hwc, Gray>::new(2, 2, vec![i; 4]).unwrap(),
                u32::from(i) + 4,
            )
        });
        let (x, y) = to_chw(&collate(imgs).unwrap(), Scale::Unit).into_tensors(&Device::flex());
        assert_eq!(x.dims(), [3, 1, 2, 2]);
        assert_eq!(y.into_data().try_into_vec_as::<i64>().unwrap(), vec![4, 5, 6]);
    }
}
