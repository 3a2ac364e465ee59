//! COCO-style detection: an images folder plus an `instances_*.json` annotation file.
//!
//! * Boxes are stored as `[x, y, w, h]` in the file and served as **`[x1, y1, x2, y2]`** pixels.
//! * Category ids (COCO's run 1..90 with gaps) are mapped to **contiguous labels** `0..K`, in
//!   increasing id order; [`CocoDetection::categories`] gives the names, [`CocoDetection::category_ids`]
//!   the way back.
//! * `iscrowd` flags are kept per box (crowd boxes are usually ignored by the loss, not dropped).
//! * Images are served in increasing image-id order (torchvision's `CocoDetection` order); images
//!   without annotations are kept, with zero boxes.
//! * Boxes are clipped to their image and boxes left without area are dropped, as torchvision's
//!   COCO reference does; [`CocoDetection::box_fixes`] counts both (evaluation reads the file as it
//!   is, as pycocotools does).
//! * The file is checked when the dataset is built: an annotation pointing at an unknown image or
//!   category, or a box with a negative or non-finite size, is an error naming the annotation id.
//!   A decoded image whose size differs from the file's `width`/`height` fails on `get`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use serde::{Deserialize, Serialize};

use crate::decode::imread;
use crate::image::{Bgr, Hwc, Image};
use crate::{DataError, DatasetRoot};

#[derive(Deserialize)]
struct RawFile {
    images: Vec<RawImage>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct RawImage {
    id: u64,
    file_name: String,
    width: usize,
    height: usize,
}

#[derive(Deserialize)]
struct RawAnnotation {
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u64,
    bbox: Vec<f64>,
    #[serde(default)]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: u8,
}

/// One entry of a COCO file's `categories`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CocoCategory {
    /// COCO's category id (any positive integers, gaps allowed).
    pub id: u64,
    /// The category's name.
    pub name: String,
}

/// One entry of a COCO file's `images`.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoImage {
    /// COCO's image id.
    pub id: u64,
    /// The file, relative to the images folder.
    pub file_name: String,
    /// Width in pixels, as the file says.
    pub width: usize,
    /// Height in pixels, as the file says.
    pub height: usize,
}

/// One entry of a COCO file's `annotations`, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoAnnotation {
    /// The annotation's id (evaluation needs it; training does not).
    pub id: Option<u64>,
    /// The image it belongs to.
    pub image_id: u64,
    /// Its COCO category id.
    pub category_id: u64,
    /// `[x, y, width, height]` in pixels.
    pub bbox: [f64; 4],
    /// The object's area (the segmentation's, in COCO itself): what COCO's small/medium/large
    /// split uses. `None` when the file has no `area`.
    pub area: Option<f64>,
    /// COCO's `iscrowd`.
    pub iscrowd: bool,
}

/// A COCO annotation file (`instances_*.json`), read and checked: every annotation names a
/// listed image and category and has a valid box; image, category and annotation ids are unique.
/// Categories are sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct CocoFile {
    /// The file it was read from.
    pub path: PathBuf,
    /// `images`, in the file's order.
    pub images: Vec<CocoImage>,
    /// `annotations`, in the file's order.
    pub annotations: Vec<CocoAnnotation>,
    /// `categories`, by increasing id.
    pub categories: Vec<CocoCategory>,
}

