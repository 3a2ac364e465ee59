//! A run file run from Rust: what `kiln train --config FILE` does, through `kiln_train::runner`.
//!
//! ```sh
//! cargo run --release -p kiln-suite --example run_file                      # the Fashion-MNIST example, 1 epoch
//! cargo run --release -p kiln-suite --example run_file -- my-run.toml 3     # any run file, 3 epochs
//! ```

use kiln_train::config::RunFile;
use kiln_train::runner::{self, RunEvent, RunOptions};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/configs/fashion-mnist.toml").into()
    });
    let epochs: usize = args.next().map_or(Ok(1), |e| e.parse())?;

    // `--set` overrides as the command line gives them; then the checks that need no data.
    let mut file = RunFile::load(path.as_ref(), &[format!("train.epochs={epochs}")])?;
    file.validate()?;
    // The format detected from the folder (and checked against `data.format` when it is set).
    for note in file.resolve_data()? {
        eprintln!("note: {note}");
    }
    let out = tempfile::tempdir()?;
    file.run.out = Some(out.path().join("run"));

    let outcome = runner::train(
        file,
        &RunOptions::default(),
        &mut |event: RunEvent<'_>| match event {
            RunEvent::Epoch(r) => println!(
                "epoch {}: train_loss {:.4} val_acc {:?}",
                r.epoch,
                r.train_loss,
                r.metric("val_acc")
            ),
            other => println!("{other}"),
        },
    )?;
    println!(
        "test accuracy {:.4} in {:.1}s; weights {} (kept until this example exits)",
        outcome.summary.test_acc.unwrap_or(f64::NAN),
        outcome.summary.seconds,
        outcome.model.display()
    );
    Ok(())
}
