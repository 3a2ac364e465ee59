//! Random augmentation, seeded by the loader's per-sample generator, with box-aware forms.
//!
//! * [`RandomResizedCrop`] — torchvision's parameters: area fraction in `scale` (0.08, 1), aspect
//!   ratio log-uniform in `ratio` (3/4, 4/3), 10 attempts, then the centre-crop fallback.
//! * [`random_flip`] — a horizontal flip with probability `p`.
//! * [`crop_resize`] / [`crop_resize_normalize`] — a window of the image resized (bilinear,
//!   OpenCV geometry) and optionally mirrored, in one pass; the second also normalises into CHW f32.
//!   Cropping copies nothing and a flip costs nothing (the taps run backwards).
//! * [`map_boxes`] — boxes through the same crop, resize and flip: shifted, scaled, mirrored, clipped
//!   to the output, and dropped (with their labels) when nothing is left of them.
//! * [`center_window`] — torchvision's `CenterCrop` position (Python rounding).
//! * [`RandomCrop`] / [`pad_crop`] — torchvision's `RandomCrop(size, padding)` (CIFAR's pad-4), zero or
//!   reflect padding, without building the padded image; [`shift_boxes`] moves boxes with it.
//! * [`RandomErasing`] — torchvision's, in place on the normalised CHW image.
//! * [`vflip`] / [`vflip_boxes`], and [`to_grayscale`] (PIL's `convert("L")`, as torchvision's
//!   `Grayscale` on PIL images).
//! * [`ColorJitter`] — brightness, contrast and saturation exactly as PIL's `ImageEnhance`, hue as
//!   torchvision's PIL path (PIL's 8-bit HSV round trip), in a random order; all bit-exact.
//!
//! ```
//! use kiln_data::{Bgr, Hwc, Image, SampleRng};
//! use kiln_transforms::augment::{crop_resize_normalize, map_boxes, random_flip, RandomResizedCrop};
//! use kiln_transforms::Normalization;
//!
//! let img = Image::<Hwc, Bgr>::new(100, 80, vec![128; 100 * 80 * 3])?;
//! let mut rng = SampleRng::new(7); // the loader hands each sample its own
//! let window = RandomResizedCrop::new(64, 64).sample(img.height(), img.width(), &mut rng);
//! let flip = random_flip(&mut rng, 0.5);
//! let x = crop_resize_normalize(&img, window, 64, 64, flip, &Normalization::torch_imagenet_unit())?;
//! assert_eq!(x.chw_shape(), [3, 64, 64]);
//! let boxes = map_boxes(&[[10.0, 10.0, 40.0, 50.0]], &[3], window, [64, 64], flip);
//! assert!(boxes.boxes.len() <= 1); // kept if any of it is inside the crop
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use kiln_data::{Chw, ColorOrder, Hwc, Image, SampleRng};

use crate::sample::resize_normalize_with;
pub use crate::sample::{Window, crop_resize};
use crate::{ModelColor, Normalization, TransformError};

