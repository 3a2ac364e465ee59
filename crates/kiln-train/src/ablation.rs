//! Ablations: short matched runs that test one of the seed's claims (BatchNorm, init, warmup,
//! normalization, colour order), one setting changed at a time; what `kiln ablate` runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_models::InitScheme;
use kiln_transforms::{ChannelOrder, NormalizationSpec, Scale};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::config::RunFile;
use crate::plot::{Series, line_chart};
use crate::schedule::{Unit, Warmup};

/// Which claim to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Study {
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

/// One variant's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The variant, in words.
    pub variant: String,
    /// Validation accuracy after the last epoch.
    pub final_val_acc: f64,
    /// The best epoch's validation accuracy.
    pub best_val_acc: f64,
    /// Training loss of the first epoch.
    pub first_train_loss: f64,
    /// Training loss of the last epoch.
    pub final_train_loss: f64,
    /// Wall time of the variant's run.
    pub seconds: f64,
}

/// The variants of `study`, each a whole run file.
///
/// # Errors
///
/// [`TrainError::InvalidConfig`] for a study the data cannot have (colour on grey images).
pub fn variants(base: &RunFile, study: Study) -> Result<Vec<(String, RunFile)>, TrainError> {
    base.classifier("an ablation")?;
    let with = |name: &str, change: &dyn Fn(&mut RunFile)| {
        let mut f = base.clone();
        change(&mut f);
        (name.to_string(), f)
    };
    let set_model = |f: &mut RunFile, bn: Option<bool>, scheme: Option<InitScheme>| {
        if let Some(model) = f.model.classifier_mut() {
            if let Some(b) = bn {
                model.set_batch_norm(b);
            }
            if let Some(s) = scheme {
                model.set_init(s);
            }
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
            return Err(TrainError::InvalidConfig {
                field: "study",
                value: "colour".into(),
                reason: format!(
                    "the colour study compares RGB with swapped channels and needs a colour dataset; {} images are grey (one channel), so there is nothing to swap",
                    base.data
                        .path
                        .as_deref()
                        .map_or("the vendored Fashion-MNIST".into(), |p| p.display().to_string())
                ),
            });
        }
    })
}

impl Study {
    /// Every study, in `--help` order.
    pub const ALL: [Study; 5] = [
        Study::Bn,
        Study::Init,
        Study::Warmup,
        Study::Normalization,
        Study::Colour,
    ];

    /// Its name (`bn`, `init`, `warmup`, `normalization`, `colour`).
    pub fn name(self) -> &'static str {
        match self {
            Study::Bn => "bn",
            Study::Init => "init",
            Study::Warmup => "warmup",
            Study::Normalization => "normalization",
            Study::Colour => "colour",
        }
    }
}

impl std::str::FromStr for Study {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Study::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Study::ALL.iter().map(|x| x.name()).collect();
            format!("unknown study `{s}`: use one of {}", names.join(", "))
        })
    }
}

/// What [`run_study`] measured and wrote.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReport {
    /// The study's name.
    pub study: String,
    /// Epochs per variant.
    pub epochs: usize,
    /// One row per variant.
    pub rows: Vec<Row>,
    /// The table as CSV.
    pub csv: PathBuf,
    /// Validation accuracy per epoch, one line per variant.
    pub png: PathBuf,
}

/// Runs every variant of `study` on `base` (early stopping off; `base.train.epochs` each, fresh
/// seeded models, nothing written but the results) and writes `ablation-<study>.csv` and `.png`
/// (validation accuracy per epoch) into `out`. `progress` hears each variant as it starts.
///
/// # Errors
///
/// The variants' config errors (naming the variant), the runs' own, the files'.
pub fn run_study(
    mut base: RunFile,
    study: Study,
    out: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<StudyReport, TrainError> {
    let epochs = base.train.epochs;
    base.train.early_stopping = None;
    let (_, device, _) = crate::runner::devices(&base)?;
    let variants = variants(&base, study)?;
    for (name, f) in &variants {
        f.train.validate().map_err(|e| variant_error(name, e))?;
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::Write {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for (name, file) in &variants {
        progress(name);
        let t = Instant::now();
        let records = crate::runner::fit_only(file, &device).map_err(|e| variant_error(name, e))?;
        let val: Vec<f64> = records.iter().filter_map(|r| r.metric("val_acc")).collect();
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
                .filter_map(|r| r.metric("val_acc").map(|a| (r.epoch as f64, a)))
                .collect::<Vec<_>>(),
        ));
    }
    let stem = format!("ablation-{}", study.name());
    let csv_path = out.join(format!("{stem}.csv"));
    let mut csv =
        String::from("variant,final_val_acc,best_val_acc,first_train_loss,final_train_loss,seconds\n");
    for r in &rows {
        csv.push_str(&format!(
            "\"{}\",{},{},{},{},{:.1}\n",
            r.variant, r.final_val_acc, r.best_val_acc, r.first_train_loss, r.final_train_loss, r.seconds
        ));
    }
    crate::run::write_file(&csv_path, csv.as_bytes())?;
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
    Ok(StudyReport {
        study: study.name().to_string(),
        epochs,
        rows,
        csv: csv_path,
        png: png_path,
    })
}

/// A variant's error, naming the variant.
fn variant_error(name: &str, e: TrainError) -> TrainError {
    TrainError::Variant {
        name: name.to_string(),
        source: Box::new(e),
    }
}