impl CocoFile {
    /// Reads and checks a COCO annotation file.
    ///
    /// # Errors
    ///
    /// [`DataError::Io`], and [`DataError::Format`] for invalid JSON (with line and column) or
    /// inconsistent annotations (with the annotation's id or position).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref().to_path_buf();
        let bytes = crate::paths::read_file(&path)?;
        let bad = |problem: String| DataError::Format {
            path: path.clone(),
            problem,
        };
        let file: RawFile =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a COCO annotation file: {e}")))?;
        let mut categories = file.categories;
        categories.sort_by_key(|c| c.id);
        if let Some(w) = categories.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(bad(format!("duplicate category id {}", w[0].id)));
        }
        let mut image_ids = std::collections::BTreeSet::new();
        let images: Vec<CocoImage> = file
            .images
            .into_iter()
            .map(|i| CocoImage {
                id: i.id,
                file_name: i.file_name,
                width: i.width,
                height: i.height,
            })
            .collect();
        for img in &images {
            if !image_ids.insert(img.id) {
                return Err(bad(format!("duplicate image id {}", img.id)));
            }
        }
        let mut ann_ids = std::collections::BTreeSet::new();
        let mut annotations = Vec::with_capacity(file.annotations.len());
        for (n, ann) in file.annotations.into_iter().enumerate() {
            let name = ann
                .id
                .map_or_else(|| format!("annotation #{n}"), |id| format!("annotation id {id}"));
            if let Some(id) = ann.id
                && !ann_ids.insert(id)
            {
                return Err(bad(format!("duplicate annotation id {id}")));
            }
            if !image_ids.contains(&ann.image_id) {
                return Err(bad(format!(
                    "{name} refers to image id {}, which is not in \"images\"",
                    ann.image_id
                )));
            }
            if categories
                .binary_search_by_key(&ann.category_id, |c| c.id)
                .is_err()
            {
                return Err(bad(format!(
                    "{name} has category id {}, which is not in \"categories\"",
                    ann.category_id
                )));
            }
            let &[x, y, w, h] = ann.bbox.as_slice() else {
                return Err(bad(format!(
                    "{name}: bbox has {} numbers, expected 4 ([x, y, width, height])",
                    ann.bbox.len()
                )));
            };
            if ![x, y, w, h].iter().all(|v| v.is_finite()) || w < 0.0 || h < 0.0 {
                return Err(bad(format!(
                    "{name}: bbox [{x}, {y}, {w}, {h}] needs finite values and a non-negative width and height"
                )));
            }
            if let Some(area) = ann.area
                && !area.is_finite()
            {
                return Err(bad(format!("{name}: area {area} is not finite")));
            }
            annotations.push(CocoAnnotation {
                id: ann.id,
                image_id: ann.image_id,
                category_id: ann.category_id,
                bbox: [x, y, w, h],
                area: ann.area,
                iscrowd: ann.iscrowd != 0,
            });
        }
        Ok(Self {
            path,
            images,
            annotations,
            categories,
        })
    }
}

/// One detection of a COCO results file — the list `pycocotools.COCO.loadRes` takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    /// The image it was found in.
    pub image_id: u64,
    /// Its COCO category id.
    pub category_id: u64,
    /// `[x, y, width, height]` in the original image's pixels.
    pub bbox: [f64; 4],
    /// The detector's confidence.
    pub score: f64,
}

/// Reads a COCO results file (a JSON list of `{image_id, category_id, bbox, score}`; other keys
/// are ignored) for the images of `gt`.
///
/// # Errors
///
/// [`DataError::Io`]; [`DataError::Format`] for invalid JSON, a non-finite score or box, or an
/// image id that `gt` does not list (pycocotools' "Results do not correspond to current coco set").
pub fn read_coco_results(path: impl AsRef<Path>, gt: &CocoFile) -> Result<Vec<CocoResult>, DataError> {
    let path = path.as_ref();
    let bytes = crate::paths::read_file(path)?;
    let bad = |problem: String| DataError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let results: Vec<CocoResult> = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "not a COCO results file (a list of {{image_id, category_id, bbox, score}}): {e}"
        ))
    })?;
    let images: std::collections::BTreeSet<u64> = gt.images.iter().map(|i| i.id).collect();
    for (n, r) in results.iter().enumerate() {
        if !images.contains(&r.image_id) {
            return Err(bad(format!(
                "detection #{n} is for image id {}, which {} does not list",
                r.image_id,
                gt.path.display()
            )));
        }
        if !r.score.is_finite() || !r.bbox.iter().all(|v| v.is_finite()) {
            return Err(bad(format!(
                "detection #{n} has a non-finite score or box ({}, {:?})",
                r.score, r.bbox
            )));
        }
    }
    Ok(results)
}

/// One detection sample.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionItem {
    /// HWC, BGR, u8, as `cv2.imread` reads the file.
    pub image: Image<Hwc, Bgr>,
    /// Boxes as `[x1, y1, x2, y2]` in pixels.
    pub boxes: Vec<[f32; 4]>,
    /// Contiguous class label per box.
    pub labels: Vec<u32>,
    /// COCO's `iscrowd` per box.
    pub crowd: Vec<bool>,
    /// COCO's image id.
    pub image_id: u64,
    /// The image file.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
