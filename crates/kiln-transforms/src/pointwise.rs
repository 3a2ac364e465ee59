//! The per-channel operations of the automatic augmentations (AutoAugment, RandAugment,
//! TrivialAugment): `invert`, `posterize`, `solarize`, `brightness`, `autocontrast` and
//! `equalize`, each equal, bit for bit, to `torchvision.transforms.v2.functional` on a `uint8`
//! image tensor (their float32 arithmetic and truncation included).
//!
//! They treat every channel alike, so they apply to kiln's BGR images as torchvision's do to RGB
//! ones. Checked on OpenCV-made fixtures in `tests/pointwise_vs_torchvision.rs`.
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
