//! The geometric operations of the automatic augmentations: `shear_x`, `shear_y`,
//! `translate_x`, `translate_y` and `rotate`, as `torchvision.transforms.v2.functional` applies
//! them to a `uint8` image tensor with AutoAugment's nearest-neighbour sampling and a zero fill:
//! the inverse affine matrix in double precision (`_get_inverse_affine_matrix`), the sampling grid
//! in float32 (`_affine_grid`), and `grid_sample(mode="nearest", align_corners=False)`'s CPU
//! arithmetic (`(g + 1)·(size/2) − 0.5`, rounded half to even).
//!
//! Checked against torchvision in `tests/pointwise_vs_torchvision.rs`.
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

/// Resamples `img` through the inverse matrix `m` (output pixel → input position), nearest
/// neighbour, zeros outside.
fn warp<C: ColorOrder>(img: &Image<Hwc, C>, m: [f64; 6]) -> Image<Hwc, C> {
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
    for oy in 0..h {
        let y = (1.0 - h as f32) * 0.5 + oy as f32;
        for ox in 0..w {
            let x = (1.0 - w as f32) * 0.5 + ox as f32;
            let gx = x * r[0][0] + y * r[1][0] + r[2][0];
            let gy = x * r[0][1] + y * r[1][1] + r[2][1];
            let ix = ((gx + 1.0) * sw - 0.5).round_ties_even();
            let iy = ((gy + 1.0) * sh - 0.5).round_ties_even();
            if ix >= 0.0 && iy >= 0.0 && (ix as usize) < w && (iy as usize) < h {
                let (src, dst) = (((iy as usize) * w + ix as usize) * c, (oy * w + ox) * c);
                out[dst..dst + c].copy_from_slice(&px[src..src + c]);
            }
        }
    }
    match Image::new(h, w, out) {
        Ok(o) => o,
        Err(_) => img.clone(),
    }
}

/// Shears along x by `magnitude` (the shear's tangent), about the top-left corner: AutoAugment's
/// `ShearX` (`affine(shear=[degrees(atan(magnitude)), 0], center=[0, 0])`).
pub fn shear_x<C: ColorOrder>(img: &Image<Hwc, C>, magnitude: f64) -> Image<Hwc, C> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let center = [0.0 - w * 0.5, 0.0 - h * 0.5];
    warp(
        img,
        inverse_matrix(center, 0.0, [0.0, 0.0], 1.0, [magnitude.atan().to_degrees(), 0.0]),
    )
}

/// Shears along y by `magnitude`: AutoAugment's `ShearY`.
pub fn shear_y<C: ColorOrder>(img: &Image<Hwc, C>, magnitude: f64) -> Image<Hwc, C> {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let center = [0.0 - w * 0.5, 0.0 - h * 0.5];
    warp(
        img,
        inverse_matrix(center, 0.0, [0.0, 0.0], 1.0, [0.0, magnitude.atan().to_degrees()]),
    )
}

/// Moves the image `pixels` to the right (left when negative): AutoAugment's `TranslateX`.
pub fn translate_x<C: ColorOrder>(img: &Image<Hwc, C>, pixels: i64) -> Image<Hwc, C> {
    warp(
        img,
        inverse_matrix([0.0, 0.0], 0.0, [pixels as f64, 0.0], 1.0, [0.0, 0.0]),
    )
}

/// Moves the image `pixels` down (up when negative): AutoAugment's `TranslateY`.
pub fn translate_y<C: ColorOrder>(img: &Image<Hwc, C>, pixels: i64) -> Image<Hwc, C> {
    warp(
        img,
        inverse_matrix([0.0, 0.0], 0.0, [0.0, pixels as f64], 1.0, [0.0, 0.0]),
    )
}

/// Rotates by `degrees` counter-clockwise about the centre, same size: AutoAugment's `Rotate`
/// (`rotate` builds the matrix of `−angle`).
pub fn rotate<C: ColorOrder>(img: &Image<Hwc, C>, degrees: f64) -> Image<Hwc, C> {
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
