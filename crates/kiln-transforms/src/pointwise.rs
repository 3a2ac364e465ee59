//! The colour operations of the automatic augmentations (AutoAugment, RandAugment,
//! TrivialAugment): `invert`, `posterize`, `solarize`, `brightness`, `autocontrast`, `equalize`,
//! `contrast`, `color` (saturation) and `sharpness`, each as `torchvision.transforms.v2.functional`
//! computes it on a `uint8` image tensor (its float32 arithmetic and truncation included).
//!
//! The per-channel ones treat every channel alike, so they apply to kiln's BGR images as
//! torchvision's do to RGB ones; `contrast` and `color` weigh the channels by name (ITU-R 601
//! luma), reading kiln's order. Checked on torchvision-made fixtures in
//! `tests/pointwise_vs_torchvision.rs`.
//!
//! ```
//! use kiln_data::{Bgr, Hwc, Image};
//! use kiln_transforms::pointwise;
//!
//! let img = Image::<Hwc, Bgr>::new(1, 2, vec![0, 100, 200, 255, 10, 128])?;
//! assert_eq!(pointwise::invert(&img).as_slice(), &[255, 155, 55, 0, 245, 127]);
//! assert_eq!(pointwise::posterize(&img, 2).as_slice(), &[0, 64, 192, 192, 0, 128]);
//! assert_eq!(pointwise::solarize(&img, 128.0).as_slice(), &[0, 100, 55, 0, 10, 127]);
//! # Ok::<(), kiln_data::DataError>(())
//! ```

use kiln_data::{ColorOrder, Hwc, Image};

/// `img` with every value passed through `f`.
fn map<C: ColorOrder>(img: &Image<Hwc, C>, f: impl Fn(u8) -> u8) -> Image<Hwc, C> {
    let data = img.as_slice().iter().map(|&v| f(v)).collect();
    rebuild(img, data)
}

/// `img` with every channel passed through its own 256-entry table.
fn per_channel<C: ColorOrder>(img: &Image<Hwc, C>, luts: &[[u8; 256]]) -> Image<Hwc, C> {
    let c = C::CHANNELS;
    let data = img
        .as_slice()
        .iter()
        .enumerate()
        .map(|(i, &v)| luts[i % c][v as usize])
        .collect();
    rebuild(img, data)
}

fn rebuild<C: ColorOrder>(img: &Image<Hwc, C>, data: Vec<u8>) -> Image<Hwc, C> {
    match Image::new(img.height(), img.width(), data) {
        Ok(out) => out,
        // The data has the input's length, which the input's shape accepted.
        Err(_) => img.clone(),
    }
}

/// `255 − v` (`invert`).
pub fn invert<C: ColorOrder>(img: &Image<Hwc, C>) -> Image<Hwc, C> {
    map(img, |v| !v)
}

/// Keeps the `bits` highest bits of each value (`posterize`; 8 or more: unchanged).
pub fn posterize<C: ColorOrder>(img: &Image<Hwc, C>, bits: u8) -> Image<Hwc, C> {
    if bits >= 8 {
        return img.clone();
    }
    let mask = (((1u16 << bits) - 1) << (8 - bits)) as u8;
    map(img, |v| v & mask)
}

/// Inverts the values at or above `threshold` (`solarize`).
pub fn solarize<C: ColorOrder>(img: &Image<Hwc, C>, threshold: f64) -> Image<Hwc, C> {
    map(img, |v| if f64::from(v) >= threshold { !v } else { v })
}

/// `v·factor`, clamped to 255 and truncated (`adjust_brightness`, in float32).
pub fn brightness<C: ColorOrder>(img: &Image<Hwc, C>, factor: f32) -> Image<Hwc, C> {
    map(img, |v| (f32::from(v) * factor).clamp(0.0, 255.0) as u8)
}

/// Each channel stretched to `[0, 255]`: `(v − min) / ((max − min)·(1/255))` in float32, clamped
/// and truncated; a flat channel is unchanged (`autocontrast`).
pub fn autocontrast<C: ColorOrder>(img: &Image<Hwc, C>) -> Image<Hwc, C> {
    let c = C::CHANNELS;
    let mut luts = vec![[0u8; 256]; c];
    for (ch, lut) in luts.iter_mut().enumerate() {
        let values = img.as_slice().iter().skip(ch).step_by(c);
        let (lo, hi) = values.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let (min, inv_scale) = if lo >= hi {
            (0.0f32, 1.0f32)
        } else {
            (
                f32::from(lo),
                (f32::from(hi) - f32::from(lo)) * (1.0f64 / 255.0) as f32,
            )
        };
        for (v, out) in lut.iter_mut().enumerate() {
            *out = ((v as f32 - min) / inv_scale).clamp(0.0, 255.0) as u8;
        }
    }
    per_channel(img, &luts)
}

