//! Images whose layout and colour order live in the type.
//!
//! OpenCV (and most datasets and Caffe-era weights) hand out **HWC, BGR** bytes; PyTorch models
//! want **CHW, RGB** floats. Mixing the two up gives a model that trains but sees the wrong colours.
//! kiln makes the pair part of the type: `Image<Hwc, Bgr>` and `Image<Chw, Rgb>` are different
//! types, and only named conversions (in kiln-transforms) go from one to the other.

use std::fmt;
use std::marker::PhantomData;

use crate::DataError;

/// A memory layout of pixel data.
pub trait Layout: Send + Sync + Clone + fmt::Debug + 'static {
    /// Short name (`"HWC"`, `"CHW"`), for messages and reports.
    const NAME: &'static str;
}

/// A channel order.
pub trait ColorOrder: Send + Sync + Clone + fmt::Debug + 'static {
    /// Number of channels.
    const CHANNELS: usize;
    /// Short name (`"BGR"`, `"RGB"`, `"Gray"`).
    const NAME: &'static str;
}

/// Height × width × channels, channels interleaved (OpenCV's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hwc;
/// Channels × height × width, planar (PyTorch's layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chw;
/// Blue, green, red (OpenCV's and Caffe's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bgr;
/// Red, green, blue (torchvision's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb;
/// One grey channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gray;

impl Layout for Hwc {
    const NAME: &'static str = "HWC";
}
impl Layout for Chw {
    const NAME: &'static str = "CHW";
}
impl ColorOrder for Bgr {
    const CHANNELS: usize = 3;
    const NAME: &'static str = "BGR";
}
impl ColorOrder for Rgb {
    const CHANNELS: usize = 3;
    const NAME: &'static str = "RGB";
}
impl ColorOrder for Gray {
    const CHANNELS: usize = 1;
    const NAME: &'static str = "Gray";
}

/// A pixel value type: `u8` as decoded, `f32` after conversion to the model's scale.
pub trait Pixel: Copy + Send + Sync + PartialEq + fmt::Debug + 'static {
    /// Short name (`"u8"`, `"f32"`), for messages.
    const NAME: &'static str;
}

impl Pixel for u8 {
    const NAME: &'static str = "u8";
}

impl Pixel for f32 {
    const NAME: &'static str = "f32";
}

/// An image with layout `L`, colour order `C` and pixel type `T` (default `u8`) in its type.
///
/// Loaders hand out `Image<Hwc, Bgr>` (u8); models take `Image<Chw, Rgb, f32>`. A function that
/// wants one cannot be given the other; kiln-transforms holds the named conversions.
#[derive(Clone)]
pub struct Image<L: Layout, C: ColorOrder, T: Pixel = u8> {
    height: usize,
    width: usize,
    data: Vec<T>,
    _marker: PhantomData<(L, C)>,
}

impl<L: Layout, C: ColorOrder, T: Pixel> Image<L, C, T> {
    /// Wraps `data` as an image of `height` × `width` in layout `L` and order `C`.
    ///
    /// # Errors
    ///
    /// [`DataError::ImageSize`] when `data.len() != height * width * C::CHANNELS`.
    pub fn new(height: usize, width: usize, data: Vec<T>) -> Result<Self, DataError> {
        let expected = height * width * C::CHANNELS;
        if data.len() != expected {
            return Err(DataError::ImageSize {
                height,
                width,
                channels: C::CHANNELS,
                expected,
                found: data.len(),
            });
        }
        Ok(Self {
            height,
            width,
            data,
            _marker: PhantomData,
        })
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of channels (from the colour order).
    pub fn channels(&self) -> usize {
        C::CHANNELS
    }

    /// `[H, W, C]` whatever the layout (the layout says how the values are ordered, not the size).
    pub fn hwc_shape(&self) -> [usize; 3] {
        [self.height, self.width, C::CHANNELS]
    }

    /// `[C, H, W]` whatever the layout.
    pub fn chw_shape(&self) -> [usize; 3] {
        [C::CHANNELS, self.height, self.width]
    }

    /// The values in layout `L`.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The values in layout `L`, for in-place transforms (the size cannot change).
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Consumes the image and returns its values in layout `L`.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

impl<L: Layout, C: ColorOrder> Image<L, C, u8> {
    /// The raw bytes in layout `L`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the image and returns its bytes in layout `L`.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

impl<L: Layout, C: ColorOrder, T: Pixel> PartialEq for Image<L, C, T> {
    fn eq(&self, other: &Self) -> bool {
        (self.height, self.width) == (other.height, other.width) && self.data == other.data
    }
}

impl<L: Layout, C: ColorOrder> Eq for Image<L, C, u8> {}

impl<L: Layout, C: ColorOrder, T: Pixel> fmt::Debug for Image<L, C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Image<{}, {}>({}x{}x{} {})",
            L::NAME,
            C::NAME,
            self.height,
            self.width,
            C::CHANNELS,
            T::NAME
        )
    }
}

/// A dataset item that is one labelled image (the classification case).
pub trait LabeledImage<C: ColorOrder> {
    /// The image and its class index.
    fn into_parts(self) -> (Image<Hwc, C>, u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_checked_against_the_colour_order() {
        assert!(Image::<Hwc, Gray>::new(2, 3, vec![0; 6]).is_ok());
        let err = Image::<Hwc, Bgr>::new(2, 3, vec![0; 6]).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ImageSize {
                    expected: 18,
                    found: 6,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn debug_shows_layout_and_order() {
        let img = Image::<Hwc, Bgr>::new(1, 2, vec![0; 6]).unwrap();
        assert_eq!(format!("{img:?}"), "Image<HWC, BGR>(1x2x3 u8)");
    }
}
