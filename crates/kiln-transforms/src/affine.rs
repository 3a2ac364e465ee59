//! The geometric operations of the automatic augmentations: `shear_x`, `shear_y`,
//! `translate_x`, `translate_y` and `rotate`, as `torchvision.transforms.v2.functional` applies
//! them to a `uint8` image tensor: the inverse affine matrix in double precision
//! (`_get_inverse_affine_matrix`), the sampling grid in float32 (`_affine_grid`), and
//! `grid_sample(align_corners=False)`'s CPU arithmetic (`(g + 1)·(size/2) − 0.5`; nearest rounds
//! half to even, bilinear weighs the four neighbours as ATen's vectorised kernel does), then
//! `_apply_grid_transform`'s fill (a sampled mask of ones: below 0.5 takes the fill under nearest,
//! `mask·(v − fill) + fill` under bilinear) and rounding back to uint8.
//!
//! The plain functions sample as AutoAugment does (nearest, no fill: zeros outside); the `_with`
//! ones take a [`Sampling`]. Checked against torchvision in `tests/pointwise_vs_torchvision.rs`
//! (nearest, zero fill) and `tests/augmix_vs_torchvision.rs` (bilinear, and fill values).
//!
//! ```
//! use kiln_data::{Gray, Hwc, Image};
//! use kiln_transforms::affine;
//!
//! let img = Image::<Hwc, Gray>::new(1, 4, vec![1, 2, 3, 4])?;
//! assert_eq!(affine::translate_x(&img, 1).as_slice(), &[0, 1, 2, 3]);
//! # Ok::<(), kiln_data::DataError>(())
//! ```

use kiln_data::{ColorOrder, Hwc, Image};
use serde::{Deserialize, Serialize};

/// How an affine operation reads between pixels (torchvision's `interpolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interpolation {
    /// The nearest pixel (AutoAugment, RandAugment and TrivialAugmentWide's default).
    #[default]
    Nearest,
    /// The four nearest pixels, weighted (AugMix's default).
    Bilinear,
}

/// An affine operation's sampling: its interpolation, and the value of the pixels that come from
/// outside the image (`None`: zeros, without torchvision's mask; one value for every channel, or
/// one per channel in **RGB order**, as torchvision takes it, whatever the image's order: a BGR
/// image gets them reversed).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sampling {
    /// Nearest or bilinear.
    pub interpolation: Interpolation,
    /// The fill; `None` as torchvision's `fill=None`.
    pub fill: Option<Vec<f32>>,
}

impl Sampling {
    /// Bilinear, no fill: AugMix's default.
    pub fn bilinear() -> Self {
        Self {
            interpolation: Interpolation::Bilinear,
            fill: None,
        }
    }

    /// Checks the fill against `channels`: one value, or one per channel, each in `[0, 255]`.
    ///
    /// # Errors
    ///
    /// A sentence naming the problem.
    pub fn check(&self, channels: Option<usize>) -> Result<(), String> {
        let Some(fill) = &self.fill else {
            return Ok(());
        };
        if fill.is_empty() || fill.iter().any(|v| !(0.0..=255.0).contains(v)) {
            return Err(format!(
                "fill = {fill:?}: one value, or one per channel, each in [0, 255]"
            ));
        }
        match channels {
            Some(c) if fill.len() != 1 && fill.len() != c => Err(format!(
                "fill = {fill:?}: {} values for {c} channels (give one, or one per channel)",
                fill.len()
            )),
            _ => Ok(()),
        }
    }

    /// The fill of channel `c` (one value serves every channel).
    fn fill_of(&self, c: usize) -> Option<f32> {
        self.fill
            .as_ref()
            .map(|f| f.get(c).or(f.first()).copied().unwrap_or(0.0))
    }
}

/// torchvision's `_get_inverse_affine_matrix(center, angle, translate, scale, shear)` (degrees).
fn inverse_matrix(
    center: [f64; 2],
    angle: f64,
    translate: [f64; 2],
    scale: f64,
    shear: [f64; 2],
) -> [f64; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear[0].to_radians(), shear[1].to_radians());
    let [cx, cy] = center;
    let [tx, ty] = translate;
    let cos_sy = sy.cos();
    let tan_sx = sx.tan();
    let rot_minus_sy = rot - sy;
    let (cx_plus_tx, cy_plus_ty) = (cx + tx, cy + ty);
    let a = rot_minus_sy.cos() / cos_sy;
    let b = -(a * tan_sx + rot.sin());
    let c = rot_minus_sy.sin() / cos_sy;
    let d = rot.cos() - c * tan_sx;
    let mut m = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0];
    m[2] += cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty;
    m[5] += cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty;
    m
}

