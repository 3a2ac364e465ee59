//! ImageFolder: `root/<class>/<image>`, torchvision's rule for classification folders.
//!
//! * Classes are the sub-folders of `root`, **sorted by name**; class `i` is the `i`-th name.
//! * Each class folder is walked recursively (symlinks followed, as torchvision does); folders are
//!   visited in sorted path order and files sorted within each, so indices match torchvision's.
//! * Only files with an accepted extension (case-insensitive; torchvision's list by default) count.
//! * Symlink loops are detected and skipped (reported in [`ImageFolder::warnings`]), never followed
//!   forever; an unreadable folder is an error naming it.
//! * A root with images but no class folders is an error that lists what it found.
//!
//! ```
//! # fn main() -> Result<(), kiln_data::DataError> {
//! # let dir = tempfile::tempdir().unwrap();
//! # for (class, n) in [("dog", 2), ("cat", 1)] {
//! #     std::fs::create_dir(dir.path().join(class)).unwrap();
//! #     for i in 0..n {
//! #         image::RgbImage::new(4, 3).save(dir.path().join(class).join(format!("{i}.png"))).unwrap();
//! #     }
//! # }
//! use burn::data::dataset::Dataset;
//! use kiln_data::ImageFolder;
//!
//! let ds = ImageFolder::new(dir.path())?;
//! assert_eq!(ds.classes(), ["cat", "dog"]); // sorted: cat = 0, dog = 1
//! assert_eq!(ds.len(), 3);
//! let item = ds.get(0)?; // decoded as cv2.imread would: HWC, BGR, u8
//! assert_eq!((item.label, item.image.hwc_shape()), (0, [3, 4, 3]));
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;

use crate::decode::{DraftSize, imread, imread_draft};
use crate::image::{Bgr, Hwc, Image, LabeledImage};
use crate::{DataError, DatasetRoot};

/// torchvision's `IMG_EXTENSIONS` (without the dot, lower case).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp"];

/// How many entries a layout error lists.
const SHOW: usize = 8;

/// Something the scan skipped, kept so a caller can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanWarning {
    /// A symlinked folder that leads back to one of its ancestors.
    SymlinkLoop {
        /// The link.
        path: PathBuf,
    },
    /// A symlinked folder whose target is already part of the scan (inside the dataset's root,
    /// or an outside folder another link led to): following it would count its images twice,
    /// or under the wrong class.
    SymlinkDuplicate {
        /// The link.
        path: PathBuf,
        /// Where it leads (canonical).
        target: PathBuf,
    },
    /// A symlink whose target does not exist.
    BrokenLink {
        /// The link.
        path: PathBuf,
    },
    /// A FIFO, socket or device among the files: never an image, and reading a FIFO would wait
    /// for a writer forever.
    NotAFile {
        /// The entry.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Files directly under the root, which belong to no class.
    LooseFiles {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<PathBuf>,
    },
}

impl std::fmt::Display for ScanWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanWarning::SymlinkLoop { path } => write!(f, "{}: symlink loop, not followed", path.display()),
            ScanWarning::SymlinkDuplicate { path, target } => write!(
                f,
                "{}: a link to {}, which is already part of the dataset; not followed",
                path.display(),
                target.display()
            ),
            ScanWarning::BrokenLink { path } => write!(f, "{}: broken symlink, skipped", path.display()),
            ScanWarning::NotAFile { path, kind } => write!(f, "{}: a {kind}, skipped", path.display()),
            ScanWarning::LooseFiles { count, examples } => write!(
                f,
                "{count} files directly under the root belong to no class and are ignored (e.g. {})",
                examples
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Options of [`ImageFolder::with_options`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolderOptions {
    /// Accepted file extensions, without the dot, compared case-insensitively.
    pub extensions: Vec<String>,
    /// Refuse a class folder with no images (torchvision's `allow_empty=False`), default true.
    pub forbid_empty_classes: bool,
}

impl Default for ImageFolderOptions {
    fn default() -> Self {
        Self {
            extensions: IMAGE_EXTENSIONS.iter().map(|e| e.to_string()).collect(),
            forbid_empty_classes: true,
        }
    }
}

/// One ImageFolder sample: the image as `cv2.imread` reads it, its class and its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFolderItem {
    /// HWC, BGR, u8.
    pub image: Image<Hwc, Bgr>,
    /// Class index (position of the class folder in sorted order).
    pub label: u32,
    /// The file it was read from.
    pub path: PathBuf,
}

impl LabeledImage<Bgr> for ImageFolderItem {
    fn into_parts(self) -> (Image<Hwc, Bgr>, u32) {
        (self.image, self.label)
    }
}

/// A classification dataset laid out as `root/<class>/<image>`; images are decoded on `get`.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: DatasetRoot,
    classes: Vec<String>,
    samples: Vec<(PathBuf, u32)>,
    warnings: Vec<ScanWarning>,
    draft: Option<DraftSize>,
}