struct Record {
    image_id: u64,
    path: PathBuf,
    height: usize,
    width: usize,
    boxes: Vec<[f32; 4]>,
    labels: Vec<u32>,
    crowd: Vec<bool>,
}

/// What [`CocoDetection`] did to boxes that do not fit their image, as torchvision's COCO reference
/// (`ConvertCocoPolysToMask`) does: clip to the image, then drop boxes with no width or height.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BoxFixes {
    /// Boxes reaching outside their image, clipped to it.
    pub clipped: usize,
    /// Boxes dropped for having no area (zero width or height, after clipping).
    pub dropped: usize,
    /// The first few dropped annotations, named by id (or position).
    pub dropped_examples: Vec<String>,
}

/// A COCO-format detection dataset; images are decoded on `get`.
#[derive(Debug, Clone)]
pub struct CocoDetection {
    annotations: PathBuf,
    records: Vec<Record>,
    categories: Vec<String>,
    category_ids: Vec<u64>,
    fixes: BoxFixes,
}

impl CocoDetection {
    /// Reads `annotations` (COCO JSON) for the images under `images_dir`.
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`], [`DataError::Io`], and [`DataError::Format`] for invalid JSON
    /// (with line and column) or inconsistent annotations (with the annotation id).
    pub fn new(images_dir: impl AsRef<Path>, annotations: impl AsRef<Path>) -> Result<Self, DataError> {
        Self::from_file(images_dir, &CocoFile::read(annotations)?)
    }

    /// The dataset of an annotation file already read (for a caller that also evaluates on it).
    ///
    /// # Errors
    ///
    /// [`DataError::RootNotFound`] when `images_dir` does not exist; [`DataError::Format`] naming
    /// the first listed image without a file.
    pub fn from_file(images_dir: impl AsRef<Path>, file: &CocoFile) -> Result<Self, DataError> {
        let root = DatasetRoot::resolve(images_dir)?;
        let category_ids: Vec<u64> = file.categories.iter().map(|c| c.id).collect();
        let categories = file.categories.iter().map(|c| c.name.clone()).collect();
        // Every listed image must exist before a run starts, not when its batch comes up.
        let missing: Vec<&CocoImage> = file
            .images
            .iter()
            .filter(|i| !root.join(&i.file_name).is_file())
            .collect();
        if let Some(first) = missing.first() {
            return Err(DataError::Format {
                path: file.path.clone(),
                problem: format!(
                    "{} of its {} images have no file: the first is image id {} ({}, not found)",
                    missing.len(),
                    file.images.len(),
                    first.id,
                    root.join(&first.file_name).display()
                ),
            });
        }
        let mut by_id: BTreeMap<u64, Record> = BTreeMap::new();
        for img in &file.images {
            let record = Record {
                image_id: img.id,
                path: root.join(&img.file_name),
                height: img.height,
                width: img.width,
                boxes: Vec::new(),
                labels: Vec::new(),
                crowd: Vec::new(),
            };
            by_id.insert(img.id, record);
        }
        let mut fixes = BoxFixes::default();
        for (n, ann) in file.annotations.iter().enumerate() {
            // CocoFile::read checked that the image and the category exist.
            let (Some(record), Ok(label)) = (
                by_id.get_mut(&ann.image_id),
                category_ids.binary_search(&ann.category_id),
            ) else {
                continue;
            };
            let [x, y, w, h] = ann.bbox;
            let (iw, ih) = (record.width as f64, record.height as f64);
            let clipped = [
                x.clamp(0.0, iw),
                y.clamp(0.0, ih),
                (x + w).clamp(0.0, iw),
                (y + h).clamp(0.0, ih),
            ];
            if clipped[2] <= clipped[0] || clipped[3] <= clipped[1] {
                fixes.dropped += 1;
                if fixes.dropped_examples.len() < 5 {
                    fixes.dropped_examples.push(
                        ann.id
                            .map_or_else(|| format!("annotation #{n}"), |id| format!("annotation id {id}")),
                    );
                }
                continue;
            }
            if clipped != [x, y, x + w, y + h] {
                fixes.clipped += 1;
            }
            record.boxes.push(clipped.map(|v| v as f32));
            record.labels.push(label as u32);
            record.crowd.push(ann.iscrowd);
        }
        Ok(Self {
            annotations: file.path.clone(),
            records: by_id.into_values().collect(),
            categories,
            category_ids,
            fixes,
        })
    }

    /// Category names, by contiguous label.
    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    /// COCO category id of each contiguous label.
    pub fn category_ids(&self) -> &[u64] {
        &self.category_ids
    }

    /// Boxes clipped to their image or dropped for having no area when the file was read.
    pub fn box_fixes(&self) -> &BoxFixes {
        &self.fixes
    }

    /// COCO's image id of each index (increasing).
    pub fn image_ids(&self) -> Vec<u64> {
        self.records.iter().map(|r| r.image_id).collect()
    }

    /// Number of boxes per image, in index order (nothing decoded).
    pub fn box_counts(&self) -> Vec<usize> {
        self.records.iter().map(|r| r.boxes.len()).collect()
    }
}

impl Dataset<DetectionItem, DataError> for CocoDetection {
    fn get(&self, index: usize) -> Result<DetectionItem, DataError> {
        let r = self.records.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.records.len(),
        })?;
        let wrap = |e| DataError::Sample {
            index,
            source: Box::new(e),
        };
        let image = imread(&r.path).map_err(wrap)?;
        if [image.height(), image.width()] != [r.height, r.width] {
            return Err(wrap(DataError::Format {
                path: r.path.clone(),
                problem: format!(
                    "decoded {}x{} (HxW) but {} says {}x{} for image id {}; boxes would not line up",
                    image.height(),
                    image.width(),
                    self.annotations.display(),
                    r.height,
                    r.width,
                    r.image_id
                ),
            }));
        }
        Ok(DetectionItem {
            image,
            boxes: r.boxes.clone(),
            labels: r.labels.clone(),
            crowd: r.crowd.clone(),
            image_id: r.image_id,
            path: r.path.clone(),
        })
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(json: &str) -> (tempfile::TempDir, Result<CocoDetection, DataError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("images")).unwrap();
        for (name, w, h) in [("a.png", 6, 4), ("b.png", 5, 5)] {
            image::RgbImage::new(w, h)
                .save(dir.path().join("images").join(name))
                .unwrap();
        }
        std::fs::write(dir.path().join("ann.json"), json).unwrap();
        let ds = CocoDetection::new(dir.path().join("images"), dir.path().join("ann.json"));
        (dir, ds)
    }

    const GOOD: &str = r#"{
      "images": [{"id": 9, "file_name": "b.png", "width": 5, "height": 5},
                 {"id": 3, "file_name": "a.png", "width": 6, "height": 4}],
      "annotations": [
        {"id": 1, "image_id": 3, "category_id": 90, "bbox": [1, 2, 3, 1.5], "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 18, "bbox": [0, 0, 6, 4], "iscrowd": 1}],
      "categories": [{"id": 90, "name": "toothbrush"}, {"id": 18, "name": "dog"}]
    }"#;

    #[test]
    fn boxes_become_xyxy_and_categories_contiguous() {
        let (_dir, ds) = setup(GOOD);
        let ds = ds.unwrap();
        assert_eq!(ds.categories(), ["dog", "toothbrush"]);
        assert_eq!(ds.category_ids(), [18, 90]);
        assert_eq!(ds.len(), 2);
        let a = ds.get(0).unwrap(); // image id 3 comes first
        assert_eq!(a.image_id, 3);
        assert_eq!(a.image.hwc_shape(), [4, 6, 3]);
        assert_eq!(a.boxes, vec![[1.0, 2.0, 4.0, 3.5], [0.0, 0.0, 6.0, 4.0]]);
        assert_eq!(a.labels, vec![1, 0]);
        assert_eq!(a.crowd, vec![false, true]);
        let b = ds.get(1).unwrap();
        assert!(
            b.boxes.is_empty() && b.labels.is_empty(),
            "an image without boxes is legal"
        );
        assert_eq!(ds.box_counts(), vec![2, 0]);
    }

    #[test]
    fn inconsistent_annotations_name_the_annotation() {
        let cases = [
            (
                GOOD.replace(
                    "\"image_id\": 3, \"category_id\": 90",
                    "\"image_id\": 4, \"category_id\": 90",
                ),
                "annotation id 1 refers to image id 4",
            ),
            (
                GOOD.replace("\"category_id\": 18,", "\"category_id\": 17,"),
                "annotation id 2 has category id 17",
            ),
            (
                GOOD.replace("[1, 2, 3, 1.5]", "[1, 2, -3, 1.5]"),
                "annotation id 1: bbox [1, 2, -3, 1.5]",
            ),
            (
                GOOD.replace("[1, 2, 3, 1.5]", "[1, 2, 3]"),
                "annotation id 1: bbox has 3 numbers",
            ),
            (
                GOOD.replace("\"images\"", "\"imgs\""),
                "not a COCO annotation file: missing field `images`",
            ),
            ("{\"images\": [".to_string(), "line 1 column 12"),
        ];
        for (json, expected) in cases {
            let (_dir, ds) = setup(&json);
            let msg = ds.unwrap_err().to_string();
            assert!(msg.contains(expected), "expected {expected:?} in {msg}");
            assert!(msg.contains("ann.json"), "{msg}");
        }
    }

    /// Malformed JSON, as a truncated download or a hand edit leaves it: an error naming the file
    /// and where serde_json stopped (line and column), never a panic.
    #[test]
    fn malformed_coco_json_names_the_file_line_and_column() {
        let cases = [
            ("", "EOF while parsing a value at line 1 column 0"),
            ("<html>404 Not Found</html>", "expected value at line 1 column 1"),
            (&GOOD[..GOOD.len() / 2], "EOF while parsing"),
            ("\"a string\"", "invalid type: string \"a string\""),
            (
                &GOOD.replace("\"id\": 9", "\"id\": \"nine\""),
                "invalid type: string \"nine\", expected u64 at line 2",
            ),
            (
                &GOOD.replace("\"width\": 5", "\"width\": -5"),
                "invalid value: integer `-5`, expected",
            ),
            (&GOOD.replace("}]\n    }", "}],\n    }"), "trailing comma at line"),
        ];
        for (json, expected) in cases {
            let (_dir, ds) = setup(json);
            let msg = ds.unwrap_err().to_string();
            assert!(
                msg.contains("ann.json: not a COCO annotation file") && msg.contains(expected),
                "expected {expected:?} in {msg}"
            );
        }
    }

    /// torchvision's `ConvertCocoPolysToMask`: `boxes[:, 0::2].clamp_(0, w)`, `boxes[:, 1::2].clamp_(0,
    /// h)`, then `keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])`.
    #[test]
    fn boxes_outside_the_image_are_clipped_and_empty_ones_dropped() {
        let json = GOOD
            .replace("[1, 2, 3, 1.5]", "[-2, 1, 10, 2]")
            .replace("[0, 0, 6, 4]", "[7, 1, 2, 2]")
            .replace(
                "\"iscrowd\": 1}]",
                "\"iscrowd\": 1}, {\"id\": 3, \"image_id\": 3, \"category_id\": 18, \"bbox\": [2, 2, 0, 1]}]",
            );
        let (_dir, ds) = setup(&json);
        let ds = ds.unwrap();
        let a = ds.get(0).unwrap(); // 6x4
        assert_eq!(a.boxes, vec![[0.0, 1.0, 6.0, 3.0]]);
        assert_eq!(
            ds.box_fixes(),
            &BoxFixes {
                clipped: 1,
                dropped: 2,
                dropped_examples: vec!["annotation id 2".into(), "annotation id 3".into()],
            }
        );
    }

    #[test]
    fn an_image_without_a_file_is_named_when_the_dataset_is_built() {
        let (dir, _) = setup(GOOD);
        std::fs::remove_file(dir.path().join("images/b.png")).unwrap();
        let msg = CocoDetection::new(dir.path().join("images"), dir.path().join("ann.json"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("1 of its 2 images have no file: the first is image id 9"),
            "{msg}"
        );
        assert!(
            msg.contains("b.png, not found") && msg.contains("ann.json"),
            "{msg}"
        );
    }

    #[test]
    fn a_size_mismatch_with_the_file_fails_on_get() {
        let (_dir, ds) = setup(&GOOD.replace("\"width\": 6", "\"width\": 7"));
        let msg = ds.unwrap().get(0).unwrap_err().to_string();
        assert!(msg.starts_with("sample 0: "), "{msg}");
        assert!(msg.contains("decoded 4x6 (HxW) but"), "{msg}");
        assert!(msg.contains("says 4x7 for image id 3"), "{msg}");
    }
}
