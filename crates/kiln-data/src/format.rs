//! Which dataset format a folder holds, decided once from what is in it.
//!
//! [`detect`] looks at a folder's entries (never at image contents) and says what it found:
//!
//! | found | format |
//! |---|---|
//! | `train-images-idx3-ubyte[.gz]` (and the other three idx files) | [`Found::Idx`] (MNIST, Fashion-MNIST) |
//! | `data_batch_1.bin`, here or in `cifar-10-batches-bin/` | [`Found::Cifar10`] |
//! | `train/<class>/<image>` (with `val/` and maybe `test/`) | [`Found::ImageFolder`] with [`FolderLayout::Splits`] |
//! | `<class>/<image>` | [`Found::ImageFolder`] with [`FolderLayout::Classes`] |
//! | a `.json` with `images` and `annotations` (here or in `annotations/`) | [`Found::Coco`] |
//! | such a `.json` in `train/` (or `train/annotations/`) | [`Found::CocoSplits`] |
//!
//! The order is the table's: a folder with idx files is idx data even if it also has a `train/`.
//!
//! ```
//! use kiln_data::format::{detect, Found, FolderLayout};
//!
//! let dir = tempfile::tempdir()?;
//! for class in ["cat", "dog"] {
//!     std::fs::create_dir(dir.path().join(class))?;
//!     std::fs::write(dir.path().join(class).join("0.png"), b"")?;
//! }
//! let found = detect(dir.path())?;
//! assert_eq!(found, Found::ImageFolder(FolderLayout::Classes));
//! assert!(found.describe().contains("class folders"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use crate::folder::IMAGE_EXTENSIONS;
use crate::{DataError, DatasetRoot};

/// How an image folder is split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderLayout {
    /// `train/<class>/*` and `val/<class>/*`, maybe `test/<class>/*`.
    Splits {
        /// Whether `test/` is there too.
        test: bool,
    },
    /// `<class>/*` alone: the splits are drawn from it (seeded, stratified).
    Classes,
}

/// What [`detect`] found in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The four MNIST-style idx files (MNIST, Fashion-MNIST), gzipped or raw.
    Idx,
    /// CIFAR-10's binary batches.
    Cifar10,
    /// Class subfolders of images.
    ImageFolder(FolderLayout),
    /// A COCO instances JSON; the images are in the folder (or its `images/`).
    Coco {
        /// The annotations file.
        annotations: PathBuf,
    },
    /// COCO folders per split: `train/` (and `val/`, maybe `test/`) each with an instances JSON
    /// and its images, as `kiln make-detection` writes them.
    CocoSplits {
        /// The training split's annotations file.
        train: PathBuf,
    },
}

impl Found {
    /// What was found, in words, for messages (`four idx files (MNIST layout)`).
    pub fn describe(&self) -> String {
        match self {
            Found::Idx => "idx files (MNIST / Fashion-MNIST layout)".into(),
            Found::Cifar10 => "CIFAR-10 binary batches".into(),
            Found::ImageFolder(FolderLayout::Splits { test: true }) => {
                "an image folder with train/, val/ and test/ class folders".into()
            }
            Found::ImageFolder(FolderLayout::Splits { test: false }) => {
                "an image folder with train/ and val/ class folders".into()
            }
            Found::ImageFolder(FolderLayout::Classes) => {
                "an image folder of class folders (no train/val/test split)".into()
            }
            Found::Coco { annotations } => format!("COCO detection annotations ({})", annotations.display()),
            Found::CocoSplits { train } => format!("COCO detection splits (train: {})", train.display()),
        }
    }
}

/// Decides the format of the dataset in `dir` from its entries.
///
/// # Errors
///
/// [`DataError::RootNotFound`] for a missing folder, [`DataError::Io`] for an unreadable one, and
/// [`DataError::Layout`] naming what was found when it is none of the formats.
pub fn detect(dir: &Path) -> Result<Found, DataError> {
    let root = DatasetRoot::resolve(dir)?;
    let dir = root.path();
    let has_file = |p: PathBuf| p.is_file();
    if ["train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"]
        .iter()
        .any(|n| has_file(dir.join(n)))
    {
        return Ok(Found::Idx);
    }
    if has_file(dir.join("data_batch_1.bin"))
        || has_file(dir.join("cifar-10-batches-bin").join("data_batch_1.bin"))
    {
        return Ok(Found::Cifar10);
    }
    if let Some(annotations) = coco_json(dir)? {
        return Ok(Found::Coco { annotations });
    }
    // Before class folders: a split's `images/` would read as a class of its own.
    if let Some(train) = coco_json(&dir.join("train"))? {
        return Ok(Found::CocoSplits { train });
    }
    let train = dir.join("train");
    if has_class_folders(&train)? {
        let val = dir.join("val");
        if !has_class_folders(&val)? {
            return Err(DataError::Layout {
                root: dir.to_path_buf(),
                problem: "train/ has class folders but there is no val/ with the same classes".into(),
                expected: "DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg (and optionally DIR/test/<class>/*.jpg), or DIR/<class>/*.jpg alone",
                found: entries(dir)?,
            });
        }
        return Ok(Found::ImageFolder(FolderLayout::Splits {
            test: has_class_folders(&dir.join("test"))?,
        }));
    }
    if has_class_folders(dir)? {
        return Ok(Found::ImageFolder(FolderLayout::Classes));
    }
    Err(DataError::Layout {
        root: dir.to_path_buf(),
        problem: "no dataset format recognised".into(),
        expected: "the four idx files (train-images-idx3-ubyte.gz, ...), CIFAR-10's data_batch_1..5.bin and test_batch.bin, class folders of images (DIR/<class>/*.jpg, or DIR/train/<class> and DIR/val/<class>), or a COCO instances .json",
        found: entries(dir)?,
    })
}

