//! CIFAR-10 and CIFAR-100 in their "binary version" (the `.bin` files of `cifar-10-binary.tar.gz`
//! and `cifar-100-binary.tar.gz`).
//!
//! A record is one label byte (CIFAR-10) or a coarse and a fine label byte (CIFAR-100), then
//! 3072 bytes: the 32×32 red plane, then green, then blue (CHW, RGB). kiln hands images out as
//! every loader does, HWC BGR u8, so `Image<Hwc, Bgr>` means the same thing whatever the source.
//!
//! The root may be the folder holding the `.bin` files or its parent (holding
//! `cifar-10-batches-bin/` or `cifar-100-binary/`, as the archives unpack).

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;

use crate::image::{Bgr, Hwc, Image, LabeledImage};
use crate::{DataError, DatasetRoot};

/// Pixels per CIFAR image (32 × 32 × 3).
const PIXELS: usize = 32 * 32 * 3;

/// CIFAR-10 class names, by label (`batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Which half of a CIFAR dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarSplit {
    /// 50,000 images.
    Train,
    /// 10,000 images.
    Test,
}

/// Which CIFAR-100 label becomes [`CifarItem::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cifar100Label {
    /// The 100 fine classes (the usual benchmark).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

/// One CIFAR sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarItem {
    /// 32×32 HWC BGR u8.
    pub image: Image<Hwc, Bgr>,
    /// The class index (CIFAR-10, or the chosen CIFAR-100 label).
    pub label: u32,
    /// CIFAR-100 only: the 100-way fine class.
    pub fine_label: Option<u32>,
    /// CIFAR-100 only: the 20-way superclass.
    pub coarse_label: Option<u32>,
}

impl LabeledImage<Bgr> for CifarItem {
    fn into_parts(self) -> (Image<Hwc, Bgr>, u32) {
        (self.image, self.label)
    }
}

/// A CIFAR-10 or CIFAR-100 split held in memory, already converted to HWC BGR.
#[derive(Debug, Clone)]
pub struct CifarDataset {
    files: Vec<PathBuf>,
    pixels: Vec<u8>,
    labels: Vec<u8>,
    /// CIFAR-100: (coarse, fine) per sample.
    both: Option<Vec<[u8; 2]>>,
    num_classes: usize,
}

