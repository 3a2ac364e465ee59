//! Image decoding that gives the pixels OpenCV's `cv2.imread` gives.
//!
//! Most datasets, pretrained Caffe-era weights and detection code bases were built on OpenCV, so
//! "the same image" means the same bytes as `cv2.imread(path, cv2.IMREAD_COLOR)`: **HWC, BGR, u8**.
//! [`imread`] reproduces OpenCV's rules (checked against fixtures written by OpenCV 5.0.0, see
//! `scripts/make_opencv_fixtures.py`):
//!
//! * grey files are expanded to three equal channels; alpha is dropped (not composited);
//! * 16-bit PNGs keep their high byte (`v >> 8`, libpng's `png_set_strip_16`), other 16-bit files
//!   are rounded (`round(v / 257)`, OpenCV's TIFF reader);
//! * EXIF orientation is applied (JPEG, PNG `eXIf`, WebP);
//! * PNG, BMP, TIFF, PNM and lossless WebP are bit-exact; JPEG goes through zune-jpeg instead of
//!   libjpeg-turbo, so pixels differ by the decoders' rounding (measured in `docs/data.md`).
//!
//! [`imread_gray`] is `cv2.IMREAD_GRAYSCALE`: JPEGs give their luma plane, colour PNGs libpng's
//! truncating `0.299/0.587/0.114` mix, other colour files OpenCV's fixed-point `cvtColor`.
//!
//! [`imread_draft`] is PIL's `Image.draft`: a JPEG much larger than the pipeline needs is decoded
//! at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled IDCT), never at less than
//! the size a [`DraftSize`] asks for; a 6000 × 4000 photo headed for a 256-pixel resize is
//! decoded as 750 × 500, 64 times fewer pixels to hold and to transform.
//!
//! ```
//! # fn main() -> Result<(), kiln_data::DataError> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("cat.png");
//! # // A 1x2 RGB PNG: one red pixel, one blue pixel.
//! # image::RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]).unwrap().save(&path).unwrap();
//! use kiln_data::decode::imread;
//!
//! let img = imread(&path)?; // Image<Hwc, Bgr>
//! assert_eq!(img.hwc_shape(), [1, 2, 3]);
//! assert_eq!(img.as_bytes(), &[0, 0, 255, 255, 0, 0]); // red is (B, G, R) = (0, 0, 255)
//! # Ok(()) }
//! ```

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::DataError;
use crate::image::{Bgr, Gray, Hwc, Image};

/// How to read an image: OpenCV's `IMREAD_COLOR` or `IMREAD_GRAYSCALE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Three channels, BGR (`cv2.IMREAD_COLOR`).
    #[default]
    Color,
    /// One channel (`cv2.IMREAD_GRAYSCALE`).
    Grayscale,
}

/// Reads `path` as OpenCV's `cv2.imread(path, cv2.IMREAD_COLOR)` does: HWC, BGR, u8.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read, [`DataError::UnknownImageFormat`],
/// [`DataError::Decode`] for truncated or corrupt files and [`DataError::UnsupportedPixels`].
pub fn imread(path: &Path) -> Result<Image<Hwc, Bgr>, DataError> {
    decode_bgr(&read(path)?, path)
}

/// Reads `path` as `cv2.imread(path, cv2.IMREAD_GRAYSCALE)` does: HWC with one channel, u8.
///
/// # Errors
///
/// As [`imread`].
pub fn imread_gray(path: &Path) -> Result<Image<Hwc, Gray>, DataError> {
    decode_gray(&read(path)?, path)
}

/// Decodes in-memory file bytes as [`imread`] does; `path` is only used in errors.
///
/// # Errors
///
/// As [`imread`], less the I/O error.
pub fn decode_bgr(bytes: &[u8], path: &Path) -> Result<Image<Hwc, Bgr>, DataError> {
    let raw = decode(bytes, path, ReadMode::Color)?;
    Image::new(raw.height, raw.width, raw.data)
}

/// Decodes in-memory file bytes as [`imread_gray`] does; `path` is only used in errors.
///
/// # Errors
///
/// As [`imread`], less the I/O error.
pub fn decode_gray(bytes: &[u8], path: &Path) -> Result<Image<Hwc, Gray>, DataError> {
    let raw = decode(bytes, path, ReadMode::Grayscale)?;
    Image::new(raw.height, raw.width, raw.data)
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    crate::paths::read_file(path)
}

