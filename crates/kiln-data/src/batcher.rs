//! Batchers: PyTorch's `collate_fn`, typed, checked, and onto the device.
//!
//! A batcher turns the samples of one batch (each tagged with its dataset index, for errors) into
//! whatever the model eats. kiln ships two:
//!
//! * [`ClassificationBatcher`]: CHW f32 images → `Tensor<4>` `[N, C, H, W]`, labels →
//!   `Tensor<1, Int>`; every label is checked against `num_classes` and every size against the
//!   first sample's, and an error names the sample index and file.
//! * [`DetectionBatcher`]: images padded to the batch's largest H and W (optionally rounded up to a
//!   multiple such as 32), boxes as `[N, M, 4]` with a `[N, M]` validity mask and labels padded with
//!   `-1`, plus each image's original, resized and padded shape and scale factor.
//!
//! A custom batcher is one trait method. Here, items carry an extra per-sample weight:
//!
//! ```
//! use burn::prelude::*;
//! use kiln_data::batcher::{Collate, Indexed};
//! use kiln_data::DataError;
//!
//! struct Weighted { features: [f32; 2], weight: f32 }
//! struct WeightedBatch { x: Tensor<2>, w: Tensor<1> }
//!
//! struct WeightedBatcher { device: Device }
//!
//! impl Collate<Weighted> for WeightedBatcher {
//!     type Batch = WeightedBatch;
//!     fn collate(&self, items: Vec<Indexed<Weighted>>) -> Result<WeightedBatch, DataError> {
//!         if let Some(bad) = items.iter().find(|s| !(s.item.weight >= 0.0)) {
//!             return Err(DataError::Custom(format!("sample {}: negative or NaN weight", bad.index)));
//!         }
//!         let n = items.len();
//!         let x: Vec<f32> = items.iter().flat_map(|s| s.item.features).collect();
//!         let w: Vec<f32> = items.iter().map(|s| s.item.weight).collect();
//!         Ok(WeightedBatch {
//!             x: Tensor::from_data(TensorData::new(x, [n, 2]), &self.device),
//!             w: Tensor::from_data(TensorData::new(w, [n]), &self.device),
//!         })
//!     }
//! }
//!
//! let b = WeightedBatcher { device: Device::flex() };
//! let batch = b.collate(vec![Indexed { index: 0, item: Weighted { features: [1.0, 2.0], weight: 0.5 } }])?;
//! assert_eq!(batch.x.dims(), [1, 2]);
//! # Ok::<(), DataError>(())
//! ```

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::DataError;
use crate::image::{Chw, ColorOrder, Image};

/// A sample together with its index in the dataset (so errors can name it).
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed<I> {
    /// Index of the sample in the dataset.
    pub index: usize,
    /// The sample.
    pub item: I,
}

/// Turns the samples of one batch into a batch (PyTorch's `collate_fn`).
pub trait Collate<I>: Send + Sync {
    /// What a batch is.
    type Batch: Send;

    /// Builds one batch; `items` is never empty when called by the loader.
    ///
    /// # Errors
    ///
    /// Whatever makes the samples unbatchable, naming the sample by its dataset index.
    fn collate(&self, items: Vec<Indexed<I>>) -> Result<Self::Batch, DataError>;
}

/// A classification sample ready for the model: CHW float image, class, and its file if any.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSample<C: ColorOrder> {
    /// CHW float image, already scaled and normalised.
    pub image: Image<Chw, C, f32>,
    /// Class index.
    pub label: u32,
    /// The file it came from (for error messages).
    pub path: Option<PathBuf>,
}

/// A batch of classification samples on the device.
#[derive(Debug, Clone)]
pub struct ClassBatch {
    /// `[N, C, H, W]` images.
    pub images: Tensor<4>,
    /// `[N]` class indices.
    pub targets: Tensor<1, Int>,
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
}

/// Stacks [`ClassSample`]s into a [`ClassBatch`] on `device`, checking labels and sizes.
#[derive(Debug, Clone)]
pub struct ClassificationBatcher {
    num_classes: usize,
    device: Device,
}

impl ClassificationBatcher {
    /// A batcher for labels `0..num_classes`, putting tensors on `device`.
    pub fn new(num_classes: usize, device: Device) -> Self {
        Self { num_classes, device }
    }
}

