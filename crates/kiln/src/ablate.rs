//! `kiln ablate`: short matched runs that test the seed's claims, one setting changed at a time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use kiln_models::InitScheme;
use kiln_train::config::RunFile;
use kiln_train::plot::{Series, line_chart};
use kiln_train::schedule::{Unit, Warmup};
use kiln_transforms::{ChannelOrder, NormalizationSpec, Scale};
use serde::Serialize;

use crate::args::Usage;

/// Which claim to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Study {
    /// BatchNorm on vs off (the notes claim ≥ 10% accuracy from it).
    Bn,
    /// PyTorch's default init vs Kaiming (fan-out, ReLU) vs Xavier.
    Init,
    /// One warmup epoch vs none, at the run's learning rate.
    Warmup,
    /// The dataset's statistics vs no normalization vs unit-scale statistics applied to bytes.
    Normalization,
    /// RGB vs swapped channels (needs a colour dataset).
    Colour,
}

#[derive(Serialize)]
struct Row {
    variant: String,
    final_val_acc: f64,
    best_val_acc: f64,
    first_train_loss: f64,
    final_train_loss: f64,
    seconds: f64,
}

/// The variants of `study`, each a whole run file.
fn variants(base: &RunFile, study: Study) -> anyhow::Result<Vec<(String, RunFile)>> {
    let with = |name: &str, change: &dyn Fn(&mut RunFile)| {
        let mut f = base.clone();
        change(&mut f);
        (name.to_string(), f)
    };
    let set_model = |f: &mut RunFile, bn: Option<bool>, scheme: Option<InitScheme>| {
        if let Some(b) = bn {
            f.model.set_batch_norm(b);
        }
        if let Some(s) = scheme {
            f.model.set_init(s);
        }
    };
    Ok(match study {
        Study::Bn => vec![
            with("batch-norm", &|f| set_model(f, Some(true), None)),
            with("no batch-norm", &|f| set_model(f, Some(false), None)),
        ],
        Study::Init => vec![
            with("pytorch-default", &|f| {
                set_model(f, None, Some(InitScheme::PytorchDefault))
            }),
            with("kaiming-normal fan-out relu", &|f| {
                set_model(f, None, Some(InitScheme::KaimingNormalFanOutRelu))
            }),
            with("xavier-normal", &|f| {
                set_model(f, None, Some(InitScheme::XavierNormal { gain: 1.0 }))
            }),
        ],
        Study::Warmup => vec![
            with("no warmup", &|f| f.train.schedule.warmup = None),
            with("1 warmup epoch from 0.1×", &|f| {
                f.train.schedule.warmup = Some(Warmup {
                    length: 1,
                    unit: Unit::Epoch,
                    start_factor: 0.1,
                })
            }),
        ],
        Study::Normalization => {
            let own = base.transforms.normalization(base.data.format).resolve()?;
            vec![
                with("dataset statistics", &|f| {
                    f.transforms.normalization = Some(base.transforms.normalization(base.data.format))
                }),
                with("none (pixels / 255)", &|f| {
                    f.transforms.normalization = Some(NormalizationSpec::Custom {
                        mean: vec![0.0],
                        std: vec![1.0],
                        scale: Scale::Unit,
                        order: ChannelOrder::Gray,
                    })
                }),
                // The 0-1 statistics applied to 0-255 pixels: inputs up to ~720.
                with("unit-scale stats on bytes", &|f| {
                    f.transforms.normalization = Some(NormalizationSpec::Custom {
                        mean: own.mean.clone(),
                        std: own.std.clone(),
                        scale: Scale::Byte,
                        order: ChannelOrder::Gray,
                    })
                }),
            ]
        }
        Study::Colour => {
            return Err(Usage(format!(
                "--study colour compares RGB with swapped channels and needs a colour dataset; {} images are grey (one channel), so there is nothing to swap",
                base.data.path.as_deref().map_or("the vendored Fashion-MNIST".into(), |p| p.display().to_string())
            ))
            .into());
        }
    })
}

/// `kiln ablate`: prints a table, writes `ablation-<study>.csv` and `.png` into `out`.
pub(crate) fn ablate(mut base: RunFile, study: Study, out: &Path, json: bool) -> anyhow::Result<()> {
    let epochs = base.train.epochs;
    base.train.early_stopping = None;
    let (_, device, _) = kiln_train::runner::devices(&base)?;
    let variants = variants(&base, study)?;
    for (name, f) in &variants {
        f.train.validate().with_context(|| format!("variant `{name}`"))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for (name, file) in &variants {
        if !json {
            eprintln!("ablate {study:?}: training `{name}` for {epochs} epochs ...");
        }
        let t = Instant::now();
        let records =
            kiln_train::runner::fit_only(file, &device).with_context(|| format!("variant `{name}`"))?;
        let val: Vec<f64> = records.iter().filter_map(|r| r.val_acc).collect();
        rows.push(Row {
            variant: name.clone(),
            final_val_acc: val.last().copied().unwrap_or(f64::NAN),
            best_val_acc: val.iter().copied().fold(f64::NAN, f64::max),
            first_train_loss: records.first().map_or(f64::NAN, |r| r.train_loss),
            final_train_loss: records.last().map_or(f64::NAN, |r| r.train_loss),
            seconds: t.elapsed().as_secs_f64(),
        });
        curves.push((
            name.clone(),
            records
                .iter()
                .filter_map(|r| r.val_acc.map(|a| (r.epoch as f64, a)))
                .collect::<Vec<_>>(),
        ));
    }
    let stem = format!("ablation-{}", format!("{study:?}").to_lowercase());
    let csv_path = out.join(format!("{stem}.csv"));
    let mut csv =
        String::from("variant,final_val_acc,best_val_acc,first_train_loss,final_train_loss,seconds\n");
    for r in &rows {
        csv.push_str(&format!(
            "\"{}\",{},{},{},{},{:.1}\n",
            r.variant, r.final_val_acc, r.best_val_acc, r.first_train_loss, r.final_train_loss, r.seconds
        ));
    }
    std::fs::write(&csv_path, csv).with_context(|| format!("writing {}", csv_path.display()))?;
    let png_path = out.join(format!("{stem}.png"));
    let series: Vec<Series<'_>> = curves
        .iter()
        .map(|(label, points)| Series {
            label,
            points: points.clone(),
        })
        .collect();
    line_chart(
        &png_path,
        &format!("ablation: {study:?} ({epochs} epochs, seed {})", base.train.seed),
        "epoch",
        "validation accuracy",
        &series,
    )?;
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            study: String,
            epochs: usize,
            rows: &'a [Row],
            csv: PathBuf,
            png: PathBuf,
        }
        let report = Report {
            study: format!("{study:?}").to_lowercase(),
            epochs,
            rows: &rows,
            csv: csv_path,
            png: png_path,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<30} {:>13} {:>12} {:>16} {:>16} {:>8}",
        "variant", "final val acc", "best val acc", "train loss ep 1", "final train loss", "seconds"
    );
    for r in &rows {
        println!(
            "{:<30} {:>13.4} {:>12.4} {:>16.4} {:>16.4} {:>8.1}",
            r.variant, r.final_val_acc, r.best_val_acc, r.first_train_loss, r.final_train_loss, r.seconds
        );
    }
    println!("wrote {} and {}", csv_path.display(), png_path.display());
    Ok(())
}
