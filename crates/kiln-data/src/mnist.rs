//! MNIST-family datasets (MNIST, Fashion-MNIST, KMNIST): 28×28 grey images with labels 0..10,
//! stored as four idx files.

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;

use crate::idx::read_idx;
use crate::image::{Gray, Hwc, Image, LabeledImage};
use crate::{DataError, DatasetRoot};

/// Class names of Fashion-MNIST, by label (from the dataset's README).
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Which half of an MNIST-family dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistSplit {
    /// `train-images-idx3-ubyte` / `train-labels-idx1-ubyte`.
    Train,
    /// `t10k-images-idx3-ubyte` / `t10k-labels-idx1-ubyte`.
    Test,
}

impl MnistSplit {
    fn prefix(self) -> &'static str {
        match self {
            MnistSplit::Train => "train",
            MnistSplit::Test => "t10k",
        }
    }
}

/// One sample: an HWC grey image and its integer class label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MnistItem {
    /// The 28×28×1 image, as stored (0 = background).
    pub image: Image<Hwc, Gray>,
    /// The class index, `0..10`.
    pub label: u32,
}

impl LabeledImage<Gray> for MnistItem {
    fn into_parts(self) -> (Image<Hwc, Gray>, u32) {
        (self.image, self.label)
    }
}

/// An MNIST-family split held in memory (60,000 images are 47 MB).
#[derive(Debug, Clone)]
pub struct MnistDataset {
    images_path: PathBuf,
    labels_path: PathBuf,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

/// Number of classes in every MNIST-family dataset.
pub const MNIST_NUM_CLASSES: usize = 10;

impl MnistDataset {
    /// Reads one split from a directory holding the standard file names, gzipped (`.gz`) or raw.
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`] for a missing directory, [`DataError::MissingFile`] when a file is
    /// absent, the idx errors of [`read_idx`], [`DataError::CountMismatch`]
    /// and [`DataError::LabelOutOfRange`].
    pub fn from_dir(root: impl AsRef<Path>, split: MnistSplit) -> Result<Self, DataError> {
        let root = DatasetRoot::resolve(root)?;
        let images_path = find(&root, &format!("{}-images-idx3-ubyte", split.prefix()))?;
        let labels_path = find(&root, &format!("{}-labels-idx1-ubyte", split.prefix()))?;
        Self::from_files(&images_path, &labels_path)
    }

    /// Reads a split from an explicit images file and labels file.
    ///
    /// # Errors
    ///
    /// As [`MnistDataset::from_dir`], less the directory checks.
    pub fn from_files(images_path: &Path, labels_path: &Path) -> Result<Self, DataError> {
        let images = read_idx(images_path)?;
        images.expect_dims(images_path, &[None, Some(28), Some(28)])?;
        let labels = read_idx(labels_path)?;
        labels.expect_dims(labels_path, &[None])?;
        if images.dims[0] != labels.dims[0] {
            return Err(DataError::CountMismatch {
                images: images_path.to_path_buf(),
                n_images: images.dims[0],
                labels: labels_path.to_path_buf(),
                n_labels: labels.dims[0],
            });
        }
        if let Some((index, &label)) = labels
            .data
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= MNIST_NUM_CLASSES)
        {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label: u32::from(label),
                num_classes: MNIST_NUM_CLASSES,
            });
        }
        Ok(Self {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            height: images.dims[1],
            width: images.dims[2],
            pixels: images.data,
            labels: labels.data,
        })
    }

    /// The images file this split was read from.
    pub fn images_path(&self) -> &Path {
        &self.images_path
    }

    /// The labels file this split was read from.
    pub fn labels_path(&self) -> &Path {
        &self.labels_path
    }

    /// `[height, width, channels]` of every image.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.height, self.width, 1]
    }

    /// All pixels, sample-major, HWC (for fast batch assembly and statistics).
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// All labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        MNIST_NUM_CLASSES
    }

    /// The sample at `index`, or [`DataError::IndexOutOfRange`].
    ///
    /// # Errors
    ///
    /// [`DataError::IndexOutOfRange`] when `index >= len`.
    pub fn item(&self, index: usize) -> Result<MnistItem, DataError> {
        let len = self.labels.len();
        if index >= len {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        let size = self.height * self.width;
        let image = Image::new(
            self.height,
            self.width,
            self.pixels[index * size..(index + 1) * size].to_vec(),
        )?;
        Ok(MnistItem {
            image,
            label: u32::from(self.labels[index]),
        })
    }
}

impl Dataset<MnistItem, DataError> for MnistDataset {
    fn get(&self, index: usize) -> Result<MnistItem, DataError> {
        self.item(index)
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

fn find(root: &DatasetRoot, stem: &str) -> Result<PathBuf, DataError> {
    let tried = [format!("{stem}.gz"), stem.to_string()];
    for name in &tried {
        let p = root.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::MissingFile {
        root: root.path().to_path_buf(),
        tried: tried.iter().map(|n| root.join(n)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::encode_idx;

    fn write_split(dir: &Path, prefix: &str, n: usize, labels: &[u8]) {
        let pixels: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[n, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[labels.len()], labels),
        )
        .unwrap();
    }

    #[test]
    fn reads_a_split_and_serves_items() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "t10k", 3, &[9, 0, 4]);
        let ds = MnistDataset::from_dir(dir.path(), MnistSplit::Test).unwrap();
        assert_eq!(ds.len(), 3);
        let item = ds.get(2).unwrap();
        assert_eq!(item.label, 4);
        assert_eq!(item.image.hwc_shape(), [28, 28, 1]);
        assert_eq!(item.image.as_bytes()[0], ((2 * 784) % 251) as u8);
        assert!(matches!(
            ds.get(3),
            Err(DataError::IndexOutOfRange { index: 3, len: 3 })
        ));
    }

    #[test]
    fn count_mismatch_and_bad_labels_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, &[1, 2]);
        assert!(matches!(
            MnistDataset::from_dir(dir.path(), MnistSplit::Train),
            Err(DataError::CountMismatch {
                n_images: 3,
                n_labels: 2,
                ..
            })
        ));
        write_split(dir.path(), "train", 3, &[1, 12, 2]);
        let err = MnistDataset::from_dir(dir.path(), MnistSplit::Train).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 12,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn images_of_the_wrong_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            encode_idx(&[1, 32, 32], &[0; 1024]),
        )
        .unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), encode_idx(&[1], &[0])).unwrap();
        let err = MnistDataset::from_dir(dir.path(), MnistSplit::Train).unwrap_err();
        assert!(matches!(err, DataError::IdxDims { .. }), "{err:?}");
    }

    #[test]
    fn missing_files_list_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let msg = MnistDataset::from_dir(dir.path(), MnistSplit::Train)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte.gz") && msg.contains("train-images-idx3-ubyte"),
            "{msg}"
        );
    }
}