fn check_label(
    index: usize,
    path: &Option<PathBuf>,
    label: u32,
    num_classes: usize,
) -> Result<(), DataError> {
    if (label as usize) < num_classes {
        Ok(())
    } else {
        Err(DataError::BatchLabel {
            index,
            path: path.clone(),
            label,
            num_classes,
        })
    }
}

impl<C: ColorOrder> Collate<ClassSample<C>> for ClassificationBatcher {
    type Batch = ClassBatch;

    fn collate(&self, items: Vec<Indexed<ClassSample<C>>>) -> Result<ClassBatch, DataError> {
        let first = items.first().ok_or(DataError::EmptyBatch)?;
        let shape = first.item.image.chw_shape();
        let n = items.len();
        let mut data = Vec::with_capacity(n * shape.iter().product::<usize>());
        let mut labels = Vec::with_capacity(n);
        let mut indices = Vec::with_capacity(n);
        for Indexed { index, item } in items {
            check_label(index, &item.path, item.label, self.num_classes)?;
            if item.image.chw_shape() != shape {
                return Err(DataError::BatchShape {
                    index,
                    path: item.path,
                    expected: shape,
                    found: item.image.chw_shape(),
                });
            }
            data.extend_from_slice(item.image.as_slice());
            labels.push(i64::from(item.label));
            indices.push(index);
        }
        let [c, h, w] = shape;
        Ok(ClassBatch {
            images: Tensor::from_data(TensorData::new(data, [n, c, h, w]), &self.device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), &self.device),
            indices,
        })
    }
}

/// A detection sample ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct DetSample<C: ColorOrder> {
    /// CHW float image (after any resize), already normalised.
    pub image: Image<Chw, C, f32>,
    /// Boxes `[x1, y1, x2, y2]` in the (resized) image's pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Class per box.
    pub labels: Vec<u32>,
    /// Crowd flag per box (empty means all false).
    pub crowd: Vec<bool>,
    /// `[H, W]` of the file before any resize.
    pub original_hw: [usize; 2],
    /// The file it came from (for error messages).
    pub path: Option<PathBuf>,
}

/// Where one image of a detection batch came from and how it was placed.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMeta {
    /// Dataset index.
    pub index: usize,
    /// `[H, W]` of the file.
    pub original_hw: [usize; 2],
    /// `[H, W]` after resizing (the image's size in the batch, before padding).
    pub resized_hw: [usize; 2],
    /// `[H, W]` of the padded batch.
    pub padded_hw: [usize; 2],
    /// `[resized / original]` for height and width: divide boxes by it to get file pixels.
    pub scale: [f32; 2],
}

/// A padded batch of detection samples on the device.
#[derive(Debug, Clone)]
pub struct DetBatch {
    /// `[N, C, Hp, Wp]`, padded at the bottom and right with the batcher's pad value.
    pub images: Tensor<4>,
    /// `[N, M, 4]` boxes, `M` = most boxes in one image (at least 1); padding rows are 0.
    pub boxes: Tensor<3>,
    /// `[N, M]` class per box, `-1` for padding.
    pub labels: Tensor<2, Int>,
    /// `[N, M]` true where a box is real.
    pub mask: Tensor<2, Bool>,
    /// `[N, M]` true for real crowd boxes.
    pub crowd: Tensor<2, Bool>,
    /// Per image: shapes and scale.
    pub meta: Vec<ImageMeta>,
}

/// Pads [`DetSample`]s to a common size and packs their boxes.
#[derive(Debug, Clone)]
pub struct DetectionBatcher {
    num_classes: usize,
    size_multiple: usize,
    pad_value: f32,
    device: Device,
}

impl DetectionBatcher {
    /// Pads to the batch's largest H and W; labels must be in `0..num_classes`.
    pub fn new(num_classes: usize, device: Device) -> Self {
        Self {
            num_classes,
            size_multiple: 1,
            pad_value: 0.0,
            device,
        }
    }

    /// Rounds the padded H and W up to a multiple of `m` (e.g. 32 for a stride-32 backbone).
    pub fn with_size_multiple(mut self, m: usize) -> Self {
        self.size_multiple = m.max(1);
        self
    }