/// Whether `dir` has at least one subfolder with an image file directly in it.
fn has_class_folders(dir: &Path) -> Result<bool, DataError> {
    if !dir.is_dir() {
        return Ok(false);
    }
    for sub in read_dir(dir)? {
        if sub.is_dir() && read_dir(&sub)?.iter().any(|f| is_image(f)) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The first `.json` in `dir` or `dir/annotations` whose top level has `images` and `annotations`.
fn coco_json(dir: &Path) -> Result<Option<PathBuf>, DataError> {
    for folder in [dir.to_path_buf(), dir.join("annotations")] {
        if !folder.is_dir() {
            continue;
        }
        for path in read_dir(&folder)? {
            if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
                && path.is_file()
                && looks_like_coco(&path)
            {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// A cheap look at the start of the file: a JSON object naming both keys. The full parse (and its
/// errors) is [`crate::CocoDetection`]'s.
fn looks_like_coco(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(1 << 20).read_to_end(&mut head));
    if read.is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&head);
    text.trim_start().starts_with('{') && text.contains("\"images\"") && text.contains("\"annotations\"")
}

/// The folder's entries, sorted (the order is the file system's otherwise).
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |e: std::io::Error| DataError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

/// The first few entries of `dir`, for an error.
fn entries(dir: &Path) -> Result<Vec<String>, DataError> {
    let all = read_dir(dir)?;
    let mut shown: Vec<String> = all
        .iter()
        .take(8)
        .map(|p| {
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            if p.is_dir() { format!("{name}/") } else { name }
        })
        .collect();
    if all.len() > 8 {
        shown.push(format!("… ({} entries)", all.len()));
    }
    if shown.is_empty() {
        shown.push("(empty folder)".into());
    }
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn each_format_is_recognised_from_its_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        touch(&p.join("idx/train-images-idx3-ubyte.gz"));
        assert_eq!(detect(&p.join("idx")).unwrap(), Found::Idx);
        touch(&p.join("raw/train-images-idx3-ubyte"));
        assert_eq!(detect(&p.join("raw")).unwrap(), Found::Idx);
        touch(&p.join("cifar/cifar-10-batches-bin/data_batch_1.bin"));
        assert_eq!(detect(&p.join("cifar")).unwrap(), Found::Cifar10);
        touch(&p.join("split/train/a/0.jpg"));
        touch(&p.join("split/val/a/0.JPG"));
        assert_eq!(
            detect(&p.join("split")).unwrap(),
            Found::ImageFolder(FolderLayout::Splits { test: false })
        );
        touch(&p.join("split/test/a/0.png"));
        assert_eq!(
            detect(&p.join("split")).unwrap(),
            Found::ImageFolder(FolderLayout::Splits { test: true })
        );
        touch(&p.join("flat/a/0.png"));
        touch(&p.join("flat/b/0.webp"));
        assert_eq!(
            detect(&p.join("flat")).unwrap(),
            Found::ImageFolder(FolderLayout::Classes)
        );
        let coco = p.join("coco/annotations/instances.json");
        std::fs::create_dir_all(coco.parent().unwrap()).unwrap();
        std::fs::write(&coco, br#"{"images": [], "annotations": [], "categories": []}"#).unwrap();
        touch(&p.join("coco/images/0.jpg"));
        assert!(
            matches!(detect(&p.join("coco")).unwrap(), Found::Coco { annotations } if annotations.ends_with("instances.json"))
        );
        // COCO folders per split (`kiln make-detection`'s): `train/images/` is not a class.
        for split in ["train", "val"] {
            let json = p.join(format!("det/{split}/annotations.json"));
            std::fs::create_dir_all(json.parent().unwrap()).unwrap();
            std::fs::write(&json, br#"{"images": [], "annotations": [], "categories": []}"#).unwrap();
            touch(&p.join(format!("det/{split}/images/000000.png")));
        }
        let found = detect(&p.join("det")).unwrap();
        assert!(
            matches!(&found, Found::CocoSplits { train } if train.ends_with("train/annotations.json")),
            "{found:?}"
        );
    }

    #[test]
    fn a_folder_of_nothing_known_says_what_it_has_and_what_was_expected() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("notes.txt"));
        touch(&d.path().join("images/readme.md"));
        let err = detect(d.path()).unwrap_err().to_string();
        assert!(err.contains("no dataset format recognised"), "{err}");
        assert!(err.contains("notes.txt") && err.contains("images/"), "{err}");
        assert!(
            err.contains("idx") && err.contains("data_batch_1") && err.contains("<class>"),
            "{err}"
        );
        // A train/ without val/ is named as such.
        touch(&d.path().join("train/a/0.png"));
        let err = detect(d.path()).unwrap_err().to_string();
        assert!(err.contains("no val/"), "{err}");
        assert!(detect(&d.path().join("missing")).is_err());
    }
}
