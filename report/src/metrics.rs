//! Classification metrics as scikit-learn computes them: `confusion_matrix`,
//! `classification_report` (with `labels=range(10)`, `zero_division=0`), and predictive entropy.

use std::fmt::Write as _;

/// `matrix[true][pred]` counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Counts `(label, pred)` pairs over `k` classes. Values `>= k` are ignored.
    pub fn new(k: usize, labels: &[usize], preds: &[usize]) -> Self {
        let mut counts = vec![vec![0u64; k]; k];
        for (&t, &p) in labels.iter().zip(preds) {
            if t < k && p < k {
                counts[t][p] += 1;
            }
        }
        ConfusionMatrix { counts }
    }
    pub fn k(&self) -> usize {
        self.counts.len()
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
    pub fn diagonal(&self) -> u64 {
        (0..self.k()).map(|i| self.counts[i][i]).sum()
    }
    pub fn max(&self) -> u64 {
        self.counts.iter().flatten().copied().max().unwrap_or(0)
    }

    /// `true\pred` header of class names, then one row per true class.
    pub fn to_csv(&self, names: &[&str]) -> String {
        let mut s = String::from("true\\pred");
        for n in names {
            s.push(',');
            s.push_str(&csv_field(n));
        }
        s.push('\n');
        for (i, row) in self.counts.iter().enumerate() {
            s.push_str(&csv_field(names[i]));
            for c in row {
                let _ = write!(s, ",{c}");
            }
            s.push('\n');
        }
        s
    }
}

/// Precision, recall, F1 and support of one class or one average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// scikit-learn's `classification_report` as numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    pub names: Vec<String>,
    pub classes: Vec<Scores>,
    pub accuracy: f64,
    pub macro_avg: Scores,
    pub weighted_avg: Scores,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl ClassificationReport {
    pub fn from_confusion(cm: &ConfusionMatrix, names: &[&str]) -> Self {
        let k = cm.k();
        let total = cm.total();
        let mut classes = Vec::with_capacity(k);
        for c in 0..k {
            let tp = cm.counts[c][c];
            let predicted: u64 = (0..k).map(|t| cm.counts[t][c]).sum();
            let support: u64 = cm.counts[c].iter().sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            classes.push(Scores {
                precision,
                recall,
                f1,
                support,
            });
        }
        let mean = |f: fn(&Scores) -> f64| classes.iter().map(f).sum::<f64>() / k.max(1) as f64;
        let wmean = |f: fn(&Scores) -> f64| {
            if total == 0 {
                0.0
            } else {
                classes.iter().map(|s| f(s) * s.support as f64).sum::<f64>() / total as f64
            }
        };
        let macro_avg = Scores {
            precision: mean(|s| s.precision),
            recall: mean(|s| s.recall),
            f1: mean(|s| s.f1),
            support: total,
        };
        let weighted_avg = Scores {
            precision: wmean(|s| s.precision),
            recall: wmean(|s| s.recall),
            f1: wmean(|s| s.f1),
            support: total,
        };
        ClassificationReport {
            names: names.iter().map(|s| s.to_string()).collect(),
            classes,
            accuracy: ratio(cm.diagonal(), total),
            macro_avg,
            weighted_avg,
        }
    }

    pub fn total(&self) -> u64 {
        self.macro_avg.support
    }

    /// `class,precision,recall,f1-score,support`, four decimals; rows in scikit-learn's order
    /// (classes, accuracy, macro avg, weighted avg); the accuracy row leaves precision and recall
    /// empty, like scikit-learn's text report.
    pub fn to_csv(&self) -> String {
        let mut s = String::from("class,precision,recall,f1-score,support\n");
        let mut row = |name: &str, sc: &Scores| {
            let _ = writeln!(
                s,
                "{},{:.4},{:.4},{:.4},{}",
                csv_field(name),
                sc.precision,
                sc.recall,
                sc.f1,
                sc.support
            );
        };
        for (n, sc) in self.names.iter().zip(&self.classes) {
            row(n, sc);
        }
        let _ = writeln!(s, "accuracy,,,{:.4},{}", self.accuracy, self.total());
        for (n, sc) in [
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            let _ = writeln!(
                s,
                "{n},{:.4},{:.4},{:.4},{}",
                sc.precision, sc.recall, sc.f1, sc.support
            );
        }
        s
    }

    /// The same table in Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "| class | precision | recall | f1-score | support |\n|---|---:|---:|---:|---:|\n",
        );
        for (n, sc) in self.names.iter().zip(&self.classes) {
            let _ = writeln!(
                s,
                "| {n} | {:.4} | {:.4} | {:.4} | {} |",
                sc.precision, sc.recall, sc.f1, sc.support
            );
        }
        let _ = writeln!(
            s,
            "| **accuracy** | | | {:.4} | {} |",
            self.accuracy,
            self.total()
        );
        for (n, sc) in [
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            let _ = writeln!(
                s,
                "| **{n}** | {:.4} | {:.4} | {:.4} | {} |",
                sc.precision, sc.recall, sc.f1, sc.support
            );
        }
        s
    }
}

/// `H = -Σ p ln p` in nats, with `0 ln 0 = 0`.
pub fn entropy(probs: &[f32]) -> f64 {
    -probs
        .iter()
        .map(|&p| f64::from(p))
        .filter(|&p| p > 0.0)
        .map(|p| p * p.ln())
        .sum::<f64>()
}

/// Index of the largest value; the first one on ties (numpy's `argmax`).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

/// Indices of the `n` highest entropies, highest first; ties go to the lower index.
pub fn hardest(entropies: &[f64], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..entropies.len()).collect();
    idx.sort_by(|&a, &b| entropies[b].total_cmp(&entropies[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

/// Quotes a CSV field when it needs it.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_uniform_and_certain() {
        assert!((entropy(&[0.25; 4]) - 4f64.ln()).abs() < 1e-9);
        assert_eq!(entropy(&[1.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn argmax_takes_first_on_ties() {
        assert_eq!(argmax(&[0.1, 0.4, 0.4, 0.1]), 1);
    }

    #[test]
    fn hardest_orders_by_entropy_then_index() {
        assert_eq!(hardest(&[0.5, 1.0, 0.5, 2.0], 3), vec![3, 1, 0]);
    }

    #[test]
    fn absent_class_scores_zero_without_dividing_by_zero() {
        let cm = ConfusionMatrix::new(3, &[0, 0, 1], &[0, 1, 1]);
        let r = ClassificationReport::from_confusion(&cm, &["a", "b", "c"]);
        assert_eq!(
            r.classes[2],
            Scores {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0,
                support: 0
            }
        );
        assert!((r.classes[1].precision - 0.5).abs() < 1e-12);
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-12);
    }
}