    /// The value written into padding (default 0, the mean colour after normalisation).
    pub fn with_pad_value(mut self, v: f32) -> Self {
        self.pad_value = v;
        self
    }
}

impl<C: ColorOrder> Collate<DetSample<C>> for DetectionBatcher {
    type Batch = DetBatch;

    fn collate(&self, items: Vec<Indexed<DetSample<C>>>) -> Result<DetBatch, DataError> {
        if items.is_empty() {
            return Err(DataError::EmptyBatch);
        }
        let n = items.len();
        let c = C::CHANNELS;
        let round = |v: usize| v.div_ceil(self.size_multiple) * self.size_multiple;
        let hp = round(items.iter().map(|s| s.item.image.height()).max().unwrap_or(0));
        let wp = round(items.iter().map(|s| s.item.image.width()).max().unwrap_or(0));
        let m = items.iter().map(|s| s.item.boxes.len()).max().unwrap_or(0).max(1);
        let mut images = vec![self.pad_value; n * c * hp * wp];
        let mut boxes = vec![0f32; n * m * 4];
        let mut labels = vec![-1i64; n * m];
        let mut mask = vec![false; n * m];
        let mut crowd = vec![false; n * m];
        let mut meta = Vec::with_capacity(n);
        for (b, Indexed { index, item }) in items.into_iter().enumerate() {
            if item.labels.len() != item.boxes.len()
                || !(item.crowd.is_empty() || item.crowd.len() == item.boxes.len())
            {
                return Err(DataError::Custom(format!(
                    "sample {index}: {} boxes but {} labels and {} crowd flags",
                    item.boxes.len(),
                    item.labels.len(),
                    item.crowd.len()
                )));
            }
            let (h, w) = (item.image.height(), item.image.width());
            let src = item.image.as_slice();
            for ch in 0..c {
                for y in 0..h {
                    let from = (ch * h + y) * w;
                    let to = ((b * c + ch) * hp + y) * wp;
                    images[to..to + w].copy_from_slice(&src[from..from + w]);
                }
            }
            for (j, (bx, &label)) in item.boxes.iter().zip(&item.labels).enumerate() {
                check_label(index, &item.path, label, self.num_classes)?;
                boxes[(b * m + j) * 4..(b * m + j) * 4 + 4].copy_from_slice(bx);
                labels[b * m + j] = i64::from(label);
                mask[b * m + j] = true;
                crowd[b * m + j] = item.crowd.get(j).copied().unwrap_or(false);
            }
            let [oh, ow] = item.original_hw;
            meta.push(ImageMeta {
                index,
                original_hw: item.original_hw,
                resized_hw: [h, w],
                padded_hw: [hp, wp],
                scale: [h as f32 / oh.max(1) as f32, w as f32 / ow.max(1) as f32],
            });
        }
        let d = &self.device;
        Ok(DetBatch {
            images: Tensor::from_data(TensorData::new(images, [n, c, hp, wp]), d),
            boxes: Tensor::from_data(TensorData::new(boxes, [n, m, 4]), d),
            labels: Tensor::from_data(TensorData::new(labels, [n, m]), d),
            mask: Tensor::from_data(TensorData::new(mask, [n, m]), d),
            crowd: Tensor::from_data(TensorData::new(crowd, [n, m]), d),
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Rgb;

    fn chw(h: usize, w: usize, v: f32) -> Image<Chw, Rgb, f32> {
        Image::new(h, w, vec![v; 3 * h * w]).unwrap()
    }

    fn class(index: usize, image: Image<Chw, Rgb, f32>, label: u32) -> Indexed<ClassSample<Rgb>> {
        Indexed {
            index,
            item: ClassSample {
                image,
                label,
                path: Some(PathBuf::from(format!("img{index}.jpg"))),
            },
        }
    }

    #[test]
    fn classification_stacks_images_and_labels_on_the_device() {
        let b = ClassificationBatcher::new(10, Device::flex());
        let batch = b
            .collate(vec![class(7, chw(2, 3, 0.5), 3), class(2, chw(2, 3, -1.0), 9)])
            .unwrap();
        assert_eq!(batch.images.dims(), [2, 3, 2, 3]);
        assert_eq!(batch.indices, vec![7, 2]);
        assert_eq!(
            batch.targets.into_data().try_into_vec_as::<i64>().unwrap(),
            vec![3, 9]
        );
        let x = batch.images.into_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!((x[0], x[17], x[18]), (0.5, 0.5, -1.0));
    }

    #[test]
    fn classification_errors_name_index_and_file() {
        let b = ClassificationBatcher::new(10, Device::flex());
        let err = b
            .collate(vec![class(0, chw(2, 2, 0.0), 1), class(41, chw(2, 2, 0.0), 10)])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sample 41 (img41.jpg): label 10 is out of range 0..10"
        );
        let err = b
            .collate(vec![class(0, chw(2, 2, 0.0), 1), class(5, chw(3, 2, 0.0), 1)])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("sample 5 (img5.jpg): size [3, 3, 2] (CxHxW) differs from [3, 2, 2]"),
            "{msg}"
        );
        assert!(msg.contains("add a resize or crop transform"), "{msg}");
    }

    fn det(h: usize, w: usize, boxes: Vec<[f32; 4]>, labels: Vec<u32>) -> DetSample<Rgb> {
        DetSample {
            image: chw(h, w, 1.0),
            crowd: vec![],
            boxes,
            labels,
            original_hw: [2 * h, 2 * w],
            path: None,
        }
    }

    #[test]
    fn detection_pads_images_and_boxes_with_masks() {
        let b = DetectionBatcher::new(5, Device::flex())
            .with_size_multiple(4)
            .with_pad_value(-9.0);
        let items = vec![
            Indexed {
                index: 0,
                item: det(3, 5, vec![[0., 0., 1., 1.], [1., 1., 2., 3.]], vec![4, 0]),
            },
            Indexed {
                index: 1,
                item: det(2, 2, vec![], vec![]), // zero boxes is legal
            },
        ];
        let batch = b.collate(items).unwrap();
        // max H 3 → 4, max W 5 → 8 (multiple of 4); M = 2.
        assert_eq!(batch.images.dims(), [2, 3, 4, 8]);
        assert_eq!(batch.boxes.dims(), [2, 2, 4]);
        let x = batch.images.into_data().try_into_vec_as::<f32>().unwrap();
        // Image 0, channel 0: rows 0..3 hold 1.0 in columns 0..5, -9 elsewhere.
        assert_eq!(&x[0..8], &[1., 1., 1., 1., 1., -9., -9., -9.]);
        assert_eq!(&x[24..32], &[-9.; 8], "row 3 is padding");
        // Image 1, channel 0 starts at 3·4·8 = 96: a 2x2 block.
        assert_eq!(&x[96..104], &[1., 1., -9., -9., -9., -9., -9., -9.]);
        let labels = batch.labels.into_data().try_into_vec_as::<i64>().unwrap();
        assert_eq!(labels, vec![4, 0, -1, -1]);
        let mask = batch.mask.into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(mask, vec![true, true, false, false]);
        let boxes = batch.boxes.into_data().try_into_vec_as::<f32>().unwrap();
        assert_eq!(&boxes[4..8], &[1., 1., 2., 3.]);
        assert_eq!(&boxes[8..16], &[0.; 8], "padding boxes are zero");
        assert_eq!(
            batch.meta[1],
            ImageMeta {
                index: 1,
                original_hw: [4, 4],
                resized_hw: [2, 2],
                padded_hw: [4, 8],
                scale: [0.5, 0.5]
            }
        );
    }

    #[test]
    fn detection_with_no_boxes_anywhere_still_has_one_masked_slot() {
        let b = DetectionBatcher::new(5, Device::flex());
        let batch = b
            .collate(vec![Indexed {
                index: 3,
                item: det(2, 2, vec![], vec![]),
            }])
            .unwrap();
        assert_eq!(batch.boxes.dims(), [1, 1, 4]);
        assert_eq!(batch.mask.into_data().try_to_vec::<bool>().unwrap(), vec![false]);
        let err = b
            .collate(vec![Indexed {
                index: 3,
                item: det(2, 2, vec![[0.; 4]], vec![5]),
            }])
            .unwrap_err();
        assert_eq!(err.to_string(), "sample 3: label 5 is out of range 0..5");
    }
}
