//! Classification metrics: a confusion matrix (per-class accuracy from it), top-k accuracy, and
//! the overfitting verdict over a run's epochs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::EpochRecord;
use crate::task::Metric;

/// Counts of (true class, predicted class) pairs, kept sparse: memory follows the samples seen,
/// not the square of the classes (10,000 classes would be 800 MB dense).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    num_classes: usize,
    // JSON keys are strings: the cells travel as (true, predicted, count) triples.
    #[serde(with = "cells_as_triples")]
    cells: BTreeMap<(usize, usize), u64>,
}

mod cells_as_triples {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(
        cells: &BTreeMap<(usize, usize), u64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let triples: Vec<(usize, usize, u64)> = cells.iter().map(|(&(t, p), &n)| (t, p, n)).collect();
        triples.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(usize, usize), u64>, D::Error> {
        let triples = Vec::<(usize, usize, u64)>::deserialize(d)?;
        Ok(triples.into_iter().map(|(t, p, n)| ((t, p), n)).collect())
    }
}

/// Up to this many classes, reports and `kiln eval` print the whole matrix; beyond, the classes
/// with the lowest accuracy and the full counts in a CSV.
pub const FULL_MATRIX_UP_TO: usize = 30;

impl ConfusionMatrix {
    /// An all-zero matrix.
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            cells: BTreeMap::new(),
        }
    }

    /// The matrix of dense `rows` (true class) of columns (predicted class).
    pub fn from_rows(rows: &[Vec<u64>]) -> Self {
        let mut m = Self::new(rows.len());
        for (t, row) in rows.iter().enumerate() {
            for (p, &n) in row.iter().enumerate().filter(|(_, n)| **n > 0) {
                m.cells.insert((t, p), n);
            }
        }
        m
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Adds one prediction (labels outside the matrix are ignored; the loss has already failed on them).
    pub fn add(&mut self, truth: usize, predicted: usize) {
        if truth < self.num_classes && predicted < self.num_classes {
            *self.cells.entry((truth, predicted)).or_default() += 1;
        }
    }

    /// Adds `other`'s counts (of the same size; a different size is ignored).
    pub fn merge(&mut self, other: &ConfusionMatrix) {
        if other.num_classes == self.num_classes {
            for (&cell, &n) in &other.cells {
                *self.cells.entry(cell).or_default() += n;
            }
        }
    }

    /// The count of `truth` predicted as `predicted`.
    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.cells.get(&(truth, predicted)).copied().unwrap_or(0)
    }

    /// The non-zero cells: `((true, predicted), count)` in row order.
    pub fn cells(&self) -> impl Iterator<Item = ((usize, usize), u64)> + '_ {
        self.cells.iter().map(|(&c, &n)| (c, n))
    }

    /// The counts as rows (true class) of columns (predicted class): dense, `num_classes²` values.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        let mut rows = vec![vec![0; self.num_classes]; self.num_classes];
        for (&(t, p), &n) in &self.cells {
            rows[t][p] = n;
        }
        rows
    }

    /// Samples counted.
    pub fn total(&self) -> u64 {
        self.cells.values().sum()
    }

    /// Fraction on the diagonal.
    pub fn accuracy(&self) -> f64 {
        let diag: u64 = self
            .cells
            .iter()
            .filter(|((t, p), _)| t == p)
            .map(|(_, n)| n)
            .sum();
        diag as f64 / self.total().max(1) as f64
    }

    /// Samples of each true class.
    fn row_sums(&self) -> Vec<u64> {
        let mut sums = vec![0; self.num_classes];
        for (&(t, _), &n) in &self.cells {
            sums[t] += n;
        }
        sums
    }

    /// Per class: the fraction of its samples predicted as it (recall); `None` for a class with no
    /// samples.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.row_sums()
            .into_iter()
            .enumerate()
            .map(|(c, row)| (row > 0).then(|| self.get(c, c) as f64 / row as f64))
            .collect()
    }

    /// The matrix as a Markdown table, rows = true class, columns = predicted.
    pub fn to_markdown(&self, names: &[String]) -> String {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let mut s = String::from("| true \\ predicted |");
        for c in 0..self.num_classes {
            s.push_str(&format!(" {} |", name(c)));
        }
        s.push_str(" recall |\n|---|");
        for _ in 0..=self.num_classes {
            s.push_str("---|");
        }
        s.push('\n');
        for (t, recall) in self.per_class_accuracy().into_iter().enumerate() {
            s.push_str(&format!("| {} |", name(t)));
            for p in 0..self.num_classes {
                s.push_str(&format!(" {} |", self.get(t, p)));
            }
            match recall {
                Some(r) => s.push_str(&format!(" {r:.3} |\n")),
                None => s.push_str(" – |\n"),
            }
        }
        s
    }

    /// The `k` classes with the lowest accuracy (classes without samples left out) as a Markdown
    /// table: accuracy, samples, and what they were most often taken for.
    pub fn worst_classes_markdown(&self, names: &[String], k: usize) -> String {
        let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
        let sums = self.row_sums();
        let mut taken_for: Vec<Option<(usize, u64)>> = vec![None; self.num_classes];
        for (&(t, p), &n) in self.cells.iter().filter(|((t, p), _)| t != p) {
            if taken_for[t].is_none_or(|(_, m)| n > m) {
                taken_for[t] = Some((p, n));
            }
        }
        let mut ranked: Vec<(usize, f64)> = self
            .per_class_accuracy()
            .into_iter()
            .enumerate()
            .filter_map(|(c, a)| a.map(|a| (c, a)))
            .collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut s =
            String::from("| class | accuracy | samples | most often taken for |\n|---|---|---|---|\n");
        for &(c, a) in ranked.iter().take(k) {
            let confused =
                taken_for[c].map_or_else(|| "–".to_string(), |(p, n)| format!("{} ({n})", name(p)));
            s.push_str(&format!("| {} | {a:.3} | {} | {confused} |\n", name(c), sums[c]));
        }
        s
    }

    /// The non-zero cells as CSV (`true,predicted,count`, class names quoted), a long format any
    /// tool pivots: the whole matrix at any number of classes.
    pub fn to_csv(&self, names: &[String]) -> String {
        let name = |c: usize| {
            let n = names.get(c).cloned().unwrap_or_else(|| c.to_string());
            format!("\"{}\"", n.replace('"', "\"\""))
        };
        let mut s = String::from("true,predicted,count\n");
        for (&(t, p), &n) in &self.cells {
            s.push_str(&format!("{},{},{n}\n", name(t), name(p)));
        }
        s
    }
}

