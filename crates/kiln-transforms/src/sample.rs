//! Per-sample transforms for the loader: resize, and HWC u8 → normalised CHW f32 in one pass.
//!
//! These run inside [`kiln_data::Loader`] workers, one image at a time, so batches never hold
//! intermediate copies.
//!
//! ```
//! use kiln_data::{Bgr, Hwc, Image};
//! use kiln_transforms::sample::{normalize_image, resize_bilinear};
//! use kiln_transforms::{ChannelOrder, Normalization, Scale};
//!
//! let bgr = Image::<Hwc, Bgr>::new(2, 2, vec![0, 128, 255].repeat(4))?;
//! let big = resize_bilinear(&bgr, 4, 4)?;
//! let norm = Normalization::new("half", vec![0.5; 3], vec![0.5; 3], Scale::Unit, ChannelOrder::Rgb)?;
//! let chw = normalize_image(&big, &norm)?; // Image<Chw, Rgb, f32>
//! assert_eq!(chw.chw_shape(), [3, 4, 4]);
//! assert_eq!(chw.as_slice()[0], 1.0); // red plane first: (255/255 - 0.5) / 0.5
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use kiln_data::{Chw, ColorOrder, Hwc, Image};

use crate::convert::{OrderValue, ReorderTo};
use crate::{ChannelOrder, ModelColor, Normalization, TransformError};

/// HWC u8 in the stored order → CHW f32 in the model's order (BGR → RGB), scaled and normalised:
/// `(x / divisor − mean) / std`, the same operations, in the same order, as torchvision's
/// `ToTensor()` then `Normalize(mean, std)`.
///
/// # Errors
///
/// [`TransformError::OrderMismatch`] when the normalization is for another channel order, and
/// the errors of [`Normalization::validate`].
pub fn normalize_image<C: ModelColor>(
    img: &Image<Hwc, C>,
    norm: &Normalization,
) -> Result<Image<Chw, C::Out, f32>, TransformError> {
    normalize_with(img, norm, C::SOURCE, C::OUT_ORDER)
}

/// [`normalize_image`] into an explicit output order `O`: `normalize_image_to::<Bgr, _>` keeps a
/// BGR image BGR, for Caffe-trained weights and [`Normalization::caffe_imagenet`].
///
/// # Errors
///
/// As [`normalize_image`], against `O`'s order.
pub fn normalize_image_to<O: OrderValue, C: ReorderTo<O>>(
    img: &Image<Hwc, C>,
    norm: &Normalization,
) -> Result<Image<Chw, O, f32>, TransformError> {
    normalize_with(img, norm, C::MAP, O::ORDER)
}

fn normalize_with<C: ColorOrder, O: ColorOrder>(
    img: &Image<Hwc, C>,
    norm: &Normalization,
    map: &[usize],
    out_order: ChannelOrder,
) -> Result<Image<Chw, O, f32>, TransformError> {
    let tables = tables(norm, out_order)?;
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    let plane = h * w;
    let src = img.as_bytes();
    let mut out = vec![0f32; c * plane];
    for (oc, &sc) in map.iter().enumerate() {
        let table = &tables[oc];
        for (d, px) in out[oc * plane..(oc + 1) * plane]
            .iter_mut()
            .zip(src.chunks_exact(c))
        {
            *d = table[usize::from(px[sc])];
        }
    }
    Image::new(h, w, out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// Fixed-point precision of the interpolation weights (OpenCV's `INTER_RESIZE_COEF_BITS`).
const COEF_BITS: u32 = 11;
const ONE: i32 = 1 << COEF_BITS;

/// For each output coordinate: the left/top source index and the two fixed-point weights, with
/// OpenCV's `INTER_LINEAR` geometry (pixel centres aligned, `src = (dst + 0.5)·in/out − 0.5`,
/// clamped at the borders).
fn taps(out_len: usize, in_len: usize) -> Vec<(usize, i32, i32)> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let mut s = f.floor() as isize;
            let mut frac = f - s as f64;
            if s < 0 {
                s = 0;
                frac = 0.0;
            }
            if s as usize >= in_len - 1 {
                s = in_len as isize - 1;
                frac = 0.0;
            }
            let w1 = (frac * f64::from(ONE)).round() as i32;
            (s as usize, ONE - w1, w1)
        })
        .collect()
}