/// What a pipeline needs from an image of a given size: called with the image's `[height, width]`
/// (EXIF orientation applied), it returns the smallest `[height, width]` the stages after decoding
/// need, or `None` when they need the full image. For [`imread_draft`].
#[derive(Clone)]
pub struct DraftSize(std::sync::Arc<dyn Fn([usize; 2]) -> Option<[usize; 2]> + Send + Sync>);

impl DraftSize {
    /// Wraps the rule.
    pub fn new(need: impl Fn([usize; 2]) -> Option<[usize; 2]> + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(need))
    }

    /// The rule applied to an image of `[height, width]`.
    pub fn need(&self, hw: [usize; 2]) -> Option<[usize; 2]> {
        (self.0)(hw)
    }
}

impl std::fmt::Debug for DraftSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DraftSize(..)")
    }
}

/// The JPEG reduction PIL's `draft` picks for an image of `hw` when `need` is asked for: the
/// largest of 8, 4, 2 with `s · need ≤ hw` in both dimensions (PIL: `min(w // need_w, h // need_h)`);
/// 1 when none fits. The decoded size, `ceil(hw / s)`, is then at least `need`.
pub fn draft_scale(hw: [usize; 2], need: [usize; 2]) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&s| hw[0] / s >= need[0].max(1) && hw[1] / s >= need[1].max(1))
        .unwrap_or(1)
}

/// Reads `path` as [`imread`] does, except that a colour or grey JPEG that is at least twice the
/// size `draft` asks for is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain ([`draft_scale`]),
/// as PIL's `Image.draft` does. Other formats, JPEGs that cannot be reduced and CMYK JPEGs are read
/// as [`imread`] reads them. The pixel budget applies to the file's full size.
///
/// A reduced decode is not `cv2.imread` followed by a resize: each 8×8 block is transformed at
/// 4×4, 2×2 or 1×1, as libjpeg does for PIL (measured against PIL in `docs/data.md`).
///
/// # Errors
///
/// As [`imread`].
pub fn imread_draft(path: &Path, draft: &DraftSize) -> Result<Image<Hwc, Bgr>, DataError> {
    decode_bgr_draft(&read(path)?, path, draft)
}

/// Decodes in-memory file bytes as [`imread_draft`] does; `path` is only used in errors.
///
/// # Errors
///
/// As [`imread`], less the I/O error.
pub fn decode_bgr_draft(bytes: &[u8], path: &Path, draft: &DraftSize) -> Result<Image<Hwc, Bgr>, DataError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        match decode_jpeg_reduced(bytes, path, draft) {
            Ok(Some(raw)) => return Image::new(raw.height, raw.width, raw.data),
            // Over the pixel budget: refused, not decoded in full.
            Err(e @ DataError::TooManyPixels { .. }) => return Err(e),
            // No reduction fits, or a file the reduced decoder cannot read (arithmetic coding,
            // damage): the full decoder decides, with its own error for a broken file.
            Ok(None) | Err(_) => {}
        }
    }
    decode_bgr(bytes, path)
}

/// A JPEG decoded at a reduced scale, or `None` when it should be decoded in full (no reduction
/// fits, or a pixel format the reduced path does not take); an error where jpeg-decoder fails.
fn decode_jpeg_reduced(bytes: &[u8], path: &Path, draft: &DraftSize) -> Result<Option<Raw>, DataError> {
    use jpeg_decoder::PixelFormat;
    let fail = |e: jpeg_decoder::Error| DataError::Decode {
        path: path.to_path_buf(),
        format: "JPEG",
        reason: e.to_string(),
    };
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().map_err(fail)?;
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    check_size(w as u64, h as u64, path)?;
    if !matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8) {
        return Ok(None);
    }
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    // The rule sees the image as it will be shown (orientations 5–8 swap height and width).
    let oriented = if orientation.to_exif() >= 5 {
        [w, h]
    } else {
        [h, w]
    };
    let Some(need) = draft.need(oriented) else {
        return Ok(None);
    };
    let need = if orientation.to_exif() >= 5 {
        [need[1], need[0]]
    } else {
        need
    };
    let s = draft_scale([h, w], need);
    if s == 1 {
        return Ok(None);
    }
    let (sw, sh) = decoder
        .scale(w.div_ceil(s) as u16, h.div_ceil(s) as u16)
        .map_err(fail)?;
    let (width, height) = (usize::from(sw), usize::from(sh));
    let data = decoder.decode().map_err(fail)?;
    let data = match info.pixel_format {
        PixelFormat::L8 => data.into_iter().flat_map(|v| [v, v, v]).collect(),
        _ => {
            let mut data = data;
            data.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
            data
        }
    };
    if data.len() != height * width * 3 {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            format: "JPEG",
            reason: format!(
                "reduced decoder returned {} bytes for {height}x{width}x3",
                data.len()
            ),
        });
    }
    Ok(Some(orient(
        Raw {
            height,
            width,
            channels: 3,
            data,
        },
        orientation,
    )))
}