/// Thresholds of the overfitting verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerdictConfig {
    /// Training accuracy from which a large validation gap means memorisation.
    pub overfit_train_acc: f64,
    /// Train − validation accuracy gap that counts as large.
    pub overfit_gap: f64,
    /// Epochs since the validation loss's minimum (with training loss lower than then) that count
    /// as overfitting.
    pub rising_val_epochs: usize,
    /// Training accuracy below which the model is underfitting (after `min_epochs`).
    pub underfit_train_acc: f64,
    /// Epochs before underfitting is judged.
    pub min_epochs: usize,
}

impl Default for VerdictConfig {
    fn default() -> Self {
        Self {
            overfit_train_acc: 0.98,
            overfit_gap: 0.1,
            rising_val_epochs: 3,
            underfit_train_acc: 0.6,
            min_epochs: 3,
        }
    }
}

/// How the run looks so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing to report.
    Healthy,
    /// The model fits the training set much better than the validation set.
    Overfitting {
        /// The evidence, with numbers.
        reason: String,
    },
    /// The model does not fit the training set.
    Underfitting {
        /// The evidence, with numbers.
        reason: String,
    },
    /// No validation split: overfitting cannot be judged.
    NoValidation,
}

impl Verdict {
    /// Concrete things to try.
    pub fn advice(&self) -> &'static str {
        match self {
            Verdict::Healthy => "",
            Verdict::Overfitting { .. } => {
                "add augmentation (random crops, flips, colour jitter), raise weight decay, use label smoothing, stop early (the best checkpoint is kept), or get more data"
            }
            Verdict::Underfitting { .. } => {
                "train longer, raise the learning rate or add warmup, use a larger model, check the labels and the normalization (`kiln inspect`), or lower weight decay / augmentation"
            }
            Verdict::NoValidation => "hold out a validation split to judge overfitting",
        }
    }

    /// A one-line label: `healthy`, `overfitting`, `underfitting`, `no validation`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Healthy => "healthy",
            Verdict::Overfitting { .. } => "overfitting",
            Verdict::Underfitting { .. } => "underfitting",
            Verdict::NoValidation => "no validation",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Overfitting { reason } | Verdict::Underfitting { reason } => {
                write!(f, "{}: {reason} — {}", self.label(), self.advice())
            }
            other => f.write_str(other.label()),
        }
    }
}

