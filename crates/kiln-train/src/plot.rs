//! Line charts of a run's curves as PNG (plotters' bitmap backend, the vendored DejaVu Sans Mono
//! for text so no system fonts are needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::TrainError;

static FONT: Once = Once::new();
const FONT_NAME: &str = "kiln-mono";

fn register() {
    FONT.call_once(|| {
        // Registration only fails for a malformed font, and this one is compiled in.
        let _ = register_font(
            FONT_NAME,
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSansMono.ttf"),
        );
    });
}

/// One named line of `(x, y)` points.
pub struct Series<'a> {
    /// The legend label.
    pub label: &'a str,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` as a 800×480 PNG line chart with a title, axis labels and a legend.
///
/// # Errors
///
/// [`TrainError::Write`] naming `path` when it cannot be drawn or written.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<(), TrainError> {
    register();
    let fail = |e: String| TrainError::Write {
        path: path.to_path_buf(),
        reason: e,
    };
    let points = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Err(fail("no finite points to draw".into()));
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (w, h) = (800u32, 480u32);
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        draw_chart(&root, title, x_label, y_label, series, [x0, x1, y0, y1]).map_err(fail)?;
    }
    save_png(path, &pixels, w, h, image::ExtendedColorType::Rgb8)
}

/// The chart itself, on any drawing area.
fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    [x0, x1, y0, y1]: [f64; 4],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT_NAME, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT_NAME, 14))
        .axis_desc_style((FONT_NAME, 15))
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let finite = || s.points.iter().copied().filter(|p| p.1.is_finite());
        // Few points (a short run's epochs) are marked, so that a single one shows at all; a
        // dense curve (per step) is drawn thin.
        let few = s.points.len() <= 60;
        let width = if few { 2 } else { 1 };
        chart
            .draw_series(LineSeries::new(finite(), color.stroke_width(width)))
            .map_err(|e| err(&e))?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        if few {
            chart
                .draw_series(finite().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT_NAME, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A batch of normalised CHW images (`[N, C, H, W]`, row-major) as a PNG grid, de-normalised back
/// to 0–255: grey, or RGB whatever the model's channel order (a BGR-fed model's channels are read
/// back in reverse, so a colour swap upstream shows as blue skin); 8 images per row.
///
/// # Errors
///
/// [`TrainError::Write`] naming `path`.
pub fn batch_grid(
    path: &Path,
    data: &[f32],
    shape: [usize; 4],
    norm: &kiln_transforms::Normalization,
) -> Result<(), TrainError> {
    let (png, _) = batch_grid_png(data, shape, norm).map_err(|reason| TrainError::Write {
        path: path.to_path_buf(),
        reason,
    })?;
    crate::run::write_file(path, &png)
}

/// [`batch_grid`]'s PNG bytes and its `[height, width, channels]`.
///
/// # Errors
///
/// The encoder's message.
pub fn batch_grid_png(
    data: &[f32],
    [n, c, h, w]: [usize; 4],
    norm: &kiln_transforms::Normalization,
) -> Result<(Vec<u8>, [usize; 3]), String> {
    use kiln_transforms::Scale;
    let cols = n.clamp(1, 8);
    let rows = n.div_ceil(cols);
    let (gw, gh) = (cols * (w + 2), rows * (h + 2));
    // Grey stays one channel; colour is written as RGB: a model fed BGR (the Caffe preset) has
    // its channels read back in reverse, so a colour swap upstream shows as blue skin.
    let out_c = if c == 1 { 1 } else { 3 };
    let mut canvas = vec![0u8; gw * gh * out_c];
    let unscale = if norm.scale == Scale::Unit { 255.0 } else { 1.0 };
    let bgr = norm.order == kiln_transforms::ChannelOrder::Bgr;
    for i in 0..n {
        let (ox, oy) = ((i % cols) * (w + 2) + 1, (i / cols) * (h + 2) + 1);
        for y in 0..h {
            for x in 0..w {
                for oc in 0..out_c {
                    let ch = if bgr { out_c - 1 - oc } else { oc };
                    let v = data[((i * c + ch) * h + y) * w + x];
                    let raw = (v * norm.std[ch] + norm.mean[ch]) * unscale;
                    canvas[((oy + y) * gw + ox + x) * out_c + oc] = raw.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    let color = if out_c == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let png = encode_png(&canvas, gw as u32, gh as u32, color)?;
    Ok((png, [gh, gw, out_c]))
}

/// One box to draw: `[x1, y1, x2, y2]` in the image's pixels, its caption (class and score) and
/// its class label (which picks the colour).
pub struct LabelledBox<'a> {
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Drawn above the box (e.g. `Sneaker 0.93`).
    pub caption: &'a str,
    /// The class, for the colour.
    pub label: u32,
}

/// `boxes` drawn on an RGB image (`rgb`, `[height, width]`, HWC u8) as a PNG at `path`: a
/// two-pixel frame per box in its class's colour, the caption on a filled strip above it (inside
/// the box where there is no room above).
///
/// # Errors
///
/// [`TrainError::Write`] naming `path`.
pub fn draw_boxes(
    path: &Path,
    rgb: &[u8],
    [height, width]: [usize; 2],
    boxes: &[LabelledBox<'_>],
) -> Result<(), TrainError> {
    register();
    let fail = |reason: String| TrainError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let mut buffer = rgb.to_vec();
    if buffer.len() != height * width * 3 {
        return Err(fail(format!(
            "{} bytes for a {height}x{width} RGB image",
            buffer.len()
        )));
    }
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width as u32, height as u32)).into_drawing_area();
        let font_px = (height.min(width) / 24).clamp(9, 16) as i32;
        for b in boxes {
            let colour = Palette99::pick(b.label as usize).to_rgba();
            let [x1, y1, x2, y2] = b.bbox.map(|v| v.round() as i32);
            for inset in 0..2 {
                root.draw(&Rectangle::new(
                    [(x1 + inset, y1 + inset), (x2 - inset, y2 - inset)],
                    colour.stroke_width(1),
                ))
                .map_err(|e| fail(e.to_string()))?;
            }
            let text_w = (b.caption.chars().count() as i32 * font_px * 6) / 10 + 4;
            let top = if y1 >= font_px + 2 { y1 - font_px - 2 } else { y1 };
            root.draw(&Rectangle::new(
                [(x1, top), (x1 + text_w, top + font_px + 2)],
                colour.filled(),
            ))
            .map_err(|e| fail(e.to_string()))?;
            root.draw(&Text::new(
                b.caption.to_string(),
                (x1 + 2, top + 1),
                (FONT_NAME, font_px).into_font().color(&WHITE),
            ))
            .map_err(|e| fail(e.to_string()))?;
        }
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    save_png(
        path,
        &buffer,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
    )
}

fn encode_png(pixels: &[u8], w: u32, h: u32, color: image::ExtendedColorType) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut png), pixels, w, h, color)
        .map_err(|e| e.to_string())?;
    Ok(png)
}

/// Encodes `pixels` as a PNG at `path`, atomically (a failed write keeps the previous file).
fn save_png(
    path: &Path,
    pixels: &[u8],
    w: u32,
    h: u32,
    color: image::ExtendedColorType,
) -> Result<(), TrainError> {
    let png = encode_png(pixels, w, h, color).map_err(|reason| TrainError::Write {
        path: path.to_path_buf(),
        reason,
    })?;
    crate::run::write_file(path, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_framed_in_their_class_colour_with_a_caption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boxes.png");
        let grey = vec![40u8; 96 * 128 * 3];
        let boxes = [
            LabelledBox {
                bbox: [20.0, 30.0, 70.0, 80.0],
                caption: "Sneaker 0.93",
                label: 7,
            },
            LabelledBox {
                bbox: [80.0, 2.0, 120.0, 40.0],
                caption: "Bag 0.51",
                label: 8,
            },
        ];
        draw_boxes(&path, &grey, [96, 128], &boxes).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (128, 96));
        let sneaker = Palette99::pick(7).to_rgba();
        // The frame's left edge, below the caption strip, is in the class's colour.
        assert_eq!(img.get_pixel(20, 60).0, [sneaker.0, sneaker.1, sneaker.2]);
        // Inside the box the image is untouched.
        assert_eq!(img.get_pixel(45, 60).0, [40, 40, 40]);
        // The caption strip above the first box is drawn, with lighter text pixels on it.
        let strip: Vec<[u8; 3]> = (21..60).map(|x| img.get_pixel(x, 22).0).collect();
        assert!(strip.contains(&[sneaker.0, sneaker.1, sneaker.2]));
        assert!(strip.iter().any(|p| p.iter().all(|&v| v > 200)), "{strip:?}");
        assert!(draw_boxes(&path, &grey[1..], [96, 128], &boxes).is_err());
    }

    #[test]
    fn draws_a_png_with_lines_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let series = [
            Series {
                label: "train",
                points: (1..=10).map(|e| (e as f64, 1.0 / e as f64)).collect(),
            },
            Series {
                label: "validation",
                points: (1..=10).map(|e| (e as f64, 1.2 / e as f64 + 0.1)).collect(),
            },
        ];
        line_chart(&path, "loss", "epoch", "cross-entropy", &series).unwrap();
        if let Some(keep) = std::env::var_os("KILN_KEEP_PLOT") {
            std::fs::copy(&path, keep).unwrap();
        }
        let img = image_dims(&path);
        assert_eq!(img, (800, 480));
        assert!(line_chart(&path, "empty", "x", "y", &[]).is_err());
        // One epoch: a single point per series is drawn as a marker, not an empty frame.
        let one = [Series {
            label: "train",
            points: vec![(1.0, 0.5)],
        }];
        line_chart(&path, "one epoch", "epoch", "loss", &one).unwrap();
        assert!(
            has_solid_block(&path, [0, 0, 255], 5),
            "the point is drawn as a filled marker (lines and the legend are 2 px wide)"
        );
    }

    /// Whether the PNG has a `side`×`side` square of exactly `rgb`.
    fn has_solid_block(path: &Path, rgb: [u8; 3], side: u32) -> bool {
        let img = image::open(path).unwrap().to_rgb8();
        let (w, h) = img.dimensions();
        (0..h - side).any(|y| {
            (0..w - side)
                .any(|x| (0..side).all(|dy| (0..side).all(|dx| img.get_pixel(x + dx, y + dy).0 == rgb)))
        })
    }

    /// Width and height from the PNG header (bytes 16..24).
    fn image_dims(path: &Path) -> (u32, u32) {
        let b = std::fs::read(path).unwrap();
        assert_eq!(&b[1..4], b"PNG");
        let w = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
        let h = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
        (w, h)
    }
}