/// Decoded pixels: `channels` is 3 (BGR) for [`ReadMode::Color`], 1 for grey.
struct Raw {
    height: usize,
    width: usize,
    channels: usize,
    data: Vec<u8>,
}

/// The default pixel budget per image: PIL's decompression-bomb limit (`Image.open` raises
/// `DecompressionBombError` above `2 * Image.MAX_IMAGE_PIXELS` = 178,956,970 pixels, about
/// 13,377 × 13,377). A 389 KB PNG can claim 20000 × 20000 pixels (1.2 GB decoded as BGR).
pub const DEFAULT_MAX_PIXELS: u64 = 178_956_970;

static MAX_PIXELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(DEFAULT_MAX_PIXELS);

/// Sets the pixel budget per image for every decode in this process (`data.max_image_pixels`
/// in a run file): a file whose header claims more pixels is refused before anything is
/// allocated ([`DataError::TooManyPixels`]). For datasets of very large images on purpose.
pub fn set_max_pixels(pixels: u64) {
    MAX_PIXELS.store(pixels, std::sync::atomic::Ordering::Relaxed);
}

/// The pixel budget per image now in force ([`DEFAULT_MAX_PIXELS`] unless
/// [`set_max_pixels`] changed it).
pub fn max_pixels() -> u64 {
    MAX_PIXELS.load(std::sync::atomic::Ordering::Relaxed)
}

fn check_size(width: u64, height: u64, path: &Path) -> Result<(), DataError> {
    let limit = max_pixels();
    if width.saturating_mul(height) > limit {
        return Err(DataError::TooManyPixels {
            path: path.to_path_buf(),
            width,
            height,
            limit,
        });
    }
    Ok(())
}

/// Reads only `path`'s header: its `[height, width]`, with the checks a decode makes first (a
/// regular file, a known format, the pixel budget). For finding bad files before a long run.
///
/// # Errors
///
/// As [`imread`], for what a header shows.
pub fn probe(path: &Path) -> Result<[usize; 2], DataError> {
    use std::io::{BufReader, Read, Seek};
    let io = |source: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        // The same refusal as a read (a FIFO would block).
        return crate::paths::read_file(path).map(|_| [0, 0]);
    }
    let mut file = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut magic = Vec::with_capacity(16);
    (&mut file).take(16).read_to_end(&mut magic).map_err(io)?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    if magic.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // JPEG goes through zune-jpeg, as decoding does (the `image` crate is built without it).
        // Its headers sit in the first 256 KiB in practice (an EXIF thumbnail included); the
        // whole file is read only when they do not.
        let dims = |bytes: &[u8]| {
            let mut d = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(bytes));
            d.decode_headers().map_err(|e| format!("{e:?}"))?;
            d.dimensions().ok_or_else(|| "no frame header".to_string())
        };
        let mut head = Vec::new();
        (&mut file).take(256 * 1024).read_to_end(&mut head).map_err(io)?;
        let found = match dims(&head) {
            Err(_) if (head.len() as u64) < meta.len() => dims(&read(path)?),
            found => found,
        };
        let (w, h) = found.map_err(|reason| DataError::Decode {
            path: path.to_path_buf(),
            format: "JPEG",
            reason,
        })?;
        check_size(w as u64, h as u64, path)?;
        return Ok([h, w]);
    }
    let format = image::guess_format(&magic).map_err(|_| DataError::UnknownImageFormat {
        path: path.to_path_buf(),
        magic: magic[..magic.len().min(8)].to_vec(),
    })?;
    let (w, h) = ImageReader::with_format(file, format)
        .into_dimensions()
        .map_err(|e| DataError::Decode {
            path: path.to_path_buf(),
            format: format_name(format),
            reason: e.to_string(),
        })?;
    check_size(u64::from(w), u64::from(h), path)?;
    Ok([h as usize, w as usize])
}