/// Each channel's histogram equalised with PIL's lookup table (`equalize`): with `n` the pixels
/// not at the channel's largest value and `step = n / 255` (floor), value `k` maps to
/// `(cum[k−1] + step/2) / step` (floor, clamped); a channel with `step = 0` is unchanged.
pub fn equalize<C: ColorOrder>(img: &Image<Hwc, C>) -> Image<Hwc, C> {
    let c = C::CHANNELS;
    let pixels = img.height() * img.width();
    let mut luts = vec![[0u8; 256]; c];
    for (ch, lut) in luts.iter_mut().enumerate() {
        let mut hist = [0usize; 256];
        for &v in img.as_slice().iter().skip(ch).step_by(c) {
            hist[v as usize] += 1;
        }
        // The largest value present: the last non-empty bin.
        let top = hist.iter().rposition(|&n| n > 0).unwrap_or(0);
        let step = (pixels - hist[top]) / 255;
        if step == 0 {
            *lut = std::array::from_fn(|v| v as u8);
            continue;
        }
        let mut cum = 0usize;
        lut[0] = 0;
        for k in 1..256 {
            cum += hist[k - 1];
            lut[k] = ((cum + step / 2) / step).min(255) as u8;
        }
    }
    per_channel(img, &luts)
}

/// torchvision's luma of a pixel, `floor(0.2989·r + 0.587·g + 0.114·b)` in float32
/// (`_rgb_to_grayscale_image` then `floor_`), for images of 3 channels in order `C`.
fn luma<C: ColorOrder>(px: &[u8]) -> f32 {
    let (r, g, b) = if C::NAME == "RGB" {
        (px[0], px[1], px[2])
    } else {
        (px[2], px[1], px[0])
    };
    let l = f32::from(r) * 0.2989f32;
    let l = l + f32::from(g) * 0.587f32;
    let l = l + f32::from(b) * 0.114f32;
    l.floor()
}

/// torchvision's `_blend`: `x·r + y·(1 − r)` in float32, clamped, truncated — the addition fused
/// (`add_(y, alpha)` is a fused multiply-add in PyTorch's CPU kernel).
fn blend(x: u8, y: f32, r: f32, one_minus_r: f32) -> u8 {
    y.mul_add(one_minus_r, f32::from(x) * r).clamp(0.0, 255.0) as u8
}

/// Blends with the mean luma (grey images: the mean value) by `factor` (`adjust_contrast`).
pub fn contrast<C: ColorOrder>(img: &Image<Hwc, C>, factor: f64) -> Image<Hwc, C> {
    let c = C::CHANNELS;
    let px = img.as_slice();
    let n = (img.height() * img.width()).max(1);
    let sum: f64 = if c == 3 {
        px.chunks_exact(3).map(|p| f64::from(luma::<C>(p))).sum()
    } else {
        px.iter().map(|&v| f64::from(v)).sum()
    };
    let mean = (sum / n as f64) as f32;
    // `1 − r` in double precision (Python's float), then float32, as PyTorch takes `alpha`.
    let (r, rest) = (factor as f32, (1.0 - factor) as f32);
    map(img, |v| blend(v, mean, r, rest))
}

/// Blends each pixel with its own luma by `factor` (`adjust_saturation`; grey images unchanged).
pub fn color<C: ColorOrder>(img: &Image<Hwc, C>, factor: f64) -> Image<Hwc, C> {
    if C::CHANNELS != 3 {
        return img.clone();
    }
    // `1 − r` in double precision (Python's float), then float32, as PyTorch takes `alpha`.
    let (r, rest) = (factor as f32, (1.0 - factor) as f32);
    let data = img
        .as_slice()
        .chunks_exact(3)
        .flat_map(|p| {
            let l = luma::<C>(p);
            [
                blend(p[0], l, r, rest),
                blend(p[1], l, r, rest),
                blend(p[2], l, r, rest),
            ]
        })
        .collect();
    rebuild(img, data)
}

/// Blends the interior with its 3×3 blur (1s around a 5, over 13, rounded) by `factor`; the
/// one-pixel border is kept (`adjust_sharpness`).
pub fn sharpness<C: ColorOrder>(img: &Image<Hwc, C>, factor: f64) -> Image<Hwc, C> {
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    if h <= 2 || w <= 2 {
        return img.clone();
    }
    let px = img.as_slice();
    let (a, b) = ((1.0f64 / 13.0) as f32, (5.0f64 / 13.0) as f32);
    let rest = (1.0 - factor) as f32;
    let mut out = px.to_vec();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..c {
                let at = |dy: usize, dx: usize| f32::from(px[((y + dy - 1) * w + (x + dx - 1)) * c + ch]);
                let mut blur = 0f32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        blur += at(dy, dx) * if dy == 1 && dx == 1 { b } else { a };
                    }
                }
                let v = at(1, 1);
                // `view.add_(blur − view, alpha = 1 − r)`: fused, as PyTorch's kernel.
                let blended = (blur.round_ties_even() - v).mul_add(rest, v);
                out[(y * w + x) * c + ch] = blended.clamp(0.0, 255.0) as u8;
            }
        }
    }
    rebuild(img, out)
}