impl CifarDataset {
    /// Reads CIFAR-10 (`data_batch_1..5.bin` or `test_batch.bin`).
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`], [`DataError::MissingFile`], [`DataError::Format`] for a file
    /// whose size is not a whole number of records, [`DataError::LabelOutOfRange`].
    pub fn cifar10(root: impl AsRef<Path>, split: CifarSplit) -> Result<Self, DataError> {
        let root = DatasetRoot::resolve(root)?;
        let names: Vec<String> = match split {
            CifarSplit::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
            CifarSplit::Test => vec!["test_batch.bin".to_string()],
        };
        let dir = locate(&root, "cifar-10-batches-bin", &names[0])?;
        let files: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
        Self::from_files(&files, false, 10, Cifar100Label::Fine)
    }

    /// Reads CIFAR-100 (`train.bin` or `test.bin`), with `label` choosing fine or coarse classes.
    ///
    /// # Errors
    ///
    /// As [`CifarDataset::cifar10`].
    pub fn cifar100(
        root: impl AsRef<Path>,
        split: CifarSplit,
        label: Cifar100Label,
    ) -> Result<Self, DataError> {
        let root = DatasetRoot::resolve(root)?;
        let name = match split {
            CifarSplit::Train => "train.bin",
            CifarSplit::Test => "test.bin",
        };
        let dir = locate(&root, "cifar-100-binary", name)?;
        let classes = match label {
            Cifar100Label::Fine => 100,
            Cifar100Label::Coarse => 20,
        };
        Self::from_files(&[dir.join(name)], true, classes, label)
    }

    /// Reads explicit record files; `cifar100` selects the two-label record layout.
    ///
    /// # Errors
    ///
    /// As [`CifarDataset::cifar10`], less the root checks.
    pub fn from_files(
        files: &[PathBuf],
        cifar100: bool,
        num_classes: usize,
        label: Cifar100Label,
    ) -> Result<Self, DataError> {
        let label_bytes = if cifar100 { 2 } else { 1 };
        let record = label_bytes + PIXELS;
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        let mut both = Vec::new();
        for path in files {
            let bytes = crate::paths::read_file(path)?;
            if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
                return Err(DataError::Format {
                    path: path.clone(),
                    problem: format!(
                        "{} bytes is not a whole number of {record}-byte {} records ({} full records and {} bytes over); truncated download?",
                        bytes.len(),
                        if cifar100 { "CIFAR-100" } else { "CIFAR-10" },
                        bytes.len() / record,
                        bytes.len() % record
                    ),
                });
            }
            pixels.reserve(bytes.len() / record * PIXELS);
            for (i, rec) in bytes.chunks_exact(record).enumerate() {
                let (fine, coarse_label) = if cifar100 {
                    (rec[1], Some(rec[0]))
                } else {
                    (rec[0], None)
                };
                // Both CIFAR-100 labels are checked, whichever is served.
                let checks = match coarse_label {
                    Some(c) => vec![(c, 20), (fine, 100)],
                    None => vec![(fine, num_classes)],
                };
                if let Some(&(bad, classes)) = checks.iter().find(|&&(l, n)| usize::from(l) >= n) {
                    return Err(DataError::LabelOutOfRange {
                        path: path.clone(),
                        index: i,
                        label: u32::from(bad),
                        num_classes: classes,
                    });
                }
                let chosen = match (label, coarse_label) {
                    (Cifar100Label::Coarse, Some(c)) => c,
                    _ => fine,
                };
                labels.push(chosen);
                if let Some(c) = coarse_label {
                    both.push([c, fine]);
                }
                let planes = &rec[label_bytes..];
                // CHW RGB planes → HWC BGR.
                for p in 0..1024 {
                    pixels.extend_from_slice(&[planes[2048 + p], planes[1024 + p], planes[p]]);
                }
            }
        }
        Ok(Self {
            files: files.to_vec(),
            pixels,
            labels,
            both: cifar100.then_some(both),
            num_classes,
        })
    }

    /// Number of classes of [`CifarItem::label`].
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Every sample's label, in index order.
    pub fn targets(&self) -> Vec<u32> {
        self.labels.iter().map(|&l| u32::from(l)).collect()
    }

    /// The record files read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Dataset<CifarItem, DataError> for CifarDataset {
    fn get(&self, index: usize) -> Result<CifarItem, DataError> {
        let len = self.labels.len();
        if index >= len {
            return Err(DataError::IndexOutOfRange { index, len });
        }
        let image = Image::new(32, 32, self.pixels[index * PIXELS..(index + 1) * PIXELS].to_vec())?;
        Ok(CifarItem {
            image,
            label: u32::from(self.labels[index]),
            fine_label: self.both.as_ref().map(|b| u32::from(b[index][1])),
            coarse_label: self.both.as_ref().map(|b| u32::from(b[index][0])),
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// The folder holding `probe`: the root itself or `root/<sub>`.
fn locate(root: &DatasetRoot, sub: &str, probe: &str) -> Result<PathBuf, DataError> {
    for dir in [root.path().to_path_buf(), root.join(sub)] {
        if dir.join(probe).is_file() {
            return Ok(dir);
        }
    }
    Err(DataError::MissingFile {
        root: root.path().to_path_buf(),
        tried: vec![root.join(probe), root.join(sub).join(probe)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIFAR record whose R plane is `r`, G plane `g`, B plane `b`.
    fn record(labels: &[u8], r: u8, g: u8, b: u8) -> Vec<u8> {
        let mut out = labels.to_vec();
        for v in [r, g, b] {
            out.extend(std::iter::repeat_n(v, 1024));
        }
        out
    }

    #[test]
    fn cifar10_reads_five_batches_and_converts_to_hwc_bgr() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir(&sub).unwrap();
        for i in 1..=5u8 {
            let mut bytes = record(&[i], 10 * i, 1, 2);
            bytes.extend(record(&[0], 0, 0, 0));
            std::fs::write(sub.join(format!("data_batch_{i}.bin")), bytes).unwrap();
        }
        let ds = CifarDataset::cifar10(dir.path(), CifarSplit::Train).unwrap();
        assert_eq!(ds.len(), 10);
        let item = ds.get(4).unwrap(); // first record of batch 3
        assert_eq!(item.label, 3);
        assert_eq!(item.image.hwc_shape(), [32, 32, 3]);
        assert_eq!(&item.image.as_bytes()[..6], &[2, 1, 30, 2, 1, 30], "HWC, B G R");
        assert_eq!((item.fine_label, item.coarse_label), (None, None));
        assert!(matches!(ds.get(10), Err(DataError::IndexOutOfRange { .. })));
    }

    #[test]
    fn cifar100_has_fine_and_coarse_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test.bin"), record(&[19, 99], 0, 0, 0)).unwrap();
        let fine = CifarDataset::cifar100(dir.path(), CifarSplit::Test, Cifar100Label::Fine).unwrap();
        let item = fine.get(0).unwrap();
        assert_eq!(
            (item.label, item.fine_label, item.coarse_label),
            (99, Some(99), Some(19))
        );
        assert_eq!(fine.num_classes(), 100);
        let coarse = CifarDataset::cifar100(dir.path(), CifarSplit::Test, Cifar100Label::Coarse).unwrap();
        let item = coarse.get(0).unwrap();
        assert_eq!(
            (item.label, item.fine_label, item.coarse_label),
            (19, Some(99), Some(19))
        );
        assert_eq!(coarse.targets(), vec![19]);
    }

    #[test]
    fn truncated_files_and_bad_labels_are_errors_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(&[1], 0, 0, 0);
        bytes.extend_from_slice(&[5; 100]);
        std::fs::write(dir.path().join("test_batch.bin"), &bytes).unwrap();
        let msg = CifarDataset::cifar10(dir.path(), CifarSplit::Test)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("test_batch.bin: 3173 bytes is not a whole number of 3073-byte"),
            "{msg}"
        );
        assert!(msg.contains("1 full records and 100 bytes over"), "{msg}");
        std::fs::write(
            dir.path().join("test_batch.bin"),
            [record(&[1], 0, 0, 0), record(&[10], 0, 0, 0)].concat(),
        )
        .unwrap();
        let err = CifarDataset::cifar10(dir.path(), CifarSplit::Test).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 1,
                    label: 10,
                    num_classes: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = CifarDataset::cifar10(dir.path(), CifarSplit::Train)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("data_batch_1.bin") && msg.contains("cifar-10-batches-bin"),
            "{msg}"
        );
    }
}