/// Resamples `img` through the inverse matrix `m` (output pixel → input position).
fn warp<C: ColorOrder>(img: &Image<Hwc, C>, m: [f64; 6], sampling: &Sampling) -> Image<Hwc, C> {
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    let theta = m.map(|v| v as f32);
    // theta.T / [w/2, h/2]: column 0 over w/2, column 1 over h/2 (float32).
    let (hw, hh) = ((0.5 * w as f64) as f32, (0.5 * h as f64) as f32);
    let r = [
        [theta[0] / hw, theta[3] / hh],
        [theta[1] / hw, theta[4] / hh],
        [theta[2] / hw, theta[5] / hh],
    ];
    let px = img.as_slice();
    let mut out = vec![0u8; px.len()];
    let (sw, sh) = (w as f32 / 2.0, h as f32 / 2.0);
    // The fill is given in RGB order; kiln's colour images are usually BGR.
    let rgb = |ch: usize| if C::NAME == "BGR" { c - 1 - ch } else { ch };
    let fills: Vec<Option<f32>> = (0..c).map(|ch| sampling.fill_of(rgb(ch))).collect();
    let inside = |x: i64, y: i64| x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h;
    let mut value = vec![0f32; c];
    for oy in 0..h {
        let y = (1.0 - h as f32) * 0.5 + oy as f32;
        for ox in 0..w {
            let x = (1.0 - w as f32) * 0.5 + ox as f32;
            let gx = x * r[0][0] + y * r[1][0] + r[2][0];
            let gy = x * r[0][1] + y * r[1][1] + r[2][1];
            let fx = (gx + 1.0) * sw - 0.5;
            let fy = (gy + 1.0) * sh - 0.5;
            let dst = (oy * w + ox) * c;
            // The sampled mask of ones (`_apply_grid_transform`'s extra channel).
            let mask = match sampling.interpolation {
                Interpolation::Nearest => {
                    let (ix, iy) = (round_even(fx) as i64, round_even(fy) as i64);
                    let hit = inside(ix, iy);
                    if hit && sampling.fill.is_none() {
                        // u8 in, u8 out: no arithmetic (AutoAugment's path).
                        let src = ((iy as usize) * w + ix as usize) * c;
                        out[dst..dst + c].copy_from_slice(&px[src..src + c]);
                        continue;
                    }
                    if hit {
                        let src = ((iy as usize) * w + ix as usize) * c;
                        for (ch, v) in value.iter_mut().enumerate() {
                            *v = f32::from(px[src + ch]);
                        }
                        1.0
                    } else {
                        value.fill(0.0);
                        0.0
                    }
                }
                Interpolation::Bilinear => {
                    // ATen's vectorised bilinear kernel: weights from the distances to the four
                    // sides, neighbours outside read as zero, summed nw, ne, sw, se.
                    let (x_w, y_n) = (fx.floor(), fy.floor());
                    let (dw, dn) = (fx - x_w, fy - y_n);
                    let (de, ds) = (1.0 - dw, 1.0 - dn);
                    let weights = [ds * de, ds * dw, dn * de, dn * dw];
                    let (xi, yi) = (x_w as i64, y_n as i64);
                    let corners = [(xi, yi), (xi + 1, yi), (xi, yi + 1), (xi + 1, yi + 1)];
                    let read = |(x, y): (i64, i64), ch: usize| {
                        if inside(x, y) {
                            f32::from(px[((y as usize) * w + x as usize) * c + ch])
                        } else {
                            0.0
                        }
                    };
                    for (ch, v) in value.iter_mut().enumerate() {
                        *v = read(corners[0], ch) * weights[0]
                            + read(corners[1], ch) * weights[1]
                            + read(corners[2], ch) * weights[2]
                            + read(corners[3], ch) * weights[3];
                    }
                    let one = |p: (i64, i64)| if inside(p.0, p.1) { 1.0f32 } else { 0.0 };
                    one(corners[0]) * weights[0]
                        + one(corners[1]) * weights[1]
                        + one(corners[2]) * weights[2]
                        + one(corners[3]) * weights[3]
                }
            };
            for (ch, v) in value.iter().enumerate() {
                let v = match (fills[ch], sampling.interpolation) {
                    (None, _) => *v,
                    (Some(f), Interpolation::Nearest) => {
                        if mask < 0.5 {
                            f
                        } else {
                            *v
                        }
                    }
                    (Some(f), Interpolation::Bilinear) => (*v - f) * mask + f,
                };
                // `round_()` then `.to(uint8)`: half to even, in range by construction.
                out[dst + ch] = round_even(v).clamp(0.0, 255.0) as u8;
            }
        }
    }
    match Image::new(h, w, out) {
        Ok(o) => o,
        Err(_) => img.clone(),
    }
}

/// Round half to even, as `rintf` in the default rounding mode, without the libm call (x86-64's
/// baseline has no rounding instruction): adding and removing 1.5·2²³ leaves the nearest integer,
/// ties to even, for |x| < 2²²; larger values are integers already or far outside any image.
fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

/// Shears along x by `magnitude` (the shear's tangent), about the top-left corner: AutoAugment's
/// `ShearX` (`affine(shear=[degrees(atan(magnitude)), 0], center=[0, 0])`).
pub fn shear_x<C: ColorOrder>(img: &Image<Hwc, C>, magnitude: f64) -> Image<Hwc, C> {
    shear_x_with(img, magnitude, &Sampling::default())
}

