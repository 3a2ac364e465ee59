//! Replays the committed fuzzing corpora (`fuzz/corpus/<target>/`) through the same bodies the
//! `cargo fuzz` targets run: every input, including each crash found and fixed (kept there as a
//! regression), must return without a panic. Fuzzing itself needs nightly; this runs on stable.

#[path = "../fuzz/bodies.rs"]
mod bodies;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        // A panic here names the input that caused it.
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target}: {} panicked", path.display());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn idx_corpus() {
    replay("idx", bodies::idx);
}

#[test]
fn npy_corpus() {
    replay("npy", bodies::npy);
}

#[test]
fn decode_transform_corpus() {
    replay("decode_transform", bodies::decode_transform);
}

#[test]
fn cifar_corpus() {
    replay("cifar", bodies::cifar);
}

#[test]
fn coco_corpus() {
    replay("coco", bodies::coco);
}

#[test]
fn run_file_corpus() {
    replay("run_file", bodies::run_file);
}
