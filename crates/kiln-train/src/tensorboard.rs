//! TensorBoard event files, written so that TensorBoard itself reads them: scalars, PNG images
//! and text, one `events.out.tfevents.*` file per writer.
//!
//! The format is TensorFlow's `TFRecord` of `Event` protocol buffers: each record is
//! `u64 length (LE) · u32 masked CRC-32C of the length · data · u32 masked CRC-32C of the data`,
//! the mask being `((crc >> 15) | (crc << 17)) + 0xa282ead8`. The first event names the file
//! version (`brain.Event:2`). Messages are encoded with `prost` from the field numbers of
//! `tensorflow/core/util/event.proto` and `tensorflow/core/framework/summary.proto`; only the
//! fields kiln writes are declared. No maintained Rust crate writes these files
//! (`tensorboard-rs` was last released in 2022 and panics on I/O errors), hence this module.
//!
//! ```
//! # fn main() -> Result<(), kiln_train::TrainError> {
//! # let dir = tempfile::tempdir().unwrap();
//! use kiln_train::tensorboard::{EventWriter, read_events};
//!
//! let mut tb = EventWriter::create(dir.path())?;
//! tb.scalar("train/loss", 1, 0.75)?;
//! tb.flush()?;
//! let events = read_events(&std::fs::read(tb.path()).unwrap()).unwrap();
//! assert_eq!(events.len(), 2); // the file version, then the scalar
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::TrainError;

/// An `Event` (`event.proto`): when, at which step, and what.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// The global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// What happened.
    #[prost(oneof = "What", tags = "3, 5")]
    pub what: Option<What>,
}

/// `Event.what`: the kinds kiln writes.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum What {
    /// The first event of a file: `brain.Event:2`.
    #[prost(string, tag = "3")]
    FileVersion(String),
    /// Values logged at a step.
    #[prost(message, tag = "5")]
    Summary(Summary),
}

/// `Summary` (`summary.proto`): tagged values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `Summary.Value`: one tagged value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The tag TensorBoard groups by (`train/loss`).
    #[prost(string, tag = "1")]
    pub tag: String,
    /// Which plugin shows it (text).
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
    /// The value.
    #[prost(oneof = "Kind", tags = "2, 4, 8")]
    pub kind: Option<Kind>,
}

/// `Summary.Value.value`: the kinds kiln writes.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// A scalar.
    #[prost(float, tag = "2")]
    SimpleValue(f32),
    /// An encoded image.
    #[prost(message, tag = "4")]
    Image(ImageValue),
    /// A tensor (text: a string tensor with the text plugin's metadata).
    #[prost(message, tag = "8")]
    Tensor(TensorProto),
}

/// `Summary.Image`: an encoded (PNG) image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageValue {
    /// Height in pixels.
    #[prost(int32, tag = "1")]
    pub height: i32,
    /// Width in pixels.
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    /// The PNG bytes.
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `SummaryMetadata`: which plugin reads the value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// The plugin.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    /// `text` for text.
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// The plugin's own settings (empty for text).
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `TensorProto`, as far as a string tensor needs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// `DT_STRING` = 7.
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// The shape (a scalar: no dimensions).
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// The strings.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// The dimensions.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
}

