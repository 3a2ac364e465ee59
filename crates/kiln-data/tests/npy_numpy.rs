//! `.npy` against numpy itself: files written by `np.save` (numpy 2.4.6, made by
//! `scripts/make_npy_fixtures.py`) are read to the same values, and what kiln writes for the same
//! array is byte-for-byte what `np.save` wrote — so `np.load` reads `kiln transform`'s and
//! `kiln predict --out x.npy`'s output.

use std::path::{Path, PathBuf};

use kiln_data::npy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/npy")
        .join(name)
}

/// `np.arange(24, dtype='<f4').reshape(2, 3, 4) / np.float32(7)`, in f32 as numpy computes it.
fn arange_over_7() -> Vec<f32> {
    (0..24).map(|i| i as f32 / 7.0).collect()
}

#[test]
fn numpy_written_files_read_to_the_same_values() {
    let a = npy::read(&fixture("f32_2x3x4.npy")).unwrap();
    assert_eq!(a.shape, vec![2, 3, 4]);
    assert_eq!(a.data, arange_over_7(), "bit-exact f32");
    let b = npy::read(&fixture("u8_5x2.npy")).unwrap();
    assert_eq!(b.shape, vec![5, 2]);
    let want: Vec<f32> = (0..10).map(|i| (i * 25) as f32).collect();
    assert_eq!(b.data, want);
}

#[test]
fn kiln_writes_the_bytes_np_save_writes() {
    let ours = npy::encode_f32(&[2, 3, 4], &arange_over_7());
    let numpy = std::fs::read(fixture("f32_2x3x4.npy")).unwrap();
    assert_eq!(ours, numpy, "header, padding to 64 bytes and data identical");
    // And through a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    npy::write_f32(&path, &[2, 3, 4], &arange_over_7()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), numpy);
}

#[test]
fn what_kiln_does_not_read_is_an_error_not_garbage() {
    // A Fortran-order array has the same bytes in another order: reading it as C order would
    // silently transpose the data.
    let msg = npy::read(&fixture("f32_fortran.npy")).unwrap_err().to_string();
    assert!(
        msg.contains("f32_fortran.npy") && msg.contains("fortran"),
        "{msg}"
    );
    let msg = npy::read(&fixture("f64_3.npy")).unwrap_err().to_string();
    assert!(msg.contains("f64_3.npy") && msg.contains("<f8"), "{msg}");
}