fn decode(bytes: &[u8], path: &Path, mode: ReadMode) -> Result<Raw, DataError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return decode_jpeg(bytes, path, mode);
    }
    let format = image::guess_format(bytes).map_err(|_| DataError::UnknownImageFormat {
        path: path.to_path_buf(),
        magic: bytes[..bytes.len().min(8)].to_vec(),
    })?;
    let name = format_name(format);
    let fail = |e: image::ImageError| DataError::Decode {
        path: path.to_path_buf(),
        format: name,
        reason: e.to_string(),
    };
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(fail)?;
    let (w, h) = decoder.dimensions();
    check_size(u64::from(w), u64::from(h), path)?;
    // OpenCV applies EXIF orientation for JPEG, PNG and WebP; its TIFF reader fails on an
    // orientation tag (OpenCV 5.0.0), so the TIFF tag is left alone here.
    let orientation = match format {
        ImageFormat::Png | ImageFormat::WebP => decoder.orientation().map_err(fail)?,
        _ => Orientation::NoTransforms,
    };
    let img = DynamicImage::from_decoder(decoder).map_err(fail)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let png = format == ImageFormat::Png;
    let depth = if png { strip16 } else { round16 };
    let data = match mode {
        ReadMode::Color => to_bgr(img, path, depth)?,
        ReadMode::Grayscale => to_gray(img, path, png)?,
    };
    let channels = if mode == ReadMode::Color { 3 } else { 1 };
    Ok(orient(
        Raw {
            height,
            width,
            channels,
            data,
        },
        orientation,
    ))
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Pnm => "PNM",
        ImageFormat::WebP => "WebP",
        ImageFormat::Jpeg => "JPEG",
        _ => "image",
    }
}

fn decode_jpeg(bytes: &[u8], path: &Path, mode: ReadMode) -> Result<Raw, DataError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;

    let fail = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        format: "JPEG",
        reason,
    };
    // Colour is decoded as RGB and swapped: zune-jpeg's YCbCr → RGB conversion has an AVX2 path,
    // its → BGR conversion is scalar only (measured: the swap is cheaper).
    let (out, channels) = match mode {
        ReadMode::Color => (ColorSpace::RGB, 3),
        ReadMode::Grayscale => (ColorSpace::Luma, 1),
    };
    let options = DecoderOptions::default()
        .set_max_width(1 << 16)
        .set_max_height(1 << 16)
        .jpeg_set_out_colorspace(out);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(|e| fail(format!("{e:?}")))?;
    if let Some((w, h)) = decoder.dimensions() {
        check_size(w as u64, h as u64, path)?;
    }
    // A greyscale JPEG read in colour: decode the luma plane and repeat it (zune-jpeg has no
    // luma → BGR mapping; libjpeg's is the same repetition).
    let grey_source = decoder.input_colorspace() == Some(ColorSpace::Luma);
    let expand = grey_source && channels == 3;
    if expand {
        decoder.set_options(options.jpeg_set_out_colorspace(ColorSpace::Luma));
    }
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    let info = decoder
        .info()
        .ok_or_else(|| fail("no frame header".to_string()))?;
    let data = decoder.decode().map_err(|e| fail(format!("{e:?}")))?;
    let (height, width) = (usize::from(info.height), usize::from(info.width));
    let data = if expand {
        data.into_iter().flat_map(|v| [v, v, v]).collect()
    } else if channels == 3 {
        let mut data = data;
        data.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
        data
    } else {
        data
    };
    if data.len() != height * width * channels {
        return Err(fail(format!(
            "decoder returned {} bytes for {height}x{width}x{channels}",
            data.len()
        )));
    }
    Ok(orient(
        Raw {
            height,
            width,
            channels,
            data,
        },
        orientation,
    ))
}

/// 16-bit samples keep their high byte, as libpng's `png_set_strip_16` (and OpenCV) do.
fn strip16(v: u16) -> u8 {
    (v >> 8) as u8
}