impl ImageFolder {
    /// Scans `root` with the default options.
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`], [`DataError::Io`] for an unreadable folder, and
    /// [`DataError::Layout`] when there are no class folders or a class has no images.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::with_options(DatasetRoot::resolve(root)?, &ImageFolderOptions::default())
    }

    /// Scans an already resolved root with explicit options.
    ///
    /// # Errors
    ///
    /// As [`ImageFolder::new`].
    pub fn with_options(root: DatasetRoot, options: &ImageFolderOptions) -> Result<Self, DataError> {
        let extensions: Vec<String> = options
            .extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_lowercase())
            .collect();
        let accept = |p: &Path| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
        };
        let mut warnings = Vec::new();
        let mut class_dirs = Vec::new();
        let mut loose = Vec::new();
        for entry in sorted_entries(root.path())? {
            let path = root.join(&entry);
            if path.is_dir() {
                class_dirs.push((entry, path));
            } else if path.is_symlink() && !path.exists() {
                warnings.push(ScanWarning::BrokenLink { path });
            } else {
                loose.push(path);
            }
        }
        if class_dirs.is_empty() {
            let n_images = loose.iter().filter(|p| accept(p)).count();
            let problem = if n_images > 0 {
                format!("{n_images} images directly under the root but no class folders")
            } else {
                "no class folders".to_string()
            };
            return Err(DataError::Layout {
                root: root.path().to_path_buf(),
                problem,
                expected: "root/<class>/<image>, e.g. root/cat/001.jpg and root/dog/002.jpg",
                found: first_names(&loose),
            });
        }
        if !loose.is_empty() {
            warnings.push(ScanWarning::LooseFiles {
                count: loose.len(),
                examples: loose.iter().take(3).cloned().collect(),
            });
        }
        // Links are judged by where they lead: into the dataset (counted twice, or under another
        // class) or to an outside folder already walked, they are not followed.
        let canonical_root = std::fs::canonicalize(root.path()).map_err(io(root.path()))?;
        let mut visited = std::collections::HashSet::new();
        let mut classes = Vec::new();
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (label, (name, dir)) in class_dirs.into_iter().enumerate() {
            let label = u32::try_from(label).map_err(|_| DataError::Layout {
                root: root.path().to_path_buf(),
                problem: "more than u32::MAX classes".to_string(),
                expected: "root/<class>/<image>",
                found: Vec::new(),
            })?;
            let files = walk(&dir, &canonical_root, &mut visited, &mut warnings)?;
            let before = samples.len();
            samples.extend(files.into_iter().filter(|p| accept(p)).map(|p| (p, label)));
            let name = name.to_string_lossy().into_owned();
            if samples.len() == before {
                empty.push(name.clone());
            }
            classes.push(name);
        }
        if options.forbid_empty_classes && !empty.is_empty() {
            return Err(DataError::Layout {
                root: root.path().to_path_buf(),
                problem: format!(
                    "{} class folders hold no file with an accepted extension ({})",
                    empty.len(),
                    extensions.join(", ")
                ),
                expected: "root/<class>/<image> with at least one image per class",
                found: empty.into_iter().take(SHOW).collect(),
            });
        }
        Ok(Self {
            root,
            classes,
            samples,
            warnings,
            draft: None,
        })
    }

    /// Reads every file's header (not its pixels): a file that is not an image, is truncated
    /// before its size, or claims more pixels than the budget is found before a long run rather
    /// than when its split is first read (the test split, after every epoch).
    ///
    /// # Errors
    ///
    /// The first bad file, as [`DataError::Sample`] with its index.
    pub fn check_headers(&self) -> Result<(), DataError> {
        for (index, (path, _)) in self.samples.iter().enumerate() {
            crate::decode::probe(path).map_err(|e| DataError::Sample {
                index,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }

    /// Class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Class name → label.
    pub fn class_to_idx(&self) -> BTreeMap<String, u32> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i as u32))
            .collect()
    }

    /// Every sample's file and label, in index order (nothing decoded).
    pub fn samples(&self) -> &[(PathBuf, u32)] {
        &self.samples
    }

    /// Every sample's label, in index order (for a stratified split).
    pub fn targets(&self) -> Vec<u32> {
        self.samples.iter().map(|&(_, l)| l).collect()
    }

    /// What the scan skipped.
    pub fn warnings(&self) -> &[ScanWarning] {
        &self.warnings
    }

    /// The resolved root.
    pub fn root(&self) -> &DatasetRoot {
        &self.root
    }

    /// Decodes large JPEGs at a reduced scale where `draft` allows ([`imread_draft`], PIL's
    /// `Image.draft`); other files as before.
    pub fn with_draft(mut self, draft: DraftSize) -> Self {
        self.draft = Some(draft);
        self
    }
}

impl Dataset<ImageFolderItem, DataError> for ImageFolder {
    fn get(&self, index: usize) -> Result<ImageFolderItem, DataError> {
        let (path, label) = self.samples.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.samples.len(),
        })?;
        let image = match &self.draft {
            Some(draft) => imread_draft(path, draft),
            None => imread(path),
        };
        let image = image.map_err(|e| DataError::Sample {
            index,
            source: Box::new(e),
        })?;
        Ok(ImageFolderItem {
            image,
            label: *label,
            path: path.clone(),
        })
    }

    fn len(&self) -> usize {
        self.samples.len()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Entry names of `dir`, sorted (byte order, as Python sorts `str`).
fn sorted_entries(dir: &Path) -> Result<Vec<OsString>, DataError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        names.push(entry.map_err(io(dir))?.file_name());
    }
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names)
}

/// Every file under `dir`, in torchvision's order (`sorted(os.walk(dir, followlinks=True))`,
/// files sorted within each folder), following a symlinked folder only when its canonical target
/// is not already part of the walk: not an ancestor (a loop), not inside the dataset's `root`
/// (its images would count twice, perhaps under the wrong class), not an outside folder another
/// link already led to. What is skipped is said in `warnings`.
fn walk(
    dir: &Path,
    root: &Path,
    visited: &mut std::collections::HashSet<PathBuf>,
    warnings: &mut Vec<ScanWarning>,
) -> Result<Vec<PathBuf>, DataError> {
    let own = std::fs::canonicalize(dir).map_err(io(dir))?;
    // Each pending folder carries its canonical ancestors (itself included).
    let mut stack = vec![(dir.to_path_buf(), vec![own.clone()])];
    let mut files_by_folder: Vec<(PathBuf, Vec<PathBuf>)> = Vec::new();
    while let Some((folder, ancestors)) = stack.pop() {
        let mut files = Vec::new();
        for name in sorted_entries(&folder)? {
            let path = folder.join(&name);
            if path.is_dir() {
                let canonical = std::fs::canonicalize(&path).map_err(io(&path))?;
                // An ancestor of this folder, the class folder's own or the root's: a loop.
                if ancestors.contains(&canonical) || own.starts_with(&canonical) {
                    warnings.push(ScanWarning::SymlinkLoop { path });
                    continue;
                }
                // A link into the dataset leads where the walk goes anyway (under this class or
                // another); a second link to one outside folder would repeat its files.
                let link = path.is_symlink();
                if link && (canonical.starts_with(root) || !visited.insert(canonical.clone())) {
                    warnings.push(ScanWarning::SymlinkDuplicate {
                        path,
                        target: canonical,
                    });
                    continue;
                }
                let mut next = ancestors.clone();
                next.push(canonical);
                stack.push((path, next));
            } else if path.is_symlink() && !path.exists() {
                warnings.push(ScanWarning::BrokenLink { path });
            } else {
                match std::fs::metadata(&path) {
                    Ok(meta) if !meta.is_file() => warnings.push(ScanWarning::NotAFile {
                        kind: crate::paths::file_kind(&meta.file_type()),
                        path,
                    }),
                    // Unreadable metadata: kept, so that reading it names the file and the cause.
                    _ => files.push(path),
                }
            }
        }
        files_by_folder.push((folder, files));
    }
    // torchvision sorts whole folder paths, not a depth-first order: "a/b-2" comes before "a/b/c".
    files_by_folder.sort_by(|a, b| {
        a.0.as_os_str()
            .as_encoded_bytes()
            .cmp(b.0.as_os_str().as_encoded_bytes())
    });
    Ok(files_by_folder.into_iter().flat_map(|(_, f)| f).collect())
}

fn first_names(paths: &[PathBuf]) -> Vec<String> {
    let mut out: Vec<String> = paths
        .iter()
        .take(SHOW)
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
        })
        .collect();
    if paths.len() > SHOW {
        out.push(format!("… and {} more", paths.len() - SHOW));
    }
    if out.is_empty() {
        out.push("(nothing)".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(2, 2, image::Rgb([value, 0, 0]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn classes_are_sorted_and_files_follow_torchvisions_order() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("zebra/b.png"), 1);
        png(&r.join("zebra/a.PNG"), 2); // extension match is case-insensitive
        png(&r.join("ant/sub/x.png"), 3);
        png(&r.join("ant/sub-2/y.png"), 4);
        png(&r.join("ant/top.png"), 5);
        png(&r.join("ant/sub/deeper/z.png"), 6);
        std::fs::write(r.join("ant/notes.txt"), "not an image").unwrap();
        let ds = ImageFolder::new(r).unwrap();
        assert_eq!(ds.classes(), ["ant", "zebra"]);
        assert_eq!(ds.class_to_idx()["zebra"], 1);
        let names: Vec<String> = ds
            .samples()
            .iter()
            .map(|(p, l)| format!("{l}:{}", p.strip_prefix(ds.root().path()).unwrap().display()))
            .collect();
        // Checked with torchvision 0.29.2: ImageFolder(root).samples gives this order.
        // sorted(os.walk("ant", followlinks=True)) visits "ant", "ant/sub", "ant/sub-2",
        // "ant/sub/deeper": whole paths compare, and '-' (0x2D) sorts before '/' (0x2F).
        assert_eq!(
            names,
            [
                "0:ant/top.png",
                "0:ant/sub/x.png",
                "0:ant/sub-2/y.png",
                "0:ant/sub/deeper/z.png",
                "1:zebra/a.PNG",
                "1:zebra/b.png"
            ]
        );
        let item = ds.get(4).unwrap();
        assert_eq!(item.label, 1);
        assert_eq!(&item.image.as_bytes()[..3], &[0, 0, 2], "BGR order");
        assert!(matches!(
            ds.get(6),
            Err(DataError::IndexOutOfRange { index: 6, len: 6 })
        ));
    }

    #[test]
    fn images_directly_under_the_root_are_a_layout_error_listing_them() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("001.png"), 0);
        png(&dir.path().join("002.png"), 0);
        let err = ImageFolder::new(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("2 images directly under the root but no class folders"),
            "{msg}"
        );
        assert!(msg.contains("found: 001.png, 002.png"), "{msg}");
        assert!(msg.contains("root/<class>/<image>"), "{msg}");
    }

    #[test]
    fn empty_classes_are_refused_and_extensions_filter() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("a/1.png"), 0);
        std::fs::create_dir(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/readme.md"), "x").unwrap();
        let msg = ImageFolder::new(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("1 class folders hold no file"), "{msg}");
        assert!(msg.contains("found: b"), "{msg}");
        let root = DatasetRoot::resolve(dir.path()).unwrap();
        let opts = ImageFolderOptions {
            extensions: vec![".MD".into()],
            forbid_empty_classes: false,
        };
        let ds = ImageFolder::with_options(root, &opts).unwrap();
        assert_eq!(ds.len(), 1);
        assert_eq!(ds.samples()[0].1, 1, "only b/readme.md matches .md");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_and_broken_links_are_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("cls/deep/1.png"), 0);
        std::os::unix::fs::symlink(r.join("cls"), r.join("cls/deep/loop")).unwrap();
        std::os::unix::fs::symlink(r.join("nowhere.png"), r.join("cls/dangling.png")).unwrap();
        let ds = ImageFolder::new(r).unwrap();
        assert_eq!(ds.len(), 1);
        assert!(
            ds.warnings()
                .iter()
                .any(|w| matches!(w, ScanWarning::SymlinkLoop { path } if path.ends_with("deep/loop"))),
            "{:?}",
            ds.warnings()
        );
        assert!(
            ds.warnings()
                .iter()
                .any(|w| matches!(w, ScanWarning::BrokenLink { .. }))
        );
    }

    #[cfg(unix)]
    #[test]
    fn links_to_an_ancestor_into_another_class_or_twice_outside_are_not_followed() {
        // Issue 27's tree: `train/cat/up -> ..` made a run count 101 images from 48 and label
        // `train/cat/up/dog/000.png` as a cat. Each link below would add images that are not new.
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (r, outside) = (dir.path().join("train"), dir.path().join("extra"));
        for i in 0..3 {
            png(&r.join(format!("cat/{i}.png")), 0);
            png(&r.join(format!("dog/{i}.png")), 1);
        }
        png(&r.join("dog/sub/9.png"), 1);
        png(&outside.join("e.png"), 2);
        symlink("..", r.join("cat/up")).unwrap(); // the root, an ancestor
        symlink("../dog/sub", r.join("cat/dogs")).unwrap(); // inside another class
        symlink(&outside, r.join("cat/extra")).unwrap(); // outside: followed, once
        symlink(&outside, r.join("cat/extra-again")).unwrap();
        symlink("../cat", r.join("dog/cats")).unwrap();
        let ds = ImageFolder::new(&r).unwrap();
        let names: Vec<(String, u32)> = ds
            .samples()
            .iter()
            .map(|(p, l)| (p.strip_prefix(&r).unwrap().display().to_string(), *l))
            .collect();
        assert_eq!(
            names,
            [
                ("cat/0.png", 0),
                ("cat/1.png", 0),
                ("cat/2.png", 0),
                ("cat/extra/e.png", 0),
                ("dog/0.png", 1),
                ("dog/1.png", 1),
                ("dog/2.png", 1),
                ("dog/sub/9.png", 1),
            ]
            .map(|(p, l)| (p.to_string(), l))
        );
        let said: Vec<String> = ds.warnings().iter().map(ToString::to_string).collect();
        assert!(
            said.iter().any(|w| w.contains("cat/up: symlink loop")),
            "{said:?}"
        );
        for link in ["cat/dogs", "cat/extra-again", "dog/cats"] {
            assert!(
                said.iter()
                    .any(|w| w.contains(link) && w.contains("already part of the dataset")),
                "{link}: {said:?}"
            );
        }
    }

    #[test]
    fn a_corrupt_file_fails_at_get_with_index_and_path() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("a/0.png"), 0);
        std::fs::write(dir.path().join("a/1.png"), b"\x89PNG\r\n\x1a\ntruncated").unwrap();
        let ds = ImageFolder::new(dir.path()).unwrap();
        let err = ds.get(1).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("sample 1: "), "{msg}");
        assert!(msg.contains("a/1.png: cannot decode PNG image"), "{msg}");
    }
}