/// `TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    /// Its size.
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// TensorFlow's masked CRC-32C of a record's parts (`crc32c.h`: a CRC of data that holds CRCs
/// is masked so that it is not one itself).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One event file, appended to as values come.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` (and its parents) and a new event file in it,
    /// `events.out.tfevents.<unix seconds>.<host>.<pid>.kiln`, starting with the file version.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] naming the folder or the file.
    pub fn create(dir: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::Write {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let now = wall_time();
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            })
            .unwrap_or_else(|| "localhost".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}.kiln",
            now as u64,
            std::process::id()
        ));
        let file = File::create_new(&path).map_err(|e| TrainError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        writer.write_event(&Event {
            wall_time: now,
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs a scalar (TensorBoard's Scalars tab). A non-finite value is written as it is
    /// (TensorBoard shows NaN and ∞).
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] on an I/O failure.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) -> Result<(), TrainError> {
        self.value(
            step,
            Value {
                tag: tag.into(),
                metadata: None,
                kind: Some(Kind::SimpleValue(value as f32)),
            },
        )
    }

    /// Logs a PNG image of `height` × `width` with `channels` (1 grey, 3 RGB, 4 RGBA) (the
    /// Images tab).
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] on an I/O failure.
    pub fn image_png(
        &mut self,
        tag: &str,
        step: i64,
        png: Vec<u8>,
        [height, width, channels]: [usize; 3],
    ) -> Result<(), TrainError> {
        let int = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        self.value(
            step,
            Value {
                tag: tag.into(),
                metadata: None,
                kind: Some(Kind::Image(ImageValue {
                    height: int(height),
                    width: int(width),
                    colorspace: int(channels),
                    encoded_image_string: png,
                })),
            },
        )
    }

    /// Logs Markdown text (the Text tab), as `tf.summary.text` does: a scalar string tensor
    /// with the text plugin's metadata.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] on an I/O failure.
    pub fn text(&mut self, tag: &str, step: i64, text: &str) -> Result<(), TrainError> {
        self.value(
            step,
            Value {
                tag: tag.into(),
                metadata: Some(SummaryMetadata {
                    plugin_data: Some(PluginData {
                        plugin_name: "text".into(),
                        content: Vec::new(),
                    }),
                }),
                kind: Some(Kind::Tensor(TensorProto {
                    dtype: 7,
                    tensor_shape: Some(TensorShapeProto { dim: Vec::new() }),
                    string_val: vec![text.as_bytes().to_vec()],
                })),
            },
        )
    }

    /// Writes what is buffered to the file (after each epoch, so a killed run keeps its curves).
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] on an I/O failure.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        self.file.flush().map_err(|e| self.fail(&e))
    }

    fn value(&mut self, step: i64, value: Value) -> Result<(), TrainError> {
        self.write_event(&Event {
            wall_time: wall_time(),
            step,
            what: Some(What::Summary(Summary { value: vec![value] })),
        })
    }

    fn write_event(&mut self, event: &Event) -> Result<(), TrainError> {
        let data = prost::Message::encode_to_vec(event);
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc32c(&data).to_le_bytes());
        self.file.write_all(&record).map_err(|e| self.fail(&e))
    }

    fn fail(&self, e: &std::io::Error) -> TrainError {
        TrainError::Write {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads the events of an event file's bytes, checking every record's framing and both CRCs.
///
/// # Errors
///
/// Where the file is cut short or a CRC does not match (which record, which CRC), or an event
/// that does not decode.
pub fn read_events(bytes: &[u8]) -> Result<Vec<Event>, String> {
    let mut events = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let n = events.len();
        let part = |from: usize, len: usize| {
            bytes
                .get(from..from.saturating_add(len))
                .ok_or_else(|| format!("record {n} is cut short at byte {from}"))
        };
        let len_bytes = part(at, 8)?;
        let crc = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if crc(part(at + 8, 4)?) != masked_crc32c(len_bytes) {
            return Err(format!("record {n}: the length's CRC does not match"));
        }
        let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().map_err(|_| "length")?))
            .map_err(|e| format!("record {n}: {e}"))?;
        let data = part(at + 12, len)?;
        if crc(part(at + 12 + len, 4)?) != masked_crc32c(data) {
            return Err(format!("record {n}: the data's CRC does not match"));
        }
        events.push(<Event as prost::Message>::decode(data).map_err(|e| format!("record {n}: {e}"))?);
        at += 16 + len;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crc_is_crc32c_masked_as_tensorflow_does() {
        // CRC-32C's check value (the CRC catalogue): crc32c(b"123456789") = 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // Masked: ((c >> 15) | (c << 17)) + 0xa282ead8, as Python computes it:
        // c = 0xE3069283; ((((c >> 15) | (c << 17)) & 0xffffffff) + 0xa282ead8) & 0xffffffff
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn scalars_images_and_text_read_back_and_a_damaged_byte_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut tb = EventWriter::create(dir.path()).unwrap();
        tb.scalar("train/loss", 3, 0.5).unwrap();
        tb.image_png("batch", 0, vec![1, 2, 3], [2, 4, 3]).unwrap();
        tb.text("config", 0, "lr = 0.1").unwrap();
        tb.flush().unwrap();
        let bytes = std::fs::read(tb.path()).unwrap();
        let events = read_events(&bytes).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));
        let value = |i: usize| match &events[i].what {
            Some(What::Summary(s)) => s.value[0].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!((events[1].step, value(1).tag.as_str()), (3, "train/loss"));
        assert_eq!(value(1).kind, Some(Kind::SimpleValue(0.5)));
        match value(2).kind {
            Some(Kind::Image(img)) => {
                assert_eq!((img.height, img.width, img.colorspace), (2, 4, 3));
                assert_eq!(img.encoded_image_string, vec![1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
        let text = value(3);
        assert_eq!(
            text.metadata.and_then(|m| m.plugin_data).map(|p| p.plugin_name),
            Some("text".into())
        );
        match text.kind {
            Some(Kind::Tensor(t)) => assert_eq!((t.dtype, t.string_val), (7, vec![b"lr = 0.1".to_vec()])),
            other => panic!("{other:?}"),
        }
        // Any flipped byte is caught by one of the CRCs; a cut file is named as such.
        for at in [3, 9, 20, bytes.len() - 2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(read_events(&bad).is_err(), "byte {at}");
        }
        let err = read_events(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
    }
}
