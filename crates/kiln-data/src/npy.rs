//! NumPy `.npy` files of little-endian `f32` (`<f4`) or `u8` (`|u1`), C order: what
//! `np.save("x.npy", a.astype(np.float32))` writes and `np.load` reads. Used to hand tensors to and
//! from Python (`kiln transform --out x.npy`, `kiln predict --input x.npy`).
//!
//! ```
//! # fn main() -> Result<(), kiln_data::DataError> {
//! use kiln_data::npy;
//!
//! let bytes = npy::encode_f32(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
//! let array = npy::decode(&bytes, std::path::Path::new("x.npy"))?;
//! assert_eq!(array.shape, vec![2, 3]);
//! assert_eq!(array.data[4], 4.0);
//! # Ok(()) }
//! ```

use std::path::Path;

use crate::DataError;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from a `.npy` file, converted to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The values in C order.
    pub data: Vec<f32>,
    /// The dtype the file stored (`"float32"` or `"uint8"`) before the conversion to `f32`.
    pub dtype: &'static str,
}

/// The bytes of a version-1.0 `.npy` file holding `data` (`<f4`, C order) with `shape`.
pub fn encode_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `data` with `shape` to `path` as `.npy`, atomically (a failed write leaves the
/// previous file).
///
/// # Errors
///
/// [`DataError::Write`] naming the file.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), DataError> {
    crate::paths::write_file(path, &encode_f32(shape, data))
}

/// Reads a `.npy` file of `<f4` or `|u1` values (u8 converted to f32 unchanged, 0–255).
///
/// # Errors
///
/// [`DataError::Io`], or [`DataError::Format`] saying what is wrong with the file.
pub fn read(path: &Path) -> Result<NpyArray, DataError> {
    let bytes = crate::paths::read_file(path)?;
    decode(&bytes, path)
}

/// Parses the bytes of a `.npy` file (`path` is for messages).
///
/// # Errors
///
/// [`DataError::Format`]: not a `.npy` file, an unsupported dtype or Fortran order, a malformed
/// header, or data that does not match the shape.
pub fn decode(bytes: &[u8], path: &Path) -> Result<NpyArray, DataError> {
    let bad = |problem: String| DataError::Format {
        path: path.to_path_buf(),
        problem,
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header of {header_len} bytes runs past the end of the file"
            ))
        })?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not text".into()))?;
    let field = |key: &str| -> Result<&str, DataError> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| bad(format!("header has no '{key}': {header}")))?;
        let rest = &header[at + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':').unwrap_or(rest).trim_start();
        Ok(rest)
    };
    let descr = field("descr")?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'|u1'") || descr.starts_with("'<u1'") {
        1
    } else {
        // The quoted type string alone ('<f8'), not a fragment of the header.
        let shown = descr
            .strip_prefix('\'')
            .and_then(|d| d.split_once('\''))
            .map_or_else(
                || descr.chars().take(12).collect::<String>(),
                |(d, _)| d.to_string(),
            );
        return Err(bad(format!(
            "dtype '{shown}' is not supported; save float32 or uint8 (a.astype(np.float32))"
        )));
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(bad(
            "Fortran order is not supported; save np.ascontiguousarray(a)".into(),
        ));
    }
    let shape_text = field("shape")?;
    let close = shape_text
        .find(')')
        .ok_or_else(|| bad(format!("malformed shape in header: {header}")))?;
    let shape = shape_text[..close]
        .trim_start_matches('(')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("malformed shape in header: {header}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    let body = &bytes[end..];
    if Some(body.len()) != count.checked_mul(width) {
        return Err(bad(format!(
            "shape {shape:?} needs {count} values ({} bytes), the file has {} bytes of data",
            count.saturating_mul(width),
            body.len()
        )));
    }
    let data = if width == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body.iter().map(|&b| f32::from(b)).collect()
    };
    let dtype = if width == 4 { "float32" } else { "uint8" };
    Ok(NpyArray { shape, data, dtype })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_aligns_the_header_as_numpy_does() {
        for shape in [vec![3], vec![1, 2, 2], vec![2, 1, 3, 1]] {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            let bytes = encode_f32(&shape, &data);
            // numpy pads the header so the data starts on a 64-byte boundary.
            assert_eq!((bytes.len() - n * 4) % 64, 0);
            let back = decode(&bytes, Path::new("x.npy")).unwrap();
            assert_eq!((back.shape, back.data), (shape, data));
        }
        // A 1-D shape is written as numpy writes it: `(3,)`.
        let bytes = encode_f32(&[3], &[1.0, 2.0, 3.0]);
        assert!(String::from_utf8_lossy(&bytes).contains("'shape': (3,)"));
    }

    #[test]
    fn reads_what_numpy_wrote() {
        // np.save(f, np.arange(6, dtype=np.uint8).reshape(2, 3)) — header copied from numpy 1.26.
        let mut bytes =
            b"\x93NUMPY\x01\x00v\x00{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }".to_vec();
        bytes.resize(10 + 0x76 - 1, b' ');
        bytes.push(b'\n');
        bytes.extend_from_slice(&[0, 1, 2, 3, 4, 5]);
        let a = decode(&bytes, Path::new("u8.npy")).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn bad_files_are_errors_that_say_what_is_wrong() {
        let p = Path::new("bad.npy");
        let err = |bytes: &[u8]| decode(bytes, p).unwrap_err().to_string();
        assert!(err(b"PK\x03\x04 zip").contains("not a .npy file"));
        let mut f64_file = encode_f32(&[2], &[1.0, 2.0]);
        let at = f64_file.windows(3).position(|w| w == b"<f4").unwrap();
        f64_file[at + 2] = b'8';
        // Only the type string, not a fragment of the header ("dtype '<f8', ' is" before).
        assert!(
            err(&f64_file).contains("dtype '<f8' is not supported"),
            "{}",
            err(&f64_file)
        );
        let mut short = encode_f32(&[4], &[1.0, 2.0, 3.0, 4.0]);
        short.truncate(short.len() - 3);
        assert!(err(&short).contains("needs 4 values"));
        let mut huge = b"\x93NUMPY\x01\x00\xff\xff".to_vec();
        huge.extend_from_slice(b"{}");
        assert!(err(&huge).contains("runs past the end"));
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 9), }\n";
        let mut overflow = b"\x93NUMPY\x01\x00".to_vec();
        overflow.extend_from_slice(&(header.len() as u16).to_le_bytes());
        overflow.extend_from_slice(header.as_bytes());
        assert!(err(&overflow).contains("too large"), "{}", err(&overflow));
    }
}
