//! Every run file under `examples/configs/` parses, and its data path exists: the examples stay
//! true as the config format changes.

use std::path::Path;

use kiln_train::config::RunFile;

#[test]
fn every_example_config_parses_and_points_at_existing_data() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let file = RunFile::load(&path, &[])?;
            file.train.validate()?;
            if let Some(data) = &file.data.path {
                assert!(
                    data.is_dir(),
                    "{}: data.path {} does not exist",
                    path.display(),
                    data.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs in {}", dir.display());
    Ok(())
}