/// 16-bit samples rounded to the nearest 8-bit value, as OpenCV's TIFF reader does.
fn round16(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

/// Any decoded image as interleaved BGR u8; `depth` maps 16-bit samples to 8 bits.
fn to_bgr(img: DynamicImage, path: &Path, depth: fn(u16) -> u8) -> Result<Vec<u8>, DataError> {
    fn grey3(grey: impl Iterator<Item = u8>) -> Vec<u8> {
        grey.flat_map(|v| [v, v, v]).collect()
    }
    fn rgb_to_bgr<T: Copy>(px: &[T], n: usize, f: impl Fn(T) -> u8) -> Vec<u8> {
        px.chunks_exact(n)
            .flat_map(|p| [f(p[2]), f(p[1]), f(p[0])])
            .collect()
    }
    Ok(match img {
        DynamicImage::ImageLuma8(b) => grey3(b.into_raw().into_iter()),
        DynamicImage::ImageLumaA8(b) => grey3(b.into_raw().chunks_exact(2).map(|p| p[0])),
        DynamicImage::ImageLuma16(b) => grey3(b.into_raw().into_iter().map(depth)),
        DynamicImage::ImageLumaA16(b) => grey3(b.into_raw().chunks_exact(2).map(|p| depth(p[0]))),
        DynamicImage::ImageRgb8(b) => rgb_to_bgr(&b.into_raw(), 3, |v| v),
        DynamicImage::ImageRgba8(b) => rgb_to_bgr(&b.into_raw(), 4, |v| v),
        DynamicImage::ImageRgb16(b) => rgb_to_bgr(&b.into_raw(), 3, depth),
        DynamicImage::ImageRgba16(b) => rgb_to_bgr(&b.into_raw(), 4, depth),
        other => return Err(unsupported(&other, path)),
    })
}

fn unsupported(img: &DynamicImage, path: &Path) -> DataError {
    DataError::UnsupportedPixels {
        path: path.to_path_buf(),
        what: format!("{:?}", img.color()),
    }
}

/// OpenCV's `cvtColor(BGR2GRAY)` on u8: fixed point with 14 fractional bits, rounded.
fn gray_cvtcolor(r: u8, g: u8, b: u8) -> u8 {
    // 0.299, 0.587, 0.114 × 2^14, as in OpenCV's imgcodecs (icvCvt_BGR2Gray_8u_C3C1R).
    ((u32::from(r) * 4899 + u32::from(g) * 9617 + u32::from(b) * 1868 + (1 << 13)) >> 14) as u8
}

/// libpng's `png_set_rgb_to_gray(png, 1, 0.299, 0.587)` (what OpenCV's PNG reader asks for):
/// 15-bit integer coefficients; 8-bit samples truncate, 16-bit samples round; equal channels pass.
const PNG_RC: u32 = 29_900 * 32_768 / 100_000;
const PNG_GC: u32 = 58_700 * 32_768 / 100_000;
const PNG_BC: u32 = 32_768 - PNG_RC - PNG_GC;

fn gray_png8(r: u8, g: u8, b: u8) -> u8 {
    if r == g && g == b {
        return r;
    }
    ((PNG_RC * u32::from(r) + PNG_GC * u32::from(g) + PNG_BC * u32::from(b)) >> 15) as u8
}

fn gray_png16(r: u16, g: u16, b: u16) -> u8 {
    if r == g && g == b {
        return strip16(r);
    }
    let w = (u64::from(PNG_RC) * u64::from(r)
        + u64::from(PNG_GC) * u64::from(g)
        + u64::from(PNG_BC) * u64::from(b)
        + 16_384)
        >> 15;
    strip16(w as u16)
}

fn to_gray(img: DynamicImage, path: &Path, png: bool) -> Result<Vec<u8>, DataError> {
    fn mix<T: Copy>(px: &[T], n: usize, f: impl Fn(T, T, T) -> u8) -> Vec<u8> {
        px.chunks_exact(n).map(|p| f(p[0], p[1], p[2])).collect()
    }
    let gray8 = if png { gray_png8 } else { gray_cvtcolor };
    let depth = if png { strip16 } else { round16 };
    let gray16 = |r: u16, g: u16, b: u16| {
        if png {
            gray_png16(r, g, b)
        } else {
            gray_cvtcolor(round16(r), round16(g), round16(b))
        }
    };
    Ok(match img {
        DynamicImage::ImageLuma8(b) => b.into_raw(),
        DynamicImage::ImageLumaA8(b) => b.into_raw().chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageLuma16(b) => b.into_raw().into_iter().map(depth).collect(),
        DynamicImage::ImageLumaA16(b) => b.into_raw().chunks_exact(2).map(|p| depth(p[0])).collect(),
        DynamicImage::ImageRgb8(b) => mix(&b.into_raw(), 3, gray8),
        DynamicImage::ImageRgba8(b) => mix(&b.into_raw(), 4, gray8),
        DynamicImage::ImageRgb16(b) => mix(&b.into_raw(), 3, gray16),
        DynamicImage::ImageRgba16(b) => mix(&b.into_raw(), 4, gray16),
        other => return Err(unsupported(&other, path)),
    })
}

/// Applies an EXIF orientation as OpenCV's `ExifTransform` does (transpose, then flip).
fn orient(raw: Raw, orientation: Orientation) -> Raw {
    let exif = orientation.to_exif();
    if exif <= 1 || exif > 8 {
        return raw;
    }
    let Raw {
        height: h,
        width: w,
        channels: c,
        data,
    } = raw;
    // Orientations 5–8 transpose first, so the output is w × h.
    let transpose = exif >= 5;
    let (oh, ow) = if transpose { (w, h) } else { (h, w) };
    // After the optional transpose: flip columns (2, 3, 6, 7) and/or rows (3, 4, 7, 8).
    let flip_x = matches!(exif, 2 | 3 | 6 | 7);
    let flip_y = matches!(exif, 3 | 4 | 7 | 8);
    let mut out = vec![0u8; data.len()];
    for y in 0..oh {
        let ty = if flip_y { oh - 1 - y } else { y };
        for x in 0..ow {
            let tx = if flip_x { ow - 1 - x } else { x };
            // (ty, tx) is a position in the (possibly transposed) image; map it to the source.
            let (sy, sx) = if transpose { (tx, ty) } else { (ty, tx) };
            let src = (sy * w + sx) * c;
            let dst = (y * ow + x) * c;
            out[dst..dst + c].copy_from_slice(&data[src..src + c]);
        }
    }
    Raw {
        height: oh,
        width: ow,
        channels: c,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_2x3() -> Raw {
        // 2 rows × 3 columns, one channel: 0 1 2 / 3 4 5
        Raw {
            height: 2,
            width: 3,
            channels: 1,
            data: (0..6).collect(),
        }
    }

    #[test]
    fn exif_orientations_match_opencv_transforms() {
        // numpy: a = np.arange(6).reshape(2, 3); expected per OpenCV's ExifTransform:
        // 2 np.fliplr(a), 3 np.flip(a), 4 np.flipud(a), 5 a.T, 6 np.fliplr(a.T) (90° clockwise),
        // 7 np.flip(a.T), 8 np.flipud(a.T) (90° counter-clockwise).
        let cases: [(u8, [usize; 2], [u8; 6]); 7] = [
            (2, [2, 3], [2, 1, 0, 5, 4, 3]),
            (3, [2, 3], [5, 4, 3, 2, 1, 0]),
            (4, [2, 3], [3, 4, 5, 0, 1, 2]),
            (5, [3, 2], [0, 3, 1, 4, 2, 5]),
            (6, [3, 2], [3, 0, 4, 1, 5, 2]),
            (7, [3, 2], [5, 2, 4, 1, 3, 0]),
            (8, [3, 2], [2, 5, 1, 4, 0, 3]),
        ];
        for (exif, shape, expected) in cases {
            let o = orient(raw_2x3(), Orientation::from_exif(exif).unwrap());
            assert_eq!([o.height, o.width], shape, "orientation {exif}");
            assert_eq!(o.data, expected, "orientation {exif}");
        }
    }

    #[test]
    fn fuzz_crash_png_claiming_terapixels_is_refused_before_allocating() {
        // Found by `cargo fuzz run decode_transform` (the input is kept in
        // fuzz/corpus/decode_transform/crash-png-claiming-terapixels): a PNG header claiming
        // 131072 x 1291846917 pixels made the decoder allocate 169 TB and abort the process.
        // Fuzzing builds skip PNG's CRC checks, so the same header is rebuilt here with a valid CRC.
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &b in bytes {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xEDB8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&131_072u32.to_be_bytes());
        ihdr.extend_from_slice(&1_291_846_917u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // A (tiny) image-data chunk and the end: the header is what matters.
        for (kind, data) in [
            (&b"IDAT"[..], &b"\x78\x9c\x03\x00\x00\x00\x00\x01"[..]),
            (b"IEND", b""),
        ] {
            let chunk = [kind, data].concat();
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        for result in [
            decode_bgr(&png, Path::new("huge.png")).map(|_| ()),
            decode_gray(&png, Path::new("huge.png")).map(|_| ()),
        ] {
            let err = result.unwrap_err().to_string();
            assert!(
                err.contains("huge.png") && err.contains("more than the limit"),
                "{err}"
            );
        }
    }

    /// A real, complete 8-bit grey PNG of `w` × `h` zero pixels, deflated row by row (never held
    /// whole in memory): 20000 × 20000 is about 390 KB on disk and 400 MB decoded.
    pub(crate) fn zero_png(w: u32, h: u32) -> Vec<u8> {
        use std::io::Write;
        let crc = |bytes: &[u8]| {
            let mut h = flate2::Crc::new();
            h.update(bytes);
            h.sum()
        };
        let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
            let body = [kind, data].concat();
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&body);
            png.extend_from_slice(&crc(&body).to_be_bytes());
        };
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let ihdr = [&w.to_be_bytes()[..], &h.to_be_bytes(), &[8, 0, 0, 0, 0]].concat();
        chunk(&mut png, b"IHDR", &ihdr);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let row = vec![0u8; w as usize + 1]; // filter byte 0, then the pixels
        for _ in 0..h {
            z.write_all(&row).unwrap();
        }
        chunk(&mut png, b"IDAT", &z.finish().unwrap());
        chunk(&mut png, b"IEND", b"");
        png
    }

    #[test]
    fn an_image_bomb_is_refused_from_its_header_naming_file_and_size() {
        // Issue 27: a 389 KB PNG of 20000 x 20000 pixels was decoded whole (2.8 GB with the
        // copies) and aborted the process where memory was short. PIL refuses it too:
        // Image.open(p).load() -> DecompressionBombError (more than 2 * 89478485 pixels).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.png");
        let png = zero_png(20_000, 20_000);
        assert!(png.len() < 1_000_000, "{} bytes", png.len());
        std::fs::write(&path, &png).unwrap();
        let refused = |e: DataError| match e {
            DataError::TooManyPixels {
                path: p,
                width: 20_000,
                height: 20_000,
                limit,
            } => {
                assert_eq!((p.as_path(), limit), (path.as_path(), DEFAULT_MAX_PIXELS));
                let msg = DataError::TooManyPixels {
                    path: p,
                    width: 20_000,
                    height: 20_000,
                    limit,
                }
                .to_string();
                assert!(msg.contains("bomb.png: 20000x20000 pixels (400000000)"), "{msg}");
            }
            other => panic!("{other}"),
        };
        refused(probe(&path).unwrap_err());
        refused(imread(&path).unwrap_err());
        refused(imread_gray(&path).unwrap_err());
        // A JPEG's header (through zune-jpeg, as its decode).
        let jpeg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/opencv/photo420.jpg");
        let full = imread(&jpeg).unwrap();
        assert_eq!(probe(&jpeg).unwrap(), [full.hwc_shape()[0], full.hwc_shape()[1]]);
        let bytes = std::fs::read(&jpeg).unwrap();
        std::fs::write(&path, &bytes[..20]).unwrap();
        assert!(matches!(
            probe(&path),
            Err(DataError::Decode { format: "JPEG", .. })
        ));
        // Just under the budget, the header is accepted (13376^2 = 178917376 pixels).
        std::fs::write(&path, zero_png(13_376, 13_376)).unwrap();
        assert_eq!(probe(&path).unwrap(), [13_376, 13_376]);
    }

    #[test]
    fn garbage_and_truncated_bytes_are_typed_errors() {
        let p = Path::new("x.bin");
        assert!(matches!(
            decode_bgr(b"hello world", p),
            Err(DataError::UnknownImageFormat { .. })
        ));
        assert!(matches!(
            decode_bgr(&[], p),
            Err(DataError::UnknownImageFormat { .. })
        ));
        // A PNG signature and nothing else; a JPEG SOI marker and nothing else.
        let png = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let err = decode_bgr(&png, p).unwrap_err();
        assert!(matches!(err, DataError::Decode { format: "PNG", .. }), "{err:?}");
        let err = decode_bgr(&[0xFF, 0xD8, 0xFF, 0xE0], p).unwrap_err();
        assert!(matches!(err, DataError::Decode { format: "JPEG", .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("x.bin: cannot decode JPEG image"),
            "{err}"
        );
    }
}
