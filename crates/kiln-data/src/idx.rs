//! The idx file format of MNIST and Fashion-MNIST.
//!
//! Layout (all integers big-endian): two zero bytes, a type byte (`0x08` = u8, the only type these
//! datasets use), the number of dimensions, then one `u32` per dimension, then the data in row-major
//! order. Files may be gzipped (`.gz`); compression is detected from the gzip magic bytes, not the
//! file name, so a mislabelled file still reads.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::DataError;

/// Type byte of unsigned 8-bit idx data.
pub const IDX_U8: u8 = 0x08;

/// A decoded idx array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions from the header, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The data, row-major, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Checks that the array has `expected.len()` dimensions and that each `Some(d)` matches.
    ///
    /// # Errors
    ///
    /// [`DataError::IdxDims`] naming `path`, the expectation and the dimensions found.
    pub fn expect_dims(&self, path: &Path, expected: &[Option<usize>]) -> Result<(), DataError> {
        let ok = self.dims.len() == expected.len()
            && self
                .dims
                .iter()
                .zip(expected)
                .all(|(d, e)| e.is_none_or(|e| e == *d));
        if ok {
            return Ok(());
        }
        let shape: Vec<String> = expected
            .iter()
            .map(|e| e.map_or_else(|| "N".to_string(), |d| d.to_string()))
            .collect();
        Err(DataError::IdxDims {
            path: path.to_path_buf(),
            expected: format!("{} dims [{}]", expected.len(), shape.join(", ")),
            found: self.dims.clone(),
        })
    }
}

/// Reads an idx file, gzipped or raw.
///
/// # Errors
///
/// [`DataError::Io`] when the file cannot be read or its gzip stream is corrupt, and the errors of
/// [`parse_idx`].
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = crate::paths::read_file(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(io)?;
        parse_idx(&out, path)
    } else {
        parse_idx(&raw, path)
    }
}

/// Parses decompressed idx bytes; `path` only names the source in errors.
///
/// # Errors
///
/// [`DataError::IdxBadMagic`] when the first two bytes are not zero, [`DataError::IdxUnsupportedType`]
/// for a type other than u8, [`DataError::IdxTruncated`] when the header or data end early, and
/// [`DataError::IdxTrailingBytes`] when bytes follow the data.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let path_buf = || PathBuf::from(path);
    if bytes.len() < 4 {
        let mut found = [0u8; 4];
        found[..bytes.len()].copy_from_slice(bytes);
        // Too short for a magic number: report as truncated if it could be idx, else bad magic.
        return if bytes.iter().all(|&b| b == 0) {
            Err(DataError::IdxTruncated {
                path: path_buf(),
                expected: 4,
                found: bytes.len(),
            })
        } else {
            Err(DataError::IdxBadMagic {
                path: path_buf(),
                found,
            })
        };
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic[0] != 0 || magic[1] != 0 || magic[3] == 0 {
        return Err(DataError::IdxBadMagic {
            path: path_buf(),
            found: magic,
        });
    }
    if magic[2] != IDX_U8 {
        return Err(DataError::IdxUnsupportedType {
            path: path_buf(),
            found: magic[2],
        });
    }
    let ndim = usize::from(magic[3]);
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(DataError::IdxTruncated {
            path: path_buf(),
            expected: header,
            found: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let expected = count.and_then(|c| c.checked_add(header)).unwrap_or(usize::MAX);
    if bytes.len() < expected {
        return Err(DataError::IdxTruncated {
            path: path_buf(),
            expected,
            found: bytes.len(),
        });
    }
    if bytes.len() > expected {
        return Err(DataError::IdxTrailingBytes {
            path: path_buf(),
            expected,
            extra: bytes.len() - expected,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Encodes u8 data as idx bytes (uncompressed). Used by tests and fixture tools.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    out.extend_from_slice(&[0, 0, IDX_U8, dims.len() as u8]);
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_raw_and_gz_files_alike() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode_idx(&[2, 3, 4], &data);
        let raw = dir.path().join("x-idx3-ubyte");
        let zipped = dir.path().join("x-idx3-ubyte.gz");
        std::fs::write(&raw, &bytes).unwrap();
        std::fs::write(&zipped, gz(&bytes)).unwrap();
        for p in [&raw, &zipped] {
            let a = read_idx(p).unwrap();
            assert_eq!(a.dims, vec![2, 3, 4]);
            assert_eq!(a.data, data);
        }
    }

    #[test]
    fn header_dims_are_big_endian() {
        // 0x0000_0102 = 258 items: a little-endian reader would see 0x0201_0000.
        let bytes = encode_idx(&[258], &[5u8; 258]);
        assert_eq!(&bytes[4..8], &[0, 0, 1, 2]);
        assert_eq!(parse_idx(&bytes, Path::new("l")).unwrap().dims, vec![258]);
    }

    #[test]
    fn bad_magic_names_the_file_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.gz");
        std::fs::write(&p, gz(b"PK\x03\x04 definitely a zip")).unwrap();
        let err = read_idx(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::IdxBadMagic {
                    found: [0x50, 0x4b, 3, 4],
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("labels.gz") && msg.contains("expected [00, 00, 08, ndim]"),
            "{msg}"
        );
    }

    #[test]
    fn non_u8_type_is_refused() {
        let mut bytes = encode_idx(&[1], &[0]);
        bytes[2] = 0x0D; // float
        assert!(matches!(
            parse_idx(&bytes, Path::new("f")),
            Err(DataError::IdxUnsupportedType { found: 0x0D, .. })
        ));
    }

    #[test]
    fn truncated_data_reports_expected_and_found_sizes() {
        let bytes = encode_idx(&[10, 28, 28], &[0u8; 10 * 784]);
        let cut = &bytes[..bytes.len() - 100];
        match parse_idx(cut, Path::new("images")) {
            Err(DataError::IdxTruncated { expected, found, .. }) => {
                assert_eq!(expected, 16 + 7840);
                assert_eq!(found, 16 + 7840 - 100);
            }
            other => panic!("expected truncation, got {other:?}"),
        }
        // Truncated inside the header, too.
        assert!(matches!(
            parse_idx(&bytes[..9], Path::new("images")),
            Err(DataError::IdxTruncated {
                expected: 16,
                found: 9,
                ..
            })
        ));
    }

    #[test]
    fn truncated_gzip_stream_is_an_io_error_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.gz");
        let z = gz(&encode_idx(&[1000], &[3u8; 1000]));
        std::fs::write(&p, &z[..z.len() / 2]).unwrap();
        let err = read_idx(&p).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("cut.gz"));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_idx(&[2], &[1, 2]);
        bytes.push(9);
        assert!(matches!(
            parse_idx(&bytes, Path::new("l")),
            Err(DataError::IdxTrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn wrong_dims_error_says_expected_and_found() {
        let a = parse_idx(&encode_idx(&[4, 2], &[0; 8]), Path::new("images.gz")).unwrap();
        let err = a
            .expect_dims(Path::new("images.gz"), &[None, Some(28), Some(28)])
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("expected 3 dims [N, 28, 28]") && msg.contains("[4, 2]"),
            "{msg}"
        );
    }
}