/// [`shear_x`] with `sampling`.
pub fn shear_x_with<C: ColorOrder>(
    img: &Image<Hwc, C>,
    magnitude: f64,
    sampling: &Sampling,
) -> Image<Hwc, C> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let center = [0.0 - w * 0.5, 0.0 - h * 0.5];
    warp(
        img,
        inverse_matrix(center, 0.0, [0.0, 0.0], 1.0, [magnitude.atan().to_degrees(), 0.0]),
        sampling,
    )
}

/// Shears along y by `magnitude`: AutoAugment's `ShearY`.
pub fn shear_y<C: ColorOrder>(img: &Image<Hwc, C>, magnitude: f64) -> Image<Hwc, C> {
    shear_y_with(img, magnitude, &Sampling::default())
}

/// [`shear_y`] with `sampling`.
pub fn shear_y_with<C: ColorOrder>(
    img: &Image<Hwc, C>,
    magnitude: f64,
    sampling: &Sampling,
) -> Image<Hwc, C> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let center = [0.0 - w * 0.5, 0.0 - h * 0.5];
    warp(
        img,
        inverse_matrix(center, 0.0, [0.0, 0.0], 1.0, [0.0, magnitude.atan().to_degrees()]),
        sampling,
    )
}

/// Moves the image `pixels` to the right (left when negative): AutoAugment's `TranslateX`.
pub fn translate_x<C: ColorOrder>(img: &Image<Hwc, C>, pixels: i64) -> Image<Hwc, C> {
    translate_x_with(img, pixels, &Sampling::default())
}

/// [`translate_x`] with `sampling`.
pub fn translate_x_with<C: ColorOrder>(
    img: &Image<Hwc, C>,
    pixels: i64,
    sampling: &Sampling,
) -> Image<Hwc, C> {
    warp(
        img,
        inverse_matrix([0.0, 0.0], 0.0, [pixels as f64, 0.0], 1.0, [0.0, 0.0]),
        sampling,
    )
}

/// Moves the image `pixels` down (up when negative): AutoAugment's `TranslateY`.
pub fn translate_y<C: ColorOrder>(img: &Image<Hwc, C>, pixels: i64) -> Image<Hwc, C> {
    translate_y_with(img, pixels, &Sampling::default())
}

/// [`translate_y`] with `sampling`.
pub fn translate_y_with<C: ColorOrder>(
    img: &Image<Hwc, C>,
    pixels: i64,
    sampling: &Sampling,
) -> Image<Hwc, C> {
    warp(
        img,
        inverse_matrix([0.0, 0.0], 0.0, [0.0, pixels as f64], 1.0, [0.0, 0.0]),
        sampling,
    )
}

/// Rotates by `degrees` counter-clockwise about the centre, same size: AutoAugment's `Rotate`
/// (`rotate` builds the matrix of `−angle`).
pub fn rotate<C: ColorOrder>(img: &Image<Hwc, C>, degrees: f64) -> Image<Hwc, C> {
    rotate_with(img, degrees, &Sampling::default())
}

/// [`rotate`] with `sampling` (the exact quarter turns take no sampling).
pub fn rotate_with<C: ColorOrder>(img: &Image<Hwc, C>, degrees: f64, sampling: &Sampling) -> Image<Hwc, C> {
    let angle = degrees.rem_euclid(360.0);
    let (h, w) = (img.height(), img.width());
    // torchvision's exact paths: 0 and 180 always, 90 and 270 on square images.
    let quarter = match angle {
        0.0 => return img.clone(),
        180.0 => Some(2),
        90.0 if h == w => Some(1),
        270.0 if h == w => Some(3),
        _ => None,
    };
    match quarter {
        Some(k) => rot90(img, k),
        None => warp(
            img,
            inverse_matrix([0.0, 0.0], -angle, [0.0, 0.0], 1.0, [0.0, 0.0]),
            sampling,
        ),
    }
}

/// `torch.rot90(x, k, dims=(H, W))` for k = 1 (square), 2 or 3 (square).
fn rot90<C: ColorOrder>(img: &Image<Hwc, C>, k: u8) -> Image<Hwc, C> {
    let (h, w, c) = (img.height(), img.width(), C::CHANNELS);
    let px = img.as_slice();
    let mut out = vec![0u8; px.len()];
    for i in 0..h {
        for j in 0..w {
            let (si, sj) = match k {
                1 => (j, w - 1 - i),
                2 => (h - 1 - i, w - 1 - j),
                _ => (w - 1 - j, i),
            };
            let (src, dst) = ((si * w + sj) * c, (i * w + j) * c);
            out[dst..dst + c].copy_from_slice(&px[src..src + c]);
        }
    }
    match Image::new(h, w, out) {
        Ok(o) => o,
        Err(_) => img.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::round_even;

    #[test]
    fn round_even_is_rintf() {
        let mut x = -3000.0f32;
        while x < 3000.0 {
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
            x += 0.125;
        }
        for x in [0.5f32, 1.5, 2.5, -0.5, -2.5, 4_194_303.5, 1e7, -1e9, 0.49999997] {
            assert_eq!(round_even(x), x.round_ties_even(), "{x}");
        }
    }
}