/// Judges the run from its epochs so far. The thresholds apply to the task's `primary` metric
/// where training measures it and larger is better (accuracy); the rising-validation-loss rule
/// applies to every task.
pub fn judge(records: &[EpochRecord], cfg: &VerdictConfig, primary: &Metric) -> Verdict {
    let Some(last) = records.last() else {
        return Verdict::Healthy;
    };
    let train = last.train(primary).filter(|_| primary.higher_is_better);
    let title = primary.title;
    if let Some(train) = train
        && last.epoch >= cfg.min_epochs
        && train < cfg.underfit_train_acc
    {
        return Verdict::Underfitting {
            reason: format!(
                "training {title} {train:.3} after {} epochs (below {})",
                last.epoch, cfg.underfit_train_acc
            ),
        };
    }
    if last.val_loss.is_none() {
        return Verdict::NoValidation;
    }
    if let (Some(train), Some(val)) = (train, last.val(primary)) {
        let gap = train - val;
        if train >= cfg.overfit_train_acc && gap >= cfg.overfit_gap {
            return Verdict::Overfitting {
                reason: format!(
                    "training {title} {train:.3} vs validation {val:.3} (gap {gap:.3} ≥ {})",
                    cfg.overfit_gap
                ),
            };
        }
    }
    // Validation loss at its minimum k or more epochs ago, training loss lower since.
    let k = cfg.rising_val_epochs;
    let best = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.val_loss.map(|v| (i, v)))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some((i, min_val)), Some(val_loss)) = (best, last.val_loss)
        && k > 0
        && records.len() - 1 - i >= k
        && val_loss > min_val
        && last.train_loss < records[i].train_loss
    {
        return Verdict::Overfitting {
            reason: format!(
                "validation loss has risen for {} epochs since its minimum ({min_val:.4} at epoch {} → {val_loss:.4}) while training loss fell ({:.4} → {:.4})",
                records.len() - 1 - i,
                records[i].epoch,
                records[i].train_loss,
                last.train_loss
            ),
        };
    }
    Verdict::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(epoch: usize, train_loss: f64, train_acc: f64, val: Option<(f64, f64)>) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss,
            val_loss: val.map(|v| v.0),
            metrics: [("train_acc".to_string(), train_acc)]
                .into_iter()
                .chain(val.map(|v| ("val_acc".to_string(), v.1)))
                .collect(),
            lr: 0.1,
            train_images_per_s: 1.0,
            seconds: 1.0,
            verdict: None,
            step_losses: Vec::new(),
        }
    }

    #[test]
    fn confusion_matrix_counts_and_recalls() {
        let mut m = ConfusionMatrix::new(3);
        for (t, p) in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 0)] {
            m.add(t, p);
        }
        assert_eq!(m.total(), 5);
        assert!((m.accuracy() - 0.6).abs() < 1e-12);
        assert_eq!(m.per_class_accuracy(), vec![Some(0.5), Some(1.0), Some(0.0)]);
        let md = m.to_markdown(&["cat".into(), "dog".into(), "owl".into()]);
        assert!(md.contains("| dog | 0 | 2 | 0 | 1.000 |"), "{md}");
        let empty = ConfusionMatrix::new(2);
        assert_eq!(empty.per_class_accuracy(), vec![None, None]);
    }

    #[test]
    fn verdicts_follow_the_evidence() {
        use crate::task::ACCURACY;
        let cfg = VerdictConfig::default();
        let healthy = [
            rec(1, 0.8, 0.7, Some((0.6, 0.75))),
            rec(2, 0.5, 0.82, Some((0.5, 0.8))),
        ];
        assert_eq!(judge(&healthy, &cfg, &ACCURACY), Verdict::Healthy);
        let memorised = [rec(5, 0.01, 0.995, Some((1.2, 0.7)))];
        let v = judge(&memorised, &cfg, &ACCURACY);
        assert_eq!(v.label(), "overfitting");
        assert!(
            v.to_string().contains("gap 0.295") && v.to_string().contains("augmentation"),
            "{v}"
        );
        let rising = [
            rec(1, 0.9, 0.6, Some((0.50, 0.80))),
            rec(2, 0.7, 0.7, Some((0.52, 0.80))),
            rec(3, 0.5, 0.8, Some((0.55, 0.79))),
            rec(4, 0.4, 0.85, Some((0.60, 0.78))),
        ];
        let v = judge(&rising, &cfg, &ACCURACY).to_string();
        assert!(
            v.contains("validation loss has risen for 3 epochs since its minimum (0.5000 at epoch 1"),
            "{v}"
        );
        // Rising validation loss but training loss not falling: not this pattern.
        let mut flat = rising.clone();
        flat[3].train_loss = 0.95;
        assert_eq!(judge(&flat, &cfg, &ACCURACY), Verdict::Healthy);
        let stuck = [rec(3, 2.2, 0.2, Some((2.2, 0.2)))];
        assert_eq!(judge(&stuck, &cfg, &ACCURACY).label(), "underfitting");
        assert_eq!(
            judge(&[rec(1, 0.5, 0.9, None)], &cfg, &ACCURACY),
            Verdict::NoValidation
        );
    }

    #[test]
    fn a_task_without_accuracy_is_judged_on_its_losses() {
        // A detector's records: `train_box_l1` (lower is better) and `val_map`, no accuracy.
        let box_l1 = Metric {
            key: "box_l1",
            title: "box L1",
            higher_is_better: false,
        };
        let rec = |epoch, train_loss, val_loss, val_map| {
            let mut r = super::tests::rec(epoch, train_loss, 0.0, Some((val_loss, 0.0)));
            r.metrics = [("train_box_l1".into(), 3.0), ("val_map".into(), val_map)].into();
            r
        };
        let cfg = VerdictConfig::default();
        // A large "training" value below the underfit threshold is not read as accuracy.
        let early = [rec(5, 1.0, 1.1, 0.3)];
        assert_eq!(judge(&early, &cfg, &box_l1), Verdict::Healthy);
        let rising = [
            rec(1, 0.9, 0.50, 0.2),
            rec(2, 0.7, 0.52, 0.2),
            rec(3, 0.5, 0.55, 0.2),
            rec(4, 0.4, 0.60, 0.2),
        ];
        assert_eq!(judge(&rising, &cfg, &box_l1).label(), "overfitting");
    }
}