/// Bilinear resize of an HWC u8 image to `out_h × out_w` (OpenCV's `cv2.resize(..., INTER_LINEAR)`
/// geometry and 11-bit weights; no antialiasing, like OpenCV and unlike PIL when shrinking).
///
/// # Errors
///
/// [`TransformError::BadSize`] for an empty input or output.
pub fn resize_bilinear<C: ColorOrder>(
    img: &Image<Hwc, C>,
    out_h: usize,
    out_w: usize,
) -> Result<Image<Hwc, C>, TransformError> {
    crop_resize(img, full(img), out_h, out_w, false)
}

/// The `window` of `img`, resized to `out_h × out_w` (bilinear) and mirrored when `flip`.
///
/// # Errors
///
/// [`TransformError::BadWindow`] when the window does not fit, [`TransformError::BadSize`] for
/// empty sizes.
pub fn crop_resize<C: ColorOrder>(
    img: &Image<Hwc, C>,
    window: Window,
    out_h: usize,
    out_w: usize,
    flip: bool,
) -> Result<Image<Hwc, C>, TransformError> {
    let row_len = out_w * C::CHANNELS;
    let mut out = vec![0u8; out_h * row_len];
    resize_window(img, window, out_h, out_w, flip, |y, row| {
        out[y * row_len..(y + 1) * row_len].copy_from_slice(row);
    })?;
    Image::new(out_h, out_w, out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// Nearest-neighbour resize, OpenCV's `INTER_NEAREST` rule: source index `floor(dst · in/out)`
/// (no half-pixel offset), clamped to the last pixel. For label maps and masks.
///
/// # Errors
///
/// [`TransformError::BadSize`] for an empty input or output.
pub fn resize_nearest<C: ColorOrder>(
    img: &Image<Hwc, C>,
    out_h: usize,
    out_w: usize,
) -> Result<Image<Hwc, C>, TransformError> {
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(TransformError::BadSize {
            from: [h, w],
            to: [out_h, out_w],
        });
    }
    let index =
        |d: usize, out: usize, n: usize| ((d as f64 * (n as f64 / out as f64)).floor() as usize).min(n - 1);
    let xs: Vec<usize> = (0..out_w).map(|x| index(x, out_w, w) * c).collect();
    let src = img.as_bytes();
    let mut out = Vec::with_capacity(out_h * out_w * c);
    for y in 0..out_h {
        let line = &src[index(y, out_h, h) * w * c..];
        for &sx in &xs {
            out.extend_from_slice(&line[sx..sx + c]);
        }
    }
    Image::new(out_h, out_w, out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// OpenCV's `computeResizeAreaTab`: for each output index, the source indices it covers and their
/// weights (fractions of the cell, summing to 1).
fn area_taps(out_len: usize, in_len: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|d| {
            let f1 = d as f64 * scale;
            let f2 = f1 + scale;
            let cell = scale.min(in_len as f64 - f1);
            let s2 = (f2.floor() as usize).min(in_len - 1);
            let s1 = (f1.ceil() as usize).min(s2);
            let mut taps = Vec::new();
            if s1 as f64 - f1 > 1e-3 {
                taps.push((s1 - 1, ((s1 as f64 - f1) / cell) as f32));
            }
            for s in s1..s2 {
                taps.push((s, (1.0 / cell) as f32));
            }
            if f2 - s2 as f64 > 1e-3 {
                taps.push((s2, ((f2 - s2 as f64).min(1.0).min(cell) / cell) as f32));
            }
            taps
        })
        .collect()
}

/// Area resize for shrinking (OpenCV's `INTER_AREA`): each output pixel is the coverage-weighted
/// mean of the source pixels under it — the right filter for downscaling (no aliasing).
///
/// # Errors
///
/// [`TransformError::BadSize`] for empty sizes or an output larger than the input in either
/// dimension (use [`resize_bilinear`] to enlarge).
pub fn resize_area<C: ColorOrder>(
    img: &Image<Hwc, C>,
    out_h: usize,
    out_w: usize,
) -> Result<Image<Hwc, C>, TransformError> {
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 || out_h > h || out_w > w {
        return Err(TransformError::BadSize {
            from: [h, w],
            to: [out_h, out_w],
        });
    }
    let src = img.as_bytes();
    if h % out_h == 0 && w % out_w == 0 {
        // OpenCV's integer-factor path: exact integer box sums; 2x2 rounds half up ((s + 2) >> 2,
        // its SIMD kernel), other boxes `cvRound(sum · (1/area))` (half to even).
        let (fy, fx) = (h / out_h, w / out_w);
        let area = (fy * fx) as u32;
        let inv = 1.0 / area as f32;
        let mut out = Vec::with_capacity(out_h * out_w * c);
        for y in 0..out_h {
            for x in 0..out_w {
                for ch in 0..c {
                    let mut sum = 0u32;
                    for sy in y * fy..(y + 1) * fy {
                        for sx in x * fx..(x + 1) * fx {
                            sum += u32::from(src[(sy * w + sx) * c + ch]);
                        }
                    }
                    out.push(if area == 4 {
                        ((sum + 2) >> 2) as u8
                    } else {
                        (sum as f32 * inv).round_ties_even().clamp(0.0, 255.0) as u8
                    });
                }
            }
        }
        return Image::new(out_h, out_w, out).map_err(|e| TransformError::Internal(e.to_string()));
    }
    let (xt, yt) = (area_taps(out_w, w), area_taps(out_h, h));
    let mut out = Vec::with_capacity(out_h * out_w * c);
    let mut row = vec![0f32; out_w * c];
    let mut acc = vec![0f32; out_w * c];
    for ys in &yt {
        acc.fill(0.0);
        for &(sy, beta) in ys {
            let line = &src[sy * w * c..(sy + 1) * w * c];
            row.fill(0.0);
            for (dx, xs) in xt.iter().enumerate() {
                for &(sx, alpha) in xs {
                    for ch in 0..c {
                        row[dx * c + ch] += f32::from(line[sx * c + ch]) * alpha;
                    }
                }
            }
            for (a, &r) in acc.iter_mut().zip(&row) {
                *a += r * beta;
            }
        }
        // saturate_cast<uchar>: round half to even, clamp.
        out.extend(acc.iter().map(|&v| v.round_ties_even().clamp(0.0, 255.0) as u8));
    }
    Image::new(out_h, out_w, out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// [`resize_bilinear`] then [`normalize_image`], fused: one pass, no intermediate image, the same
/// values as the two steps (the resized u8 value is looked up in the normalisation table).
///
/// # Errors
///
/// The errors of both.
pub fn resize_normalize<C: ModelColor>(
    img: &Image<Hwc, C>,
    out_h: usize,
    out_w: usize,
    norm: &Normalization,
) -> Result<Image<Chw, C::Out, f32>, TransformError> {
    resize_normalize_with(img, full(img), out_h, out_w, false, norm, C::SOURCE, C::OUT_ORDER)
}

/// [`resize_normalize`] into an explicit output order `O` (see [`normalize_image_to`]).
///
/// # Errors
///
/// As [`resize_normalize`].
pub fn resize_normalize_to<O: OrderValue, C: ReorderTo<O>>(
    img: &Image<Hwc, C>,
    out_h: usize,
    out_w: usize,
    norm: &Normalization,
) -> Result<Image<Chw, O, f32>, TransformError> {
    resize_normalize_with(img, full(img), out_h, out_w, false, norm, C::MAP, O::ORDER)
}

/// The whole image as a window.
pub(crate) fn full<C: ColorOrder>(img: &Image<Hwc, C>) -> Window {
    Window {
        top: 0,
        left: 0,
        height: img.height(),
        width: img.width(),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_normalize_with<C: ColorOrder, O: ColorOrder>(
    img: &Image<Hwc, C>,
    window: Window,
    out_h: usize,
    out_w: usize,
    flip: bool,
    norm: &Normalization,
    map: &[usize],
    out_order: ChannelOrder,
) -> Result<Image<Chw, O, f32>, TransformError> {
    let tables = tables(norm, out_order)?;
    let c = C::CHANNELS;
    let plane = out_h * out_w;
    let mut out = vec![0f32; c * plane];
    resize_window(img, window, out_h, out_w, flip, |y, row| {
        for (oc, &sc) in map.iter().enumerate() {
            let table = &tables[oc];
            let dst = &mut out[oc * plane + y * out_w..oc * plane + (y + 1) * out_w];
            for (d, px) in dst.iter_mut().zip(row.chunks_exact(c)) {
                *d = table[usize::from(px[sc])];
            }
        }
    })?;
    Image::new(out_h, out_w, out).map_err(|e| TransformError::Internal(e.to_string()))
}

/// Per output channel, the normalised value of each of the 256 input values.
fn tables(norm: &Normalization, out_order: ChannelOrder) -> Result<Vec<[f32; 256]>, TransformError> {
    norm.validate()?;
    if norm.order != out_order {
        return Err(TransformError::OrderMismatch {
            name: norm.name.clone(),
            expected: norm.order,
            found: out_order,
        });
    }
    let divisor = norm.scale.divisor();
    Ok((0..out_order.channels())
        .map(|oc| {
            let (m, s) = (norm.mean[oc], norm.std[oc]);
            let mut t = [0f32; 256];
            for (v, slot) in t.iter_mut().enumerate() {
                // The same operations in the same order as ToTensor + Normalize: exact.
                *slot = (v as f32 / divisor - m) / s;
            }
            t
        })
        .collect())
}

/// A rectangle of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// Resizes the `window` of `img` to `out_h × out_w`, mirrored left–right when `flip` (a flip is just
/// the horizontal taps in reverse order, so it costs nothing), handing each finished output row
/// (HWC u8) to `emit` in order.
///
/// Vertical pass first (two source rows blended, contiguous and vectorised), then the horizontal
/// taps on that one row. All arithmetic is exact integer arithmetic with a single rounding at the
/// end, so the order of the passes does not change the result (OpenCV goes horizontal first).
pub(crate) fn resize_window<C: ColorOrder>(
    img: &Image<Hwc, C>,
    window: Window,
    out_h: usize,
    out_w: usize,
    flip: bool,
    mut emit: impl FnMut(usize, &[u8]),
) -> Result<(), TransformError> {
    let Window {
        top,
        left,
        height: h,
        width: w,
    } = window;
    let c = C::CHANNELS;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(TransformError::BadSize {
            from: [h, w],
            to: [out_h, out_w],
        });
    }
    if top + h > img.height() || left + w > img.width() {
        return Err(TransformError::BadWindow {
            window: [top, left, h, w],
            image: [img.height(), img.width()],
        });
    }
    let (stride, line) = (img.width() * c, w * c);
    // The window's rows, as slices of the source.
    let row = |y: usize| {
        let start = (top + y) * stride + left * c;
        &img.as_bytes()[start..start + line]
    };
    // The same size: OpenCV's bilinear taps are (x, weight 1, weight 0), a copy; copied directly
    // (a flip, or a crop to itself, in a pipeline costs no resampling).
    if h == out_h && w == out_w {
        let mut out = vec![0u8; line];
        for y in 0..h {
            if flip {
                for (o, p) in out.chunks_exact_mut(c).zip(row(y).chunks_exact(c).rev()) {
                    o.copy_from_slice(p);
                }
                emit(y, &out);
            } else {
                emit(y, row(y));
            }
        }
        return Ok(());
    }
    // Per output pixel: the offset of its left source pixel and the two weights. The right pixel is
    // always `c` further: the blended row carries one padding pixel, which only ever gets weight 0
    // (at the right border the left tap is clamped to the last pixel with weight 1).
    let mut xt: Vec<(usize, i32, i32)> = taps(out_w, w)
        .into_iter()
        .map(|(sx, w0, w1)| (sx * c, w0, w1))
        .collect();
    if flip {
        xt.reverse();
    }
    let mut blended = vec![0i32; line + c];
    let mut out = vec![0u8; out_w * c];
    let round = 1i32 << (2 * COEF_BITS - 1);
    for (y, (sy, w0, w1)) in taps(out_h, h).into_iter().enumerate() {
        let sy1 = (sy + 1).min(h - 1);
        let (r0, r1) = (row(sy), row(sy1));
        for ((b, &p0), &p1) in blended[..line].iter_mut().zip(r0).zip(r1) {
            *b = i32::from(p0) * w0 + i32::from(p1) * w1;
        }
        // 255·2^11 per blended value, times weights summing to 2^11, plus 2^21: fits an i32.
        for (o, &(a, wx0, wx1)) in out.chunks_exact_mut(c).zip(&xt) {
            let p = &blended[a..a + 2 * c];
            for ch in 0..c {
                // A convex combination of u8 values: always in 0..=255, no clamp needed.
                o[ch] = ((p[ch] * wx0 + p[c + ch] * wx1 + round) >> (2 * COEF_BITS)) as u8;
            }
        }
        emit(y, &out);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChannelOrder, Scale};
    use kiln_data::{Bgr, Gray};

    #[test]
    fn normalize_image_matches_torchvision_to_tensor_then_normalize() {
        // torchvision: Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])(ToTensor()(rgb))
        // on the 1x1 RGB pixel (30, 20, 10) gives, in f32:
        // [(30/255 - 0.485)/0.229, (20/255 - 0.456)/0.224, (10/255 - 0.406)/0.225]
        let bgr = Image::<Hwc, Bgr>::new(1, 1, vec![10, 20, 30]).unwrap();
        let norm = Normalization::new(
            "imagenet",
            vec![0.485, 0.456, 0.406],
            vec![0.229, 0.224, 0.225],
            Scale::Unit,
            ChannelOrder::Rgb,
        )
        .unwrap();
        let out = normalize_image(&bgr, &norm).unwrap();
        let want: Vec<f32> = [
            (30f32, 0.485f32, 0.229f32),
            (20., 0.456, 0.224),
            (10., 0.406, 0.225),
        ]
        .iter()
        .map(|&(v, m, s)| (v / 255.0 - m) / s)
        .collect();
        assert_eq!(out.as_slice(), want.as_slice());
        let bgr_norm =
            Normalization::new("caffe", vec![0.; 3], vec![1.; 3], Scale::Byte, ChannelOrder::Bgr).unwrap();
        assert!(matches!(
            normalize_image(&bgr, &bgr_norm),
            Err(TransformError::OrderMismatch { .. })
        ));
    }

    #[test]
    fn resize_matches_opencv_inter_linear() {
        // cv2.resize(np.array([[0, 100], [200, 255]], np.uint8), (4, 4), interpolation=cv2.INTER_LINEAR)
        // -> [[0, 25, 75, 100], [50, 72, 117, 139], [150, 167, 200, 216], [200, 214, 241, 255]] (OpenCV 5.0.0)
        let img = Image::<Hwc, Gray>::new(2, 2, vec![0, 100, 200, 255]).unwrap();
        let out = resize_bilinear(&img, 4, 4).unwrap();
        assert_eq!(
            out.as_bytes(),
            &[
                0, 25, 75, 100, 50, 72, 117, 139, 150, 167, 200, 216, 200, 214, 241, 255
            ]
        );
        // Same size is the identity; zero sizes are errors.
        assert_eq!(resize_bilinear(&img, 2, 2).unwrap(), img);
        assert!(matches!(
            resize_bilinear(&img, 0, 2),
            Err(TransformError::BadSize { .. })
        ));
    }

    #[test]
    fn fused_resize_normalize_equals_the_two_steps() {
        let px: Vec<u8> = (0..7 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
        let img = Image::<Hwc, Bgr>::new(7, 5, px).unwrap();
        let norm = Normalization::new(
            "n",
            vec![0.4, 0.5, 0.6],
            vec![0.2, 0.3, 0.25],
            Scale::Unit,
            ChannelOrder::Rgb,
        )
        .unwrap();
        for (h, w) in [(3, 4), (7, 5), (16, 9), (1, 1)] {
            let two = normalize_image(&resize_bilinear(&img, h, w).unwrap(), &norm).unwrap();
            assert_eq!(resize_normalize(&img, h, w, &norm).unwrap(), two, "{h}x{w}");
        }
    }

    #[test]
    fn nearest_matches_opencv_inter_nearest() {
        // a = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
        // cv2.resize(a, (6, 2), interpolation=cv2.INTER_NEAREST) = [[0,0,20,40,40,60],[80,80,100,120,120,140]]
        // cv2.resize(a, (3, 5), interpolation=cv2.INTER_NEAREST) =
        //   [[0,20,40],[0,20,40],[80,100,120],[80,100,120],[160,180,200]]
        let img = Image::<Hwc, Gray>::new(3, 4, (0..12).map(|v| v * 20).collect()).unwrap();
        assert_eq!(
            resize_nearest(&img, 2, 6).unwrap().as_bytes(),
            &[0, 0, 20, 40, 40, 60, 80, 80, 100, 120, 120, 140]
        );
        assert_eq!(
            resize_nearest(&img, 5, 3).unwrap().as_bytes(),
            &[0, 20, 40, 0, 20, 40, 80, 100, 120, 80, 100, 120, 160, 180, 200]
        );
    }
}
