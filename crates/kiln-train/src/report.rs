//! The end-of-run report: `metrics.csv`, PNG curves (`loss.png`, `accuracy.png`, `lr.png`) and
//! `report.md` (config, curves, verdict with advice, per-class accuracy, confusion matrix, timings).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::metrics::{ConfusionMatrix, Verdict};
use crate::plot::{Series, line_chart};
use crate::task::Metric;
use crate::{EpochRecord, EvalMetrics, RunDir, TrainError};

/// Everything the report shows.
pub struct Report<'a> {
    /// The heading (e.g. the model and dataset).
    pub title: String,
    /// The resolved config, as saved in `config.json`.
    pub config: serde_json::Value,
    /// Every epoch's record.
    pub epochs: &'a [EpochRecord],
    /// The task's primary metric: its curve, and its column in the epoch table.
    pub primary: Metric,
    /// The verdict after the last epoch.
    pub verdict: &'a Verdict,
    /// The best epoch's monitored value and the epoch, and the metric's name.
    pub best: Option<(f64, usize, &'a str)>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The epoch a resumed run continued after (0: not resumed).
    pub resumed_after: usize,
    /// Test metrics and their confusion matrix, when a test split was evaluated.
    pub test: Option<(EvalMetrics, &'a ConfusionMatrix)>,
    /// Class names by label (may be empty).
    pub class_names: &'a [String],
    /// Warnings raised during the run.
    pub warnings: &'a [String],
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Mean training throughput.
    pub train_images_per_s: f64,
    /// The averaged weights' test loss and accuracy (`train.ema`).
    pub ema_test: Option<(f64, f64)>,
    /// The test section as text, for tasks whose results are not an accuracy and a confusion
    /// matrix (detection: the COCO table), shown as written.
    pub test_text: Option<String>,
}

/// The per-step training loss at fractional epochs (step k of n in epoch e at e − 1 + (k+1)/n),
/// smoothed with an exponential moving average (weight 0.9, bias-corrected as TensorBoard does)
/// so that the trend shows through batch noise.
fn step_curve(epochs: &[EpochRecord]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let (mut avg, mut weight) = (0.0, 0.0);
    for e in epochs {
        let n = e.step_losses.len() as f64;
        for (k, &loss) in e.step_losses.iter().enumerate() {
            if !loss.is_finite() {
                continue;
            }
            avg = 0.9 * avg + 0.1 * loss;
            weight = 0.9 * weight + 0.1;
            out.push(((e.epoch - 1) as f64 + (k + 1) as f64 / n, avg / weight));
        }
    }
    out
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v}"))
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl RunDir {
    /// Writes `metrics.csv`, the curves and `report.md`; returns the report's path.
    ///
    /// # Errors
    ///
    /// [`TrainError::Write`] naming the file that could not be written.
    pub fn write_report(&self, r: &Report<'_>) -> Result<PathBuf, TrainError> {
        let write = |name: &str, text: &str| -> Result<PathBuf, TrainError> {
            let path = self.path().join(name);
            crate::run::write_file(&path, text.as_bytes())?;
            Ok(path)
        };
        // Columns: the loss then the task's metrics, training then validation.
        let keys: std::collections::BTreeSet<&str> = r
            .epochs
            .iter()
            .flat_map(|e| e.metrics.keys().map(String::as_str))
            .collect();
        let of =
            |prefix: &str| -> Vec<&str> { keys.iter().copied().filter(|k| k.starts_with(prefix)).collect() };
        let (train_keys, val_keys) = (of("train_"), of("val_"));
        let mut csv = String::from("epoch,train_loss");
        for k in &train_keys {
            let _ = write!(csv, ",{k}");
        }
        csv.push_str(",val_loss");
        for k in &val_keys {
            let _ = write!(csv, ",{k}");
        }
        csv.push_str(",lr,train_images_per_s,seconds,verdict\n");
        for e in r.epochs {
            let _ = write!(csv, "{},{}", e.epoch, e.train_loss);
            for k in &train_keys {
                let _ = write!(csv, ",{}", opt(e.metric(k)));
            }
            let _ = write!(csv, ",{}", opt(e.val_loss));
            for k in &val_keys {
                let _ = write!(csv, ",{}", opt(e.metric(k)));
            }
            let _ = writeln!(
                csv,
                ",{},{},{},{}",
                e.lr,
                e.train_images_per_s,
                e.seconds,
                csv_field(e.verdict.as_deref().unwrap_or(""))
            );
        }
        write("metrics.csv", &csv)?;
        let p = &r.primary;

        let x = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
            r.epochs
                .iter()
                .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
                .collect()
        };
        let mut charts = Vec::new();
        if !r.epochs.is_empty() {
            let mut loss = vec![Series {
                label: "train",
                points: x(&|e| Some(e.train_loss)),
            }];
            let steps = step_curve(r.epochs);
            if !steps.is_empty() {
                loss.push(Series {
                    label: "train, per step (smoothed)",
                    points: steps,
                });
            }
            let mut metric = vec![Series {
                label: "train",
                points: x(&|e| e.train(p)),
            }];
            if r.epochs.iter().any(|e| e.val_loss.is_some()) {
                loss.push(Series {
                    label: "validation",
                    points: x(&|e| e.val_loss),
                });
                metric.push(Series {
                    label: "validation",
                    points: x(&|e| e.val(p)),
                });
            }
            let ema_key = format!("val_ema_{}", p.key);
            if r.epochs.iter().any(|e| e.metric("val_ema_loss").is_some()) {
                loss.push(Series {
                    label: "validation, averaged weights",
                    points: x(&|e| e.metric("val_ema_loss")),
                });
                metric.push(Series {
                    label: "validation, averaged weights",
                    points: x(&|e| e.metric(&ema_key)),
                });
            }
            metric.retain(|s| !s.points.is_empty());
            let lr = [Series {
                label: "lr (epoch start)",
                points: x(&|e| Some(e.lr)),
            }];
            // Classification's chart keeps its name, `accuracy.png`; another task's is `<key>.png`.
            let metric_png = if p.key == "acc" {
                "accuracy.png".to_string()
            } else {
                format!("{}.png", p.key)
            };
            let mut title = p.title.to_string();
            if let Some(first) = title.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            let mut drawn = vec![("loss.png".to_string(), "Loss".to_string(), "loss", &loss[..])];
            if !metric.is_empty() {
                drawn.push((metric_png, title, p.title, &metric[..]));
            }
            drawn.push(("lr.png".to_string(), "Learning rate".to_string(), "lr", &lr[..]));
            for (name, title, y, series) in drawn {
                line_chart(&self.path().join(&name), &title, "epoch", y, series)?;
                charts.push(name);
            }
        }

        let mut md = format!("# {}\n\n", r.title);
        let last = r.epochs.last();
        let _ = writeln!(
            md,
            "{} epochs{}{} in {:.1} s, {:.0} training images/s.\n",
            r.epochs.len(),
            if r.resumed_after > 0 {
                format!(" (resumed after epoch {})", r.resumed_after)
            } else {
                String::new()
            },
            if r.stopped_early { ", stopped early" } else { "" },
            r.seconds,
            r.train_images_per_s
        );
        let _ = writeln!(md, "## Verdict: {}\n", r.verdict.label());
        match r.verdict {
            Verdict::Overfitting { reason } | Verdict::Underfitting { reason } => {
                let _ = writeln!(md, "{reason}.\n\n**Try:** {}.\n", r.verdict.advice());
            }
            Verdict::NoValidation => {
                let _ = writeln!(md, "{}.\n", r.verdict.advice());
            }
            Verdict::Healthy => {
                let _ = writeln!(md, "No sign of over- or underfitting.\n");
            }
        }
        if let Some((value, epoch, metric)) = r.best {
            let _ = writeln!(md, "Best epoch: {epoch} ({metric} = {value:.4}).\n");
        }
        if let Some((m, _)) = &r.test {
            let _ = writeln!(
                md,
                "## Test\n\nloss {:.4}, accuracy **{:.4}**, top-5 {:.4} on {} images.\n",
                m.loss, m.accuracy, m.top5, m.samples
            );
        }
        if let Some(text) = &r.test_text {
            let _ = writeln!(md, "## Test\n\n```\n{}\n```\n", text.trim_end());
        }
        if let Some((loss, acc)) = r.ema_test {
            let _ = writeln!(
                md,
                "Averaged weights (`train.ema`, `model_ema.bpk`): test loss {loss:.4}, accuracy **{acc:.4}**.\n"
            );
        }
        if let Some(last) = last {
            let _ = writeln!(
                md,
                "Last epoch: train loss {:.4}{}{}.\n",
                last.train_loss,
                last.train(p)
                    .map_or(String::new(), |v| format!(", train {} {v:.4}", p.title)),
                match (last.val_loss, last.val(p)) {
                    (Some(l), Some(a)) => format!(", validation loss {l:.4}, validation {} {a:.4}", p.title),
                    (Some(l), None) => format!(", validation loss {l:.4}"),
                    _ => String::new(),
                }
            );
        }
        if !charts.is_empty() {
            md.push_str("## Curves\n\n");
            for c in &charts {
                let _ = writeln!(md, "![{c}]({c})\n");
            }
        }
        let _ = writeln!(
            md,
            "## Epochs\n\n| epoch | lr | train loss | train {k} | val loss | val {k} | img/s | s | verdict |\n|---|---|---|---|---|---|---|---|---|",
            k = p.key
        );
        let cell = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.4}"));
        for e in r.epochs {
            let _ = writeln!(
                md,
                "| {} | {:.5} | {:.4} | {} | {} | {} | {:.0} | {:.1} | {} |",
                e.epoch,
                e.lr,
                e.train_loss,
                cell(e.train(p)),
                cell(e.val_loss),
                cell(e.val(p)),
                e.train_images_per_s,
                e.seconds,
                e.verdict
                    .as_deref()
                    .map_or("–", |v| v.split(':').next().unwrap_or(v))
            );
        }
        if let Some((_, confusion)) = &r.test
            && confusion.num_classes() > crate::metrics::FULL_MATRIX_UP_TO
        {
            // Thousands of classes: the worst ones here, every cell in confusion.csv.
            let csv = write("confusion.csv", &confusion.to_csv(r.class_names))?;
            let _ = writeln!(
                md,
                "\n## Test classes with the lowest accuracy\n\nThe {} of {} classes with the lowest accuracy; every non-zero cell of the confusion matrix is in `{}`.\n",
                crate::infer::WORST_SHOWN.min(confusion.num_classes()),
                confusion.num_classes(),
                csv.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            );
            md.push_str(&confusion.worst_classes_markdown(r.class_names, crate::infer::WORST_SHOWN));
        } else if let Some((_, confusion)) = &r.test {
            md.push_str("\n## Per-class test accuracy\n\n| class | accuracy |\n|---|---|\n");
            for (c, acc) in confusion.per_class_accuracy().into_iter().enumerate() {
                let name = r.class_names.get(c).cloned().unwrap_or_else(|| c.to_string());
                let _ = writeln!(
                    md,
                    "| {name} | {} |",
                    acc.map_or("–".into(), |a| format!("{a:.4}"))
                );
            }
            md.push_str("\n## Test confusion matrix\n\n");
            md.push_str(&confusion.to_markdown(r.class_names));
        }
        if !r.warnings.is_empty() {
            md.push_str("\n## Warnings\n\n");
            for w in r.warnings {
                let _ = writeln!(md, "- {w}");
            }
        }
        let config = serde_json::to_string_pretty(&r.config).unwrap_or_default();
        let _ = write!(md, "\n## Config\n\n```json\n{config}\n```\n");
        write("report.md", &md)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_csv_curves_and_a_report_with_the_verdict_and_confusion_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("run")).unwrap();
        let rec = |epoch, train_acc, val_acc: f64| EpochRecord {
            epoch,
            train_loss: 1.0 / epoch as f64,
            val_loss: Some(0.5 + epoch as f64 * 0.1),
            metrics: [("train_acc", train_acc), ("val_acc", val_acc), ("val_top5", 0.99)]
                .map(|(k, v)| (k.to_string(), v))
                .into(),
            lr: 0.1 / epoch as f64,
            train_images_per_s: 500.0,
            seconds: 2.0,
            verdict: Some("healthy".into()),
            step_losses: vec![1.5 / epoch as f64, 1.0 / epoch as f64],
        };
        let epochs = vec![rec(1, 0.8, 0.78), rec(2, 0.95, 0.8), rec(3, 0.99, 0.8)];
        let verdict = Verdict::Overfitting {
            reason: "training accuracy 0.990 vs validation 0.800 (gap 0.190 ≥ 0.1)".into(),
        };
        let mut confusion = ConfusionMatrix::new(2);
        for (t, p) in [(0, 0), (0, 0), (1, 0), (1, 1)] {
            confusion.add(t, p);
        }
        let test = EvalMetrics {
            loss: 0.4,
            accuracy: 0.75,
            top5: 1.0,
            samples: 4,
        };
        let names = vec!["cat".to_string(), "dog \"d\"".to_string()];
        let path = run
            .write_report(&Report {
                title: "Test run".into(),
                config: serde_json::json!({"lr": 0.1}),
                epochs: &epochs,
                primary: crate::task::ACCURACY,
                verdict: &verdict,
                best: Some((0.8, 2, "val_acc")),
                stopped_early: false,
                resumed_after: 0,
                test: Some((test, &confusion)),
                class_names: &names,
                warnings: &["first batch mean 0.4".into()],
                seconds: 6.5,
                train_images_per_s: 500.0,
                ema_test: Some((0.5, 0.8125)),
                test_text: None,
            })
            .unwrap();
        let md = std::fs::read_to_string(&path).unwrap();
        for needle in [
            "Averaged weights (`train.ema`, `model_ema.bpk`): test loss 0.5000, accuracy **0.8125**",
            "## Verdict: overfitting",
            "**Try:** add augmentation",
            "accuracy **0.7500**",
            "| dog \"d\" | 0.5000 |",
            "![loss.png](loss.png)",
            "Best epoch: 2 (val_acc = 0.8000)",
            "first batch mean 0.4",
            "\"lr\": 0.1",
        ] {
            assert!(md.contains(needle), "{needle} missing in:\n{md}");
        }
        let csv = std::fs::read_to_string(run.path().join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        assert!(
            csv.starts_with("epoch,train_loss,train_acc,val_loss,val_acc,val_top5,lr,"),
            "{csv}"
        );
        // The per-step curve: two steps per epoch at fractional epochs, smoothed from the first.
        let curve = step_curve(&epochs);
        assert_eq!(curve.len(), 6);
        assert!(curve[0].0 == 0.5 && (curve[0].1 - 1.5).abs() < 1e-12, "{curve:?}");
        assert!(
            (curve[1].0 - 1.0).abs() < 1e-12 && curve[1].1 < 1.5 && curve[1].1 > 1.0,
            "{curve:?}"
        );
        assert!(
            csv.lines()
                .nth(3)
                .unwrap()
                .starts_with("3,0.3333333333333333,0.99,0.8"),
            "{csv}"
        );
        for png in ["loss.png", "accuracy.png", "lr.png"] {
            let bytes = std::fs::read(run.path().join(png)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{png}");
        }
    }

    #[test]
    fn ten_thousand_classes_give_a_short_report_and_the_matrix_as_a_csv() {
        // Issue 27: with 10,000 classes report.md was 400 MB (the dense matrix as Markdown).
        let classes = 10_000;
        let mut confusion = ConfusionMatrix::new(classes);
        for t in 0..classes {
            // Class t right twice; every 7th class once taken for its neighbour.
            confusion.add(t, t);
            confusion.add(t, t);
            if t % 7 == 0 {
                confusion.add(t, (t + 1) % classes);
            }
        }
        let names: Vec<String> = (0..classes).map(|c| format!("c{c}")).collect();
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("run")).unwrap();
        let epochs = [EpochRecord {
            epoch: 1,
            train_loss: 1.0,
            val_loss: None,
            metrics: [("train_acc".to_string(), 0.5)].into(),
            lr: 0.1,
            train_images_per_s: 1.0,
            seconds: 1.0,
            verdict: None,
            step_losses: vec![1.0],
        }];
        let test = EvalMetrics {
            loss: 1.0,
            accuracy: confusion.accuracy(),
            top5: 1.0,
            samples: confusion.total() as usize,
        };
        let path = run
            .write_report(&Report {
                title: "many".into(),
                config: serde_json::json!({}),
                epochs: &epochs,
                primary: crate::task::ACCURACY,
                verdict: &Verdict::Healthy,
                best: None,
                stopped_early: false,
                resumed_after: 0,
                test: Some((test, &confusion)),
                class_names: &names,
                warnings: &[],
                seconds: 1.0,
                train_images_per_s: 1.0,
                ema_test: None,
                test_text: None,
            })
            .unwrap();
        let md = std::fs::read_to_string(&path).unwrap();
        assert!(md.len() < 20_000, "report.md is {} bytes", md.len());
        assert!(!md.contains("## Test confusion matrix"));
        // The worst classes: accuracy 2/3, the lowest indices first, with their confusion.
        assert!(
            md.contains("The 20 of 10000 classes with the lowest accuracy"),
            "{md}"
        );
        assert!(md.contains("| c0 | 0.667 | 3 | c1 (1) |"), "{md}");
        assert_eq!(md.matches("| 0.667 |").count(), 20);
        let csv = std::fs::read_to_string(run.path().join("confusion.csv")).unwrap();
        // One line per non-zero cell: 10000 diagonal + ceil(10000 / 7) = 1429 off it.
        assert_eq!(csv.lines().count(), 1 + 10_000 + 1_429);
        assert!(csv.contains("\n\"c7\",\"c8\",1\n"), "{}", &csv[..200]);
        assert!(csv.contains("\n\"c8\",\"c8\",2\n"));
    }
}
