//! `kiln ablate`: prints `kiln_train::ablation::run_study`'s table.

use std::path::Path;

use kiln_train::ablation::{Study, run_study};
use kiln_train::config::RunFile;

/// `kiln ablate`: runs the study, prints a table (or the JSON report).
pub(crate) fn ablate(base: RunFile, study: Study, out: &Path, json: bool) -> anyhow::Result<()> {
    let epochs = base.train.epochs;
    let report = run_study(base, study, out, &mut |name| {
        if !json {
            eprintln!(
                "ablate {}: training `{name}` for {epochs} epochs ...",
                study.name()
            );
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<30} {:>13} {:>12} {:>16} {:>16} {:>8}",
        "variant", "final val acc", "best val acc", "train loss ep 1", "final train loss", "seconds"
    );
    for r in &report.rows {
        println!(
            "{:<30} {:>13.4} {:>12.4} {:>16.4} {:>16.4} {:>8.1}",
            r.variant, r.final_val_acc, r.best_val_acc, r.first_train_loss, r.final_train_loss, r.seconds
        );
    }
    println!("wrote {} and {}", report.csv.display(), report.png.display());
    Ok(())
}