/// torchvision's `RandomResizedCrop` parameters; `sample` draws a crop window.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    /// Output height.
    pub height: usize,
    /// Output width.
    pub width: usize,
    /// Range of the crop's area as a fraction of the image's (default `(0.08, 1.0)`).
    pub scale: (f64, f64),
    /// Range of the crop's aspect ratio w/h, drawn log-uniformly (default `(3/4, 4/3)`).
    pub ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// torchvision's defaults for an output of `height` × `width`.
    pub fn new(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// A crop window of an `img_h` × `img_w` image, by torchvision's `get_params`: up to 10 draws of
    /// (area, log-ratio); the first that fits is placed uniformly; otherwise a centre crop clamped
    /// to the ratio range.
    pub fn sample(&self, img_h: usize, img_w: usize, rng: &mut SampleRng) -> Window {
        let area = (img_h * img_w) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target = area * rng.uniform_in(self.scale.0, self.scale.1);
            let aspect = rng.uniform_in(lr0, lr1).exp();
            let w = (target * aspect).sqrt().round() as usize;
            let h = (target / aspect).sqrt().round() as usize;
            if 0 < w && w <= img_w && 0 < h && h <= img_h {
                let top = rng.below((img_h - h + 1) as u64) as usize;
                let left = rng.below((img_w - w + 1) as u64) as usize;
                return Window {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        centre_fallback(img_h, img_w, self.ratio)
    }
}

/// torchvision's fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred.
fn centre_fallback(img_h: usize, img_w: usize, ratio: (f64, f64)) -> Window {
    let in_ratio = img_w as f64 / img_h as f64;
    let (min_r, max_r) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (h, w) = if in_ratio < min_r {
        (((img_w as f64) / min_r).round() as usize, img_w)
    } else if in_ratio > max_r {
        (img_h, ((img_h as f64) * max_r).round() as usize)
    } else {
        (img_h, img_w)
    };
    let (h, w) = (h.clamp(1, img_h.max(1)), w.clamp(1, img_w.max(1)));
    // An empty image gives a 1x1 window at 0, which the resize then refuses (BadWindow).
    Window {
        top: img_h.saturating_sub(h) / 2,
        left: img_w.saturating_sub(w) / 2,
        height: h,
        width: w,
    }
}

/// True with probability `p` (torchvision's `RandomHorizontalFlip(p)` decision).
pub fn random_flip(rng: &mut SampleRng, p: f64) -> bool {
    rng.uniform() < p
}

/// [`crop_resize`] then [`normalize_image`](crate::normalize_image), in one pass.
///
/// # Errors
///
/// Those of [`crop_resize`] and of the normalization.
pub fn crop_resize_normalize<C: ModelColor>(
    img: &Image<Hwc, C>,
    window: Window,
    out_h: usize,
    out_w: usize,
    flip: bool,
    norm: &Normalization,
) -> Result<Image<Chw, C::Out, f32>, TransformError> {
    resize_normalize_with(img, window, out_h, out_w, flip, norm, C::SOURCE, C::OUT_ORDER)
}

/// Boxes after [`map_boxes`], with what was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedBoxes {
    /// `[x1, y1, x2, y2]` in output pixels, clipped to the output.
    pub boxes: Vec<[f32; 4]>,
    /// The labels of the kept boxes.
    pub labels: Vec<u32>,
    /// Index in the input of each kept box.
    pub kept: Vec<usize>,
    /// `[output / window]` for height and width.
    pub scale: [f32; 2],
}

/// A COCO sample resized whole to `out` (`[H, W]`), optionally flipped, normalised, with its boxes,
/// labels and crowd flags moved along (boxes left without area dropped): what a detection model
/// is given, before the batch is padded.
///
/// # Errors
///
/// [`kiln_data::DataError::Custom`] with the resize's or normalisation's error, naming the
/// image's file.
pub fn resize_detection(
    item: kiln_data::DetectionItem,
    out: [usize; 2],
    flip: bool,
    norm: &Normalization,
) -> Result<kiln_data::DetSample<kiln_data::Rgb>, kiln_data::DataError> {
    let (h, w) = (item.image.height(), item.image.width());
    let window = crate::sample::Window {
        top: 0,
        left: 0,
        height: h,
        width: w,
    };
    let image = crop_resize_normalize(&item.image, window, out[0], out[1], flip, norm)
        .map_err(|e| kiln_data::DataError::Custom(format!("{}: {e}", item.path.display())))?;
    let moved = map_boxes(&item.boxes, &item.labels, window, out, flip);
    Ok(kiln_data::DetSample {
        image,
        crowd: moved
            .kept
            .iter()
            .map(|&i| item.crowd.get(i).copied().unwrap_or(false))
            .collect(),
        boxes: moved.boxes,
        labels: moved.labels,
        original_hw: [h, w],
        path: Some(item.path),
    })
}

/// Moves `boxes` (`[x1, y1, x2, y2]` in the image's pixels) through a crop to `window`, a resize to
/// `out` (`[H, W]`) and an optional horizontal flip. Boxes are clipped to the output; a box with no
/// area left is dropped with its label.
pub fn map_boxes(
    boxes: &[[f32; 4]],
    labels: &[u32],
    window: Window,
    out: [usize; 2],
    flip: bool,
) -> MappedBoxes {
    let sy = out[0] as f32 / window.height.max(1) as f32;
    let sx = out[1] as f32 / window.width.max(1) as f32;
    let (w_out, h_out) = (out[1] as f32, out[0] as f32);
    let mut result = MappedBoxes {
        boxes: Vec::new(),
        labels: Vec::new(),
        kept: Vec::new(),
        scale: [sy, sx],
    };
    for (i, (b, &label)) in boxes.iter().zip(labels).enumerate() {
        let mut x1 = ((b[0] - window.left as f32) * sx).clamp(0.0, w_out);
        let mut x2 = ((b[2] - window.left as f32) * sx).clamp(0.0, w_out);
        let y1 = ((b[1] - window.top as f32) * sy).clamp(0.0, h_out);
        let y2 = ((b[3] - window.top as f32) * sy).clamp(0.0, h_out);
        if flip {
            (x1, x2) = (w_out - x2, w_out - x1);
        }
        if x2 > x1 && y2 > y1 {
            result.boxes.push([x1, y1, x2, y2]);
            result.labels.push(label);
            result.kept.push(i);
        }
    }
    result
}

/// torchvision's `CenterCrop` window: `top = round((h − th) / 2)`, `left = round((w − tw) / 2)`,
/// with Python's round-half-to-even.
///
/// # Errors
///
/// [`TransformError::BadWindow`] when the crop is larger than the image (pad first).
pub fn center_window(
    img_h: usize,
    img_w: usize,
    height: usize,
    width: usize,
) -> Result<Window, TransformError> {
    if height > img_h || width > img_w || height == 0 || width == 0 {
        return Err(TransformError::BadWindow {
            window: [0, 0, height, width],
            image: [img_h, img_w],
        });
    }
    let half_even = |d: usize| {
        // round(d / 2) with ties to even: d/2 is a tie exactly when d is odd.
        let q = d / 2;
        if d % 2 == 1 && q % 2 == 1 { q + 1 } else { q }
    };
    Ok(Window {
        top: half_even(img_h - height),
        left: half_even(img_w - width),
        height,
        width,
    })
}

/// How [`pad_crop`] fills pixels outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadMode {
    /// Zeros (torchvision's default `fill=0`).
    #[default]
    Zero,
    /// Mirror without repeating the edge (`padding_mode="reflect"`, numpy's `reflect`).
    Reflect,
}

/// torchvision's `RandomCrop(size, padding)`: pad every side by `padding`, then crop
/// `height × width` at a uniform position (CIFAR's classic `RandomCrop(32, padding=4)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomCrop {
    /// Crop height.
    pub height: usize,
    /// Crop width.
    pub width: usize,
    /// Padding on every side.
    pub padding: usize,
    /// How the padding is filled.
    pub mode: PadMode,
}

impl RandomCrop {
    /// The crop's top-left corner in padded coordinates, drawn uniformly.
    ///
    /// # Errors
    ///
    /// [`TransformError::BadWindow`] when the crop is larger than the padded image.
    pub fn sample(
        &self,
        img_h: usize,
        img_w: usize,
        rng: &mut SampleRng,
    ) -> Result<[usize; 2], TransformError> {
        let (ph, pw) = (img_h + 2 * self.padding, img_w + 2 * self.padding);
        if self.height > ph || self.width > pw {
            return Err(TransformError::BadWindow {
                window: [0, 0, self.height, self.width],
                image: [ph, pw],
            });
        }
        let top = rng.below((ph - self.height + 1) as u64) as usize;
        let left = rng.below((pw - self.width + 1) as u64) as usize;
        Ok([top, left])
    }

    /// Draws a position and crops; also returns the shift `[dy, dx] = padding − corner` that moves
    /// image coordinates into crop coordinates (for [`shift_boxes`]).
    ///
    /// # Errors
    ///
    /// Those of [`RandomCrop::sample`] and [`pad_crop`].
    pub fn apply<C: ColorOrder>(
        &self,
        img: &Image<Hwc, C>,
        rng: &mut SampleRng,
    ) -> Result<(Image<Hwc, C>, [f32; 2]), TransformError> {
        let [top, left] = self.sample(img.height(), img.width(), rng)?;
        let out = pad_crop(
            img,
            self.padding,
            self.mode,
            [top, left],
            [self.height, self.width],
        )?;
        let shift = [
            self.padding as f32 - top as f32,
            self.padding as f32 - left as f32,
        ];
        Ok((out, shift))
    }
}

/// The `size` (`[H, W]`) crop at `corner` (`[top, left]`, in padded coordinates) of `img` padded by
/// `padding` on every side, without building the padded image.
///
/// # Errors
///
/// [`TransformError::BadWindow`] when the crop leaves the padded image, or reflect padding is at
/// least as wide as the image.
pub fn pad_crop<C: ColorOrder>(
    img: &Image<Hwc, C>,
    padding: usize,
    mode: PadMode,
    corner: [usize; 2],
    size: [usize; 2],
) -> Result<Image<Hwc, C>, TransformError> {
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    let bad = TransformError::BadWindow {
        window: [corner[0], corner[1], size[0], size[1]],
        image: [h + 2 * padding, w + 2 * padding],
    };
    if corner[0] + size[0] > h + 2 * padding || corner[1] + size[1] > w + 2 * padding || h == 0 || w == 0 {
        return Err(bad);
    }
    if mode == PadMode::Reflect && (padding >= h || padding >= w) {
        return Err(bad);
    }
    // Source index of a padded coordinate, or None for zero padding.
    let source = |p: usize, n: usize| -> Option<usize> {
        let q = p as isize - padding as isize;
        let n = n as isize;
        match mode {
            _ if (0..n).contains(&q) => Some(q as usize),
            PadMode::Zero => None,
            PadMode::Reflect => Some(if q < 0 {
                (-q) as usize
            } else {
                (2 * n - 2 - q) as usize
            }),
        }
    };
    let src = img.as_bytes();
    let mut out = vec![0u8; size[0] * size[1] * c];
    for y in 0..size[0] {
        let Some(sy) = source(corner[0] + y, h) else {
            continue;
        };
        for x in 0..size[1] {
            if let Some(sx) = source(corner[1] + x, w) {
                let (d, s) = ((y * size[1] + x) * c, (sy * w + sx) * c);
                out[d..d + c].copy_from_slice(&src[s..s + c]);
            }
        }
    }
    Image::new(size[0], size[1], out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// torchvision's `Pad(padding, padding_mode)`: `padding` pixels on every side, zeros or a
/// reflection. Boxes follow with [`shift_boxes`] by `[padding, padding]`.
///
/// # Errors
///
/// As [`pad_crop`].
pub fn pad<C: ColorOrder>(
    img: &Image<Hwc, C>,
    padding: usize,
    mode: PadMode,
) -> Result<Image<Hwc, C>, TransformError> {
    let size = [img.height() + 2 * padding, img.width() + 2 * padding];
    pad_crop(img, padding, mode, [0, 0], size)
}

/// Boxes moved by `shift` (`[dy, dx]`, e.g. from [`RandomCrop::apply`]) into an output of `out`
/// (`[H, W]`): clipped, and dropped with their labels when nothing is left.
pub fn shift_boxes(boxes: &[[f32; 4]], labels: &[u32], shift: [f32; 2], out: [usize; 2]) -> MappedBoxes {
    let (h, w) = (out[0] as f32, out[1] as f32);
    let mut result = MappedBoxes {
        boxes: Vec::new(),
        labels: Vec::new(),
        kept: Vec::new(),
        scale: [1.0, 1.0],
    };
    for (i, (b, &label)) in boxes.iter().zip(labels).enumerate() {
        let x1 = (b[0] + shift[1]).clamp(0.0, w);
        let x2 = (b[2] + shift[1]).clamp(0.0, w);
        let y1 = (b[1] + shift[0]).clamp(0.0, h);
        let y2 = (b[3] + shift[0]).clamp(0.0, h);
        if x2 > x1 && y2 > y1 {
            result.boxes.push([x1, y1, x2, y2]);
            result.labels.push(label);
            result.kept.push(i);
        }
    }
    result
}

/// torchvision's `RandomErasing` on a normalised CHW image: with probability `p`, a rectangle of
/// area fraction in `scale` and aspect ratio (h/w) log-uniform in `ratio` is set to `value`
/// (10 attempts; none fits → nothing is erased).
#[derive(Debug, Clone, PartialEq)]
pub struct RandomErasing {
    /// Probability of erasing (default 0.5).
    pub p: f64,
    /// Range of the erased area as a fraction of the image (default `(0.02, 0.33)`).
    pub scale: (f64, f64),
    /// Range of the erased rectangle's aspect ratio (default `(0.3, 3.3)`).
    pub ratio: (f64, f64),
    /// The value written (default 0: the mean colour after normalisation).
    pub value: f32,
}

impl Default for RandomErasing {
    fn default() -> Self {
        Self {
            p: 0.5,
            scale: (0.02, 0.33),
            ratio: (0.3, 3.3),
            value: 0.0,
        }
    }
}

impl RandomErasing {
    /// The rectangle to erase in an `img_h` × `img_w` image, or `None` (by `p`, or when no draw
    /// fits), as torchvision's `get_params` draws it.
    pub fn sample(&self, img_h: usize, img_w: usize, rng: &mut SampleRng) -> Option<Window> {
        if rng.uniform() >= self.p {
            return None;
        }
        let area = (img_h * img_w) as f64;
        let (lr0, lr1) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let erase = area * rng.uniform_in(self.scale.0, self.scale.1);
            let aspect = rng.uniform_in(lr0, lr1).exp();
            let h = (erase * aspect).sqrt().round() as usize;
            let w = (erase / aspect).sqrt().round() as usize;
            if !(h < img_h && w < img_w) {
                continue;
            }
            let top = rng.below((img_h - h + 1) as u64) as usize;
            let left = rng.below((img_w - w + 1) as u64) as usize;
            return Some(Window {
                top,
                left,
                height: h,
                width: w,
            });
        }
        None
    }

    /// Erases in place (every channel); returns the rectangle erased, if any.
    pub fn apply<C: ColorOrder>(&self, img: &mut Image<Chw, C, f32>, rng: &mut SampleRng) -> Option<Window> {
        let (h, w) = (img.height(), img.width());
        let win = self.sample(h, w, rng)?;
        let data = img.as_mut_slice();
        for ch in 0..C::CHANNELS {
            for y in win.top..win.top + win.height {
                let start = (ch * h + y) * w + win.left;
                data[start..start + win.width].fill(self.value);
            }
        }
        Some(win)
    }
}

/// Mirrors an image top–bottom (torchvision's `vflip`).
///
/// # Errors
///
/// Never in practice ([`TransformError::Internal`] would mean a bug in kiln).
pub fn vflip<C: ColorOrder>(img: &Image<Hwc, C>) -> Result<Image<Hwc, C>, TransformError> {
    let line = img.width() * C::CHANNELS;
    let mut out = Vec::with_capacity(img.as_bytes().len());
    for row in img.as_bytes().chunks_exact(line.max(1)).rev() {
        out.extend_from_slice(row);
    }
    Image::new(img.height(), img.width(), out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// Boxes of an image of height `height` after [`vflip`].
pub fn vflip_boxes(boxes: &[[f32; 4]], height: usize) -> Vec<[f32; 4]> {
    let h = height as f32;
    boxes.iter().map(|b| [b[0], h - b[3], b[2], h - b[1]]).collect()
}

/// Converts to one grey channel with PIL's `convert("L")` (what torchvision's `Grayscale` does to a
/// PIL image): `L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`.
///
/// # Errors
///
/// Never in practice ([`TransformError::Internal`] would mean a bug in kiln).
pub fn to_grayscale<C: ModelColor>(
    img: &Image<Hwc, C>,
) -> Result<Image<Hwc, kiln_data::Gray>, TransformError> {
    let c = C::CHANNELS;
    let data = if c == 1 {
        img.as_bytes().to_vec()
    } else {
        // The model order is RGB for both BGR and RGB inputs: SOURCE maps R, G, B.
        let [r, g, b] = [C::SOURCE[0], C::SOURCE[1], C::SOURCE[2]];
        img.as_bytes()
            .chunks_exact(c)
            .map(|p| {
                ((19595 * u32::from(p[r]) + 38470 * u32::from(p[g]) + 7471 * u32::from(p[b]) + 0x8000) >> 16)
                    as u8
            })
            .collect()
    };
    Image::new(img.height(), img.width(), data).map_err(|e| TransformError::Internal(e.to_string()))
}

/// PIL's `Image.blend(im1, im2, alpha)` on 8-bit values: `in1 + alpha·(in2 − in1)` in f32,
/// truncated; clipped to 0..=255 when `alpha` is outside [0, 1].
fn pil_blend(in1: u8, in2: u8, alpha: f32) -> u8 {
    let v = f32::from(in1) + alpha * (f32::from(in2) - f32::from(in1));
    // `as u8` truncates toward zero and saturates, which is both of PIL's branches.
    v as u8
}

fn blend_with<C: ColorOrder>(
    img: &Image<Hwc, C>,
    degenerate: impl Fn(usize) -> u8,
    factor: f32,
) -> Result<Image<Hwc, C>, TransformError> {
    let c = C::CHANNELS;
    let data = img
        .as_bytes()
        .iter()
        .enumerate()
        .map(|(i, &v)| pil_blend(degenerate(i / c), v, factor))
        .collect();
    Image::new(img.height(), img.width(), data).map_err(|e| TransformError::Internal(e.to_string()))
}

/// PIL's `ImageEnhance.Brightness(img).enhance(factor)` (torchvision's `adjust_brightness` on PIL
/// images): a blend with black.
///
/// # Errors
///
/// Never in practice ([`TransformError::Internal`] would mean a bug in kiln).
pub fn adjust_brightness<C: ColorOrder>(
    img: &Image<Hwc, C>,
    factor: f32,
) -> Result<Image<Hwc, C>, TransformError> {
    blend_with(img, |_| 0, factor)
}

/// PIL's `ImageEnhance.Contrast`: a blend with the image's mean grey level,
/// `int(mean(L) + 0.5)`, L as [`to_grayscale`].
///
/// # Errors
///
/// Never in practice ([`TransformError::Internal`] would mean a bug in kiln).
pub fn adjust_contrast<C: ModelColor>(
    img: &Image<Hwc, C>,
    factor: f32,
) -> Result<Image<Hwc, C>, TransformError> {
    let grey = to_grayscale(img)?;
    let n = grey.as_bytes().len().max(1) as f64;
    let mean = grey.as_bytes().iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let level = (mean + 0.5) as u8;
    blend_with(img, |_| level, factor)
}

/// PIL's `ImageEnhance.Color` (torchvision's `adjust_saturation` on PIL images): a blend with the
/// image's own grey version.
///
/// # Errors
///
/// Never in practice ([`TransformError::Internal`] would mean a bug in kiln).
pub fn adjust_saturation<C: ModelColor>(
    img: &Image<Hwc, C>,
    factor: f32,
) -> Result<Image<Hwc, C>, TransformError> {
    let grey = to_grayscale(img)?;
    let g = grey.as_bytes();
    blend_with(img, |pixel| g[pixel], factor)
}

fn clip8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// PIL's `rgb2hsv` (Convert.c), with its mix of float and double arithmetic reproduced.
fn pil_rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if minc == maxc {
        return [0, 0, maxc];
    }
    let cr = f32::from(maxc - minc);
    let s = cr / f32::from(maxc);
    let rc = f32::from(maxc - r) / cr;
    let gc = f32::from(maxc - g) / cr;
    let bc = f32::from(maxc - b) / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    let h = ((f64::from(h) / 6.0 + 1.0) % 1.0) as f32;
    [
        clip8((f64::from(h) * 255.0) as i32),
        clip8((f64::from(s) * 255.0) as i32),
        maxc,
    ]
}

/// PIL's `hsv2rgb` (Convert.c).
fn pil_hsv_to_rgb(h: u8, s: u8, v: u8) -> [u8; 3] {
    if s == 0 {
        return [v, v, v];
    }
    let hf = f64::from(f32::from(h)) * 6.0 / 255.0;
    let i = hf.floor() as i32;
    let f = (hf - f64::from(i)) as f32;
    let fs = (f64::from(s) / 255.0) as f32;
    let vd = f64::from(v);
    let p = clip8((vd * (1.0 - f64::from(fs))).round() as i32);
    let q = clip8((vd * (1.0 - f64::from(fs * f))).round() as i32);
    let t = clip8((vd * (1.0 - f64::from(fs) * (1.0 - f64::from(f)))).round() as i32);
    match i.rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// torchvision's `adjust_hue` on a PIL image: to PIL's 8-bit HSV, `H += int(factor · 255)` with
/// wrap-around, back to RGB. `factor` in [-0.5, 0.5]; grey images are returned unchanged.
///
/// # Errors
///
/// [`TransformError::BadFactor`] for a factor outside [-0.5, 0.5].
pub fn adjust_hue<C: ModelColor>(img: &Image<Hwc, C>, factor: f32) -> Result<Image<Hwc, C>, TransformError> {
    if !(-0.5..=0.5).contains(&factor) {
        return Err(TransformError::BadFactor {
            what: "hue",
            value: factor,
            range: "[-0.5, 0.5]",
        });
    }
    let c = C::CHANNELS;
    if c != 3 {
        return Ok(img.clone());
    }
    // np.int32(hue_factor * 255).astype(np.uint8): truncate toward zero, then wrap.
    let shift = ((f64::from(factor) * 255.0) as i32).rem_euclid(256) as u8;
    let [ri, gi, bi] = [C::SOURCE[0], C::SOURCE[1], C::SOURCE[2]];
    let mut data = img.as_bytes().to_vec();
    for px in data.chunks_exact_mut(3) {
        let [h, s, v] = pil_rgb_to_hsv(px[ri], px[gi], px[bi]);
        let [r, g, b] = pil_hsv_to_rgb(h.wrapping_add(shift), s, v);
        (px[ri], px[gi], px[bi]) = (r, g, b);
    }
    Image::new(img.height(), img.width(), data).map_err(|e| TransformError::Internal(e.to_string()))
}

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)`: brightness, contrast and
/// saturation factors drawn uniformly from `[max(0, 1 − x), 1 + x]`, the hue shift from
/// `[−hue, hue]` (`hue` ≤ 0.5), the four adjustments applied in a random order. Each adjustment is
/// bit-exact with torchvision on PIL images.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ColorJitter {
    /// Brightness strength (0 = off).
    pub brightness: f32,
    /// Contrast strength (0 = off).
    pub contrast: f32,
    /// Saturation strength (0 = off).
    pub saturation: f32,
    /// Hue strength, at most 0.5 (0 = off).
    pub hue: f32,
}

impl ColorJitter {
    /// Draws the order and factors from `rng` and applies them.
    ///
    /// # Errors
    ///
    /// [`TransformError::BadFactor`] for a hue strength above 0.5.
    pub fn apply<C: ModelColor>(
        &self,
        img: &Image<Hwc, C>,
        rng: &mut SampleRng,
    ) -> Result<Image<Hwc, C>, TransformError> {
        let mut order = [0usize, 1, 2, 3];
        rng.shuffle(&mut order);
        let mut factor = |x: f32| -> Option<f32> {
            (x > 0.0).then(|| rng.uniform_in(f64::from((1.0 - x).max(0.0)), f64::from(1.0 + x)) as f32)
        };
        let (b, c, s) = (
            factor(self.brightness),
            factor(self.contrast),
            factor(self.saturation),
        );
        let h = (self.hue > 0.0).then(|| rng.uniform_in(-f64::from(self.hue), f64::from(self.hue)) as f32);
        let mut cur = img.clone();
        for op in order {
            cur = match (op, b, c, s, h) {
                (0, Some(f), ..) => adjust_brightness(&cur, f)?,
                (1, _, Some(f), ..) => adjust_contrast(&cur, f)?,
                (2, _, _, Some(f), _) => adjust_saturation(&cur, f)?,
                (3, .., Some(f)) => adjust_hue(&cur, f)?,
                _ => cur,
            };
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelOrder, Scale, normalize_image, resize_bilinear};
    use kiln_data::{Bgr, Gray};

    fn ramp(h: usize, w: usize) -> Image<Hwc, Bgr> {
        let px = (0..h * w * 3).map(|i| ((i * 7) % 251) as u8).collect();
        Image::new(h, w, px).unwrap()
    }

    #[test]
    fn windows_follow_torchvision_bounds_and_are_seeded() {
        let rrc = RandomResizedCrop::new(224, 224);
        let mut fallbacks = 0;
        for seed in 0..2000 {
            let win = rrc.sample(256, 300, &mut SampleRng::new(seed));
            assert!(
                win.top + win.height <= 256 && win.left + win.width <= 300,
                "{win:?}"
            );
            let frac = (win.height * win.width) as f64 / (256.0 * 300.0);
            let ratio = win.width as f64 / win.height as f64;
            // Rounding to whole pixels moves area and ratio slightly past the drawn values.
            assert!((0.075..=1.0).contains(&frac), "{win:?} area fraction {frac}");
            assert!((0.73..=1.37).contains(&ratio), "{win:?} ratio {ratio}");
            if win == centre_fallback(256, 300, rrc.ratio) {
                fallbacks += 1;
            }
        }
        assert!(
            fallbacks < 20,
            "fallback is rare for a near-square image: {fallbacks}"
        );
        let a = rrc.sample(256, 300, &mut SampleRng::new(5));
        assert_eq!(a, rrc.sample(256, 300, &mut SampleRng::new(5)));
    }

    #[test]
    fn an_empty_image_is_an_error_not_a_panic() {
        let img = Image::<Hwc, Bgr>::new(0, 0, vec![]).unwrap();
        let win = RandomResizedCrop::new(8, 8).sample(0, 0, &mut SampleRng::new(1));
        assert!(matches!(
            crop_resize(&img, win, 8, 8, false),
            Err(TransformError::BadWindow { .. })
        ));
        assert!(
            RandomErasing {
                p: 1.0,
                ..RandomErasing::default()
            }
            .sample(0, 0, &mut SampleRng::new(1))
            .is_none()
        );
    }

    #[test]
    fn impossible_draws_fall_back_to_torchvisions_centre_crop() {
        // scale > 1 can never fit: torchvision's fallback for a 100x400 image (ratio 4 > 4/3) is
        // h = 100, w = round(100 · 4/3) = 133, at ((100-100)//2, (400-133)//2) = (0, 133).
        let rrc = RandomResizedCrop {
            scale: (2.0, 3.0),
            ..RandomResizedCrop::new(10, 10)
        };
        let win = rrc.sample(100, 400, &mut SampleRng::new(1));
        assert_eq!(
            win,
            Window {
                top: 0,
                left: 133,
                height: 100,
                width: 133
            }
        );
        // A tall 400x100 image: w = 100, h = round(100 / (3/4)) = 133, top (400-133)//2 = 133.
        let win = rrc.sample(400, 100, &mut SampleRng::new(1));
        assert_eq!(
            win,
            Window {
                top: 133,
                left: 0,
                height: 133,
                width: 100
            }
        );
    }

    #[test]
    fn crop_resize_is_resize_of_the_cropped_image_and_flip_mirrors() {
        let img = ramp(20, 30);
        let win = Window {
            top: 3,
            left: 5,
            height: 11,
            width: 17,
        };
        // The crop copied out by hand, then resized.
        let mut px = Vec::new();
        for y in 3..14 {
            px.extend_from_slice(&img.as_bytes()[(y * 30 + 5) * 3..(y * 30 + 22) * 3]);
        }
        let cropped = Image::<Hwc, Bgr>::new(11, 17, px).unwrap();
        let want = resize_bilinear(&cropped, 8, 9).unwrap();
        assert_eq!(crop_resize(&img, win, 8, 9, false).unwrap(), want);
        let flipped = crop_resize(&img, win, 8, 9, true).unwrap();
        for y in 0..8 {
            for x in 0..9 {
                let a = &flipped.as_bytes()[(y * 9 + x) * 3..(y * 9 + x) * 3 + 3];
                let b = &want.as_bytes()[(y * 9 + 8 - x) * 3..(y * 9 + 8 - x) * 3 + 3];
                assert_eq!(a, b, "({y}, {x})");
            }
        }
        let norm = Normalization::torch_imagenet_unit();
        assert_eq!(
            crop_resize_normalize(&img, win, 8, 9, true, &norm).unwrap(),
            normalize_image(&flipped, &norm).unwrap()
        );
        let bad = Window { top: 15, ..win };
        assert!(matches!(
            crop_resize(&img, bad, 8, 9, false),
            Err(TransformError::BadWindow { .. })
        ));
        let grey = Image::<Hwc, Gray>::new(2, 2, vec![1, 2, 3, 4]).unwrap();
        let g = Normalization::new("g", vec![0.0], vec![1.0], Scale::Byte, ChannelOrder::Gray).unwrap();
        let full = Window {
            top: 0,
            left: 0,
            height: 2,
            width: 2,
        };
        assert_eq!(
            crop_resize_normalize(&grey, full, 2, 2, true, &g)
                .unwrap()
                .as_slice(),
            &[2.0, 1.0, 4.0, 3.0]
        );
    }

    #[test]
    fn boxes_move_scale_flip_clip_and_drop_with_the_image() {
        // A 100x200 image, crop rows 20..70 and columns 50..150 (50x100), resize to 100x100
        // (x scale 1, y scale 2), then flip.
        let win = Window {
            top: 20,
            left: 50,
            height: 50,
            width: 100,
        };
        let boxes = [
            [60.0, 30.0, 80.0, 40.0],   // inside
            [0.0, 0.0, 40.0, 10.0],     // entirely outside: dropped
            [140.0, 60.0, 190.0, 90.0], // partly outside: clipped
        ];
        let out = map_boxes(&boxes, &[1, 2, 3], win, [100, 100], false);
        assert_eq!(out.kept, vec![0, 2]);
        assert_eq!(out.labels, vec![1, 3]);
        assert_eq!(out.scale, [2.0, 1.0]);
        assert_eq!(
            out.boxes,
            vec![[10.0, 20.0, 30.0, 40.0], [90.0, 80.0, 100.0, 100.0]]
        );
        let flipped = map_boxes(&boxes, &[1, 2, 3], win, [100, 100], true);
        assert_eq!(
            flipped.boxes,
            vec![[70.0, 20.0, 90.0, 40.0], [0.0, 80.0, 10.0, 100.0]]
        );
    }

    #[test]
    fn center_window_rounds_like_python() {
        // torchvision: crop_top = int(round((h - th) / 2.0)); round(0.5) = 0, round(1.5) = 2.
        assert_eq!(center_window(5, 4, 4, 4).unwrap().top, 0); // (5-4)/2 = 0.5 → 0
        assert_eq!(center_window(7, 4, 4, 4).unwrap().top, 2); // (7-4)/2 = 1.5 → 2
        assert_eq!(center_window(9, 4, 4, 4).unwrap().top, 2); // 2.5 → 2
        assert_eq!(
            center_window(256, 300, 224, 224).unwrap(),
            Window {
                top: 16,
                left: 38,
                height: 224,
                width: 224
            }
        );
        assert!(matches!(
            center_window(10, 10, 11, 4),
            Err(TransformError::BadWindow { .. })
        ));
    }

    #[test]
    fn pad_crop_matches_numpy_pad() {
        // a = np.arange(6).reshape(2, 3)
        let img = Image::<Hwc, Gray>::new(2, 3, (0..6).collect()).unwrap();
        // np.pad(a, 1, mode="reflect") = [[4,3,4,5,4],[1,0,1,2,1],[4,3,4,5,4],[1,0,1,2,1]]
        let all = pad_crop(&img, 1, PadMode::Reflect, [0, 0], [4, 5]).unwrap();
        assert_eq!(
            all.as_bytes(),
            &[4, 3, 4, 5, 4, 1, 0, 1, 2, 1, 4, 3, 4, 5, 4, 1, 0, 1, 2, 1]
        );
        // np.pad(a, 1) (zeros), rows 1..3, columns 2..5: [[1,2,0],[4,5,0]]
        let part = pad_crop(&img, 1, PadMode::Zero, [1, 2], [2, 3]).unwrap();
        assert_eq!(part.as_bytes(), &[1, 2, 0, 4, 5, 0]);
        assert_eq!(pad(&img, 1, PadMode::Reflect).unwrap(), all);
        assert!(
            pad_crop(&img, 2, PadMode::Reflect, [0, 0], [2, 2]).is_err(),
            "reflect wider than the image"
        );
        assert!(
            pad_crop(&img, 1, PadMode::Zero, [1, 1], [4, 4]).is_err(),
            "crop leaves the padded image"
        );
    }

    #[test]
    fn random_crop_with_padding_and_its_boxes() {
        let img = Image::<Hwc, Bgr>::new(32, 32, vec![9; 32 * 32 * 3]).unwrap();
        let rc = RandomCrop {
            height: 32,
            width: 32,
            padding: 4,
            mode: PadMode::Zero,
        };
        let mut seen = std::collections::HashSet::new();
        for seed in 0..2000 {
            let mut rng = SampleRng::new(seed);
            let [top, left] = rc.sample(32, 32, &mut rng).unwrap();
            assert!(top <= 8 && left <= 8);
            seen.insert((top, left));
        }
        assert_eq!(seen.len(), 81, "every one of the 9x9 positions occurs");
        let (out, shift) = rc.apply(&img, &mut SampleRng::new(3)).unwrap();
        assert_eq!(out.hwc_shape(), [32, 32, 3]);
        // The zero border is exactly where the shift says the image is not.
        let [dy, dx] = shift;
        let inside = |y: usize, x: usize| {
            let (iy, ix) = (y as f32 - dy, x as f32 - dx);
            (0.0..32.0).contains(&iy) && (0.0..32.0).contains(&ix)
        };
        for y in 0..32 {
            for x in 0..32 {
                let v = out.as_bytes()[(y * 32 + x) * 3];
                assert_eq!(v, if inside(y, x) { 9 } else { 0 }, "({y}, {x})");
            }
        }
        let b = shift_boxes(
            &[
                [0.0, 0.0, 10.0, 10.0],
                [30.0, 20.0, 32.0, 26.0],
                [30.0, 30.0, 32.0, 32.0],
            ],
            &[1, 2, 3],
            [4.0, -4.0],
            [32, 32],
        );
        // Box 3 lands on rows 34..36: outside the 32-row output, dropped.
        assert_eq!(b.boxes, vec![[0.0, 4.0, 6.0, 14.0], [26.0, 24.0, 28.0, 30.0]]);
        assert_eq!((b.labels, b.kept), (vec![1, 2], vec![0, 1]));
        let gone = shift_boxes(&[[0.0, 0.0, 3.0, 3.0]], &[1], [0.0, -4.0], [32, 32]);
        assert!(gone.boxes.is_empty() && gone.labels.is_empty());
    }

    #[test]
    fn random_erasing_draws_like_torchvision_and_erases_only_its_window() {
        let never = RandomErasing {
            p: 0.0,
            ..RandomErasing::default()
        };
        let always = RandomErasing {
            p: 1.0,
            ..RandomErasing::default()
        };
        let mut erased = 0;
        for seed in 0..500 {
            assert_eq!(never.sample(32, 32, &mut SampleRng::new(seed)), None);
            let mut img = Image::<Chw, kiln_data::Rgb, f32>::new(32, 32, vec![1.0; 3 * 32 * 32]).unwrap();
            let Some(win) = always.apply(&mut img, &mut SampleRng::new(seed)) else {
                continue;
            };
            erased += 1;
            // torchvision requires h < H and w < W strictly.
            assert!(
                win.height < 32 && win.width < 32 && win.top + win.height <= 32 && win.left + win.width <= 32
            );
            let frac = (win.height * win.width) as f64 / 1024.0;
            assert!((0.015..=0.36).contains(&frac), "{win:?}");
            for ch in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        let inside = (win.top..win.top + win.height).contains(&y)
                            && (win.left..win.left + win.width).contains(&x);
                        let v = img.as_slice()[(ch * 32 + y) * 32 + x];
                        assert_eq!(v, if inside { 0.0 } else { 1.0 });
                    }
                }
            }
        }
        // Large aspect ratios sometimes fail all 10 draws, but most samples are erased.
        assert!(erased > 450, "{erased} of 500 erased");
    }

    #[test]
    fn grayscale_matches_pil_and_vflip_mirrors_rows_and_boxes() {
        // Image.fromarray(np.array([[[10,200,30],[255,0,128],[7,7,7]]], np.uint8)).convert("L")
        //   -> [[124, 91, 7]]  (torchvision Grayscale(3) repeats it: [[124]*3, [91]*3, [7]*3])
        let bgr = Image::<Hwc, Bgr>::new(1, 3, vec![30, 200, 10, 128, 0, 255, 7, 7, 7]).unwrap();
        assert_eq!(to_grayscale(&bgr).unwrap().as_bytes(), &[124, 91, 7]);
        let rgb = Image::<Hwc, kiln_data::Rgb>::new(1, 3, vec![10, 200, 30, 255, 0, 128, 7, 7, 7]).unwrap();
        assert_eq!(to_grayscale(&rgb).unwrap().as_bytes(), &[124, 91, 7]);
        let img = Image::<Hwc, Gray>::new(3, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(vflip(&img).unwrap().as_bytes(), &[5, 6, 3, 4, 1, 2]);
        assert_eq!(
            vflip_boxes(&[[0.0, 0.0, 2.0, 1.0]], 3),
            vec![[0.0, 2.0, 2.0, 3.0]]
        );
    }

    #[test]
    fn colour_adjustments_match_pil_image_enhance() {
        // a = np.random.default_rng(1).integers(0, 256, size=(2, 3, 3), dtype=np.uint8)  (RGB)
        // np.asarray(ImageEnhance.<Brightness|Contrast|Color>(Image.fromarray(a)).enhance(f)) for
        // f = 0.5 and 1.7 (Pillow 13.0.0):
        let rgb = [
            255u8, 228, 34, 121, 243, 189, 6, 131, 102, 168, 82, 193, 187, 150, 81, 243, 205, 24,
        ];
        let cases: [(&str, f32, [u8; 18]); 6] = [
            (
                "brightness",
                0.5,
                [
                    127, 114, 17, 60, 121, 94, 3, 65, 51, 84, 41, 96, 93, 75, 40, 121, 102, 12,
                ],
            ),
            (
                "brightness",
                1.7,
                [
                    255, 255, 57, 205, 255, 255, 10, 222, 173, 255, 139, 255, 255, 255, 137, 255, 255, 40,
                ],
            ),
            (
                "contrast",
                0.5,
                [
                    208, 195, 98, 141, 202, 175, 84, 146, 132, 165, 122, 177, 174, 156, 121, 202, 183, 93,
                ],
            ),
            (
                "contrast",
                1.7,
                [
                    255, 255, 0, 92, 255, 207, 0, 109, 60, 172, 26, 214, 204, 141, 24, 255, 235, 0,
                ],
            ),
            (
                "color",
                0.5,
                [
                    234, 221, 124, 160, 221, 194, 48, 110, 96, 144, 101, 156, 170, 151, 117, 219, 200, 110,
                ],
            ),
            (
                "color",
                1.7,
                [
                    255, 237, 0, 65, 255, 181, 0, 159, 110, 201, 55, 244, 210, 147, 30, 255, 211, 0,
                ],
            ),
        ];
        // kiln holds BGR: the same pixels with channels reversed, and results compared reversed.
        let to_bgr = |px: &[u8]| {
            px.chunks_exact(3)
                .flat_map(|p| [p[2], p[1], p[0]])
                .collect::<Vec<u8>>()
        };
        let img = Image::<Hwc, Bgr>::new(2, 3, to_bgr(&rgb)).unwrap();
        for (what, f, want) in cases {
            let got = match what {
                "brightness" => adjust_brightness(&img, f),
                "contrast" => adjust_contrast(&img, f),
                _ => adjust_saturation(&img, f),
            }
            .unwrap();
            assert_eq!(to_bgr(got.as_bytes()), want.to_vec(), "{what} {f}");
        }
        // Jitter: seeded, and a no-op when every strength is 0.
        let jitter = ColorJitter {
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
        };
        let a = jitter.apply(&img, &mut SampleRng::new(3)).unwrap();
        assert_ne!(a, img, "something changed");
        let too_much = ColorJitter {
            hue: 0.7,
            ..ColorJitter::default()
        };
        assert!(matches!(
            too_much.apply(&img, &mut SampleRng::new(0)),
            Err(TransformError::BadFactor { what: "hue", .. })
        ));
        assert_eq!(a, jitter.apply(&img, &mut SampleRng::new(3)).unwrap());
        assert_eq!(
            ColorJitter::default()
                .apply(&img, &mut SampleRng::new(3))
                .unwrap(),
            img
        );
    }
}
