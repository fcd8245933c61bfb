//! The self-contained `index.html`: inline CSS, figures as base64 data URIs, no scripts, no
//! network.

use crate::best_trial::Scored;
use crate::select::{RankedTrial, Ranking};
use base64::Engine as _;
use results_format::TrialRow;
use std::fmt::Write as _;
use std::path::Path;

/// The PNG bytes to embed.
#[derive(Default)]
pub(crate) struct Figures {
    pub confusion: Option<Vec<u8>>,
    pub hardest: Option<Vec<u8>>,
    pub hardest_missing: Option<String>,
    /// `(trial id, png)`, in ranking order.
    pub curves: Vec<(String, Vec<u8>)>,
    /// `(caption, png)`.
    pub grids: Vec<(String, Vec<u8>)>,
    /// Searched experiments and trials stopped early (issue 12), as HTML.
    pub search: String,
}

pub(crate) struct Page<'a> {
    pub results_dir: &'a Path,
    pub ranking: &'a Ranking,
    pub best: &'a RankedTrial,
    pub hparams: &'a proto::Hyperparams,
    pub scored: &'a Scored,
    pub trials_by_status: &'a [(String, usize)],
    pub notes: &'a [String],
    pub figures: &'a Figures,
}

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn img(png: &[u8], alt: &str) -> String {
    format!(
        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
        esc(alt),
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// The ranking table's note on a trial: why it cannot be chosen, and where a rule stopped it.
fn note(t: &RankedTrial) -> String {
    let stop = match (&t.row.stop_rule, t.row.stop_epoch) {
        (Some(rule), Some(epoch)) => Some(format!("stopped at epoch {epoch} by {rule}")),
        _ => None,
    };
    [t.ineligible.clone(), stop]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ")
}

pub(crate) fn num(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.4}"))
}

fn duration(secs: f64) -> String {
    let s = secs.round() as i64;
    if s >= 3600 {
        format!("{}h {:02}m {:02}s", s / 3600, (s % 3600) / 60, s % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{secs:.1}s")
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:2em auto;max-width:1500px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f3f7}td.l,th.l{text-align:left}tr.best td{background:#fff6d6;font-weight:600}tr.out td{color:#888}
.note{background:#fff3cd;border:1px solid #e0c96b;padding:.6em 1em;margin:.5em 0;border-radius:4px}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}code{background:#f4f4f4;padding:0 .2em}
details{margin:.3em 0}summary{cursor:pointer}";

impl Page<'_> {
    pub(crate) fn render(&self) -> String {
        let mut h = String::new();
        let title = format!(
            "hypersweep report: {}",
            self.results_dir.file_name().map_or_else(
                || self.results_dir.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        );
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
            esc(&title),
            esc(&title)
        );
        for n in self.notes {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
        }
        self.summary(&mut h);
        self.best_section(&mut h);
        self.ranking_table(&mut h);
        self.figures_section(&mut h);
        h.push_str("</body></html>\n");
        h
    }

    fn summary(&self, h: &mut String) {
        let trials = &self.ranking.trials;
        let total_epochs: usize = trials.iter().map(|t| t.epochs.len()).sum();
        let train_secs: f64 = trials
            .iter()
            .flat_map(|t| &t.epochs)
            .filter_map(|e| e.seconds)
            .sum();
        let start = trials.iter().filter_map(|t| t.row.started_at).min();
        let end = trials.iter().filter_map(|t| t.row.finished_at).max();
        h.push_str("<h2>Sweep</h2>\n<table>\n");
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">results folder</th><td class=\"l\"><code>{}</code></td></tr>",
            esc(&self.results_dir.display().to_string())
        );
        let by_status = self
            .trials_by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">trials</th><td class=\"l\">{} ({})</td></tr>",
            trials.len(),
            esc(&by_status)
        );
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">epochs recorded</th><td class=\"l\">{total_epochs}</td></tr>"
        );
        if train_secs > 0.0 {
            let _ = writeln!(
                h,
                "<tr><th class=\"l\">training time (sum over epochs)</th><td class=\"l\">{}</td></tr>",
                duration(train_secs)
            );
        }
        match (start, end) {
            (Some(s), Some(e)) if e >= s => {
                let _ = writeln!(
                    h,
                    "<tr><th class=\"l\">wall time (first start to last finish)</th><td class=\"l\">{}</td></tr>",
                    duration((e - s) as f64 / 1e6)
                );
            }
            _ => {
                let _ = writeln!(
                    h,
                    "<tr><th class=\"l\">wall time</th><td class=\"l\">unknown (no start/finish times)</td></tr>"
                );
            }
        }
        let sel = if self.ranking.used == self.ranking.requested {
            format!("{} ({})", self.ranking.used, self.ranking.mode)
        } else {
            format!(
                "{} ({}; asked for {})",
                self.ranking.used, self.ranking.mode, self.ranking.requested
            )
        };
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">best trial chosen on</th><td class=\"l\">{}</td></tr>",
            esc(&sel)
        );
        h.push_str("</table>\n");
    }

    fn best_section(&self, h: &mut String) {
        let b = self.best;
        let hp = self.hparams;
        let _ = writeln!(
            h,
            "<h2>Best trial: <code>{}</code> ({})</h2>",
            esc(&b.row.trial_id),
            esc(&hp.label())
        );
        if let Some(n) = &self.ranking.test_set_note {
            let _ = writeln!(
                h,
                "<p class=\"note\"><b>Chosen on the test set.</b> {}</p>",
                esc(n)
            );
        }
        self.hyperparameter_table(h);
        self.selected_epoch_table(h);
        self.classification_table(h);
        h.push_str("<p>Files: <code>classification_report.csv</code>, <code>classification_report.md</code>, <code>confusion_matrix.csv</code>, <code>predictions.parquet</code>, <code>hardest.csv</code>, <code>best/model.safetensors</code>, <code>best/config.json</code>.</p>\n");
    }

    /// The best trial's hyperparameters.
    fn hyperparameter_table(&self, h: &mut String) {
        let hp = self.hparams;
        h.push_str(
            "<table><tr><th class=\"l\">hyperparameter</th><th class=\"l\">value</th></tr>\n",
        );
        let rows: [(&str, String); 10] = [
            ("arch", hp.arch.to_string()),
            ("hidden", hp.hidden.to_string()),
            ("dropout", hp.dropout.to_string()),
            ("lr", hp.lr.to_string()),
            ("epochs", hp.epochs.to_string()),
            ("batch_size", hp.batch_size.to_string()),
            ("momentum", hp.momentum.to_string()),
            ("weight_decay", hp.weight_decay.to_string()),
            ("validation", hp.validation.to_string()),
            ("seed", hp.seed.to_string()),
        ];
        for (k, v) in rows {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{k}</td><td class=\"l\">{}</td></tr>",
                esc(&v)
            );
        }
        h.push_str("</table>\n");
    }

    /// The selected epoch's metrics and the saved model's scores.
    fn selected_epoch_table(&self, h: &mut String) {
        let r = &self.scored.report;
        h.push_str("<table><tr><th class=\"l\">metric</th><th>value</th></tr>\n");
        let e = self.best.best;
        let metrics: [(&str, String); 9] = [
            (
                "selected epoch",
                e.map_or("—".into(), |e| e.epoch.to_string()),
            ),
            (
                "train loss at that epoch",
                num(e.and_then(|e| e.train_loss)),
            ),
            (
                "train accuracy at that epoch",
                num(e.and_then(|e| e.train_acc)),
            ),
            (
                "validation loss at that epoch",
                num(e.and_then(|e| e.val_loss)),
            ),
            (
                "validation accuracy at that epoch",
                num(e.and_then(|e| e.val_acc)),
            ),
            (
                "test accuracy at that epoch",
                num(e.and_then(|e| e.test_acc)),
            ),
            (
                "test accuracy of the saved model (predictions)",
                format!("{:.4}", r.accuracy),
            ),
            ("macro F1 (saved model)", format!("{:.4}", r.macro_avg.f1)),
            ("test images scored", r.total().to_string()),
        ];
        for (k, v) in metrics {
            let _ = writeln!(h, "<tr><td class=\"l\">{k}</td><td>{v}</td></tr>");
        }
        h.push_str("</table>\n");
    }

    /// Per-class precision, recall and F1, as scikit-learn's `classification_report`.
    fn classification_table(&self, h: &mut String) {
        let r = &self.scored.report;
        h.push_str("<h3>Classification report (test set)</h3>\n");
        h.push_str("<table><tr><th class=\"l\">class</th><th>precision</th><th>recall</th><th>f1-score</th><th>support</th></tr>\n");
        for (n, s) in r.names.iter().zip(&r.classes) {
            let _ = writeln!(
                h,
                "<tr><td class=\"l\">{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
                esc(n),
                s.precision,
                s.recall,
                s.f1,
                s.support
            );
        }
        let _ = writeln!(
            h,
            "<tr><th class=\"l\">accuracy</th><td></td><td></td><td>{:.4}</td><td>{}</td></tr>",
            r.accuracy,
            r.total()
        );
        for (n, s) in [
            ("macro avg", &r.macro_avg),
            ("weighted avg", &r.weighted_avg),
        ] {
            let _ = writeln!(
                h,
                "<tr><th class=\"l\">{n}</th><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
                s.precision, s.recall, s.f1, s.support
            );
        }
        h.push_str("</table>\n");
    }

    fn ranking_table(&self, h: &mut String) {
        let _ = writeln!(
            h,
            "<h2>Trials, ranked by {}</h2>\n<p>Each trial at its best epoch on its experiment's metric (the epoch whose weights it saved), ranked on {} ({}) there; ties go to the lower validation loss, then the trial id. Trials that are neither finished nor stopped, or lack artifacts, are listed last, unranked.</p>",
            self.ranking.used, self.ranking.used, self.ranking.mode
        );
        h.push_str("<table><tr><th>rank</th><th class=\"l\">trial</th><th class=\"l\">experiment</th><th class=\"l\">hyperparameters</th><th class=\"l\">status</th><th>best epoch</th><th>val acc</th><th>val loss</th><th>test acc</th><th>final test acc</th><th>epochs</th><th>train time</th><th class=\"l\">worker / device</th><th class=\"l\">note</th></tr>\n");
        for t in &self.ranking.trials {
            let row: &TrialRow = &t.row;
            let class = if std::ptr::eq(t, self.best) {
                " class=\"best\""
            } else if t.rank.is_none() {
                " class=\"out\""
            } else {
                ""
            };
            let secs: f64 = t.epochs.iter().filter_map(|e| e.seconds).sum();
            let wd = match (&row.worker, &row.device) {
                (Some(w), Some(d)) => format!("{w} / {d}"),
                (Some(w), None) => w.clone(),
                (None, Some(d)) => d.clone(),
                (None, None) => "—".into(),
            };
            let _ = writeln!(
                h,
                "<tr{class}><td>{}</td><td class=\"l\"><code>{}</code></td><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                t.rank.map_or("—".into(), |r| r.to_string()),
                esc(&row.trial_id),
                esc(row.experiment.as_deref().unwrap_or("—")),
                esc(&row.label()),
                esc(row.status.as_str()),
                t.best.map(|e| e.epoch).or(row.best_epoch).map_or("—".into(), |e| e.to_string()),
                num(t.best.and_then(|e| e.val_acc).or(if t.best.is_none() { row.best_val_acc } else { None })),
                num(t.best.and_then(|e| e.val_loss)),
                num(t.best.and_then(|e| e.test_acc)),
                num(row.test_acc),
                t.epochs.len(),
                if secs > 0.0 { duration(secs) } else { "—".into() },
                esc(&wd),
                esc(&note(t)),
            );
        }
        h.push_str("</table>\n");
    }

    fn figures_section(&self, h: &mut String) {
        let f = self.figures;
        h.push_str("<h2>Confusion matrix (best trial, test set)</h2>\n");
        if let Some(png) = &f.confusion {
            h.push_str(&img(png, "confusion matrix"));
        }
        h.push_str("\n<h2>Hardest test samples</h2>\n<p>The test images on which the best model's predictive entropy H = −Σ p ln p is highest (also in <code>hardest.csv</code>).</p>\n");
        match (&f.hardest, &f.hardest_missing) {
            (Some(png), _) => h.push_str(&img(png, "hardest test samples")),
            (None, Some(why)) => {
                let _ = write!(h, "<p class=\"note\">{}</p>", esc(why));
            }
            (None, None) => {}
        }
        h.push_str("\n<table><tr><th>rank</th><th>index</th><th class=\"l\">label</th><th class=\"l\">pred</th><th>entropy</th><th>p(pred)</th></tr>\n");
        let s = self.scored;
        for (r, &i) in s.hardest.iter().enumerate() {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{i}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                r + 1,
                dataset::CLASS_NAMES[s.preds.labels[i]],
                dataset::CLASS_NAMES[s.pred[i]],
                s.entropy[i],
                s.preds.row(i)[s.pred[i]]
            );
        }
        h.push_str("</table>\n");
        h.push_str(&f.search);
        h.push_str("<h2>Learning curves by experiment</h2>\n");
        for (cap, png) in &f.grids {
            let _ = writeln!(h, "<h3>{}</h3>", esc(cap));
            h.push_str(&img(png, cap));
            h.push('\n');
        }
        h.push_str("<h2>Learning curves by trial</h2>\n");
        for (id, png) in &f.curves {
            let open = if *id == self.best.row.trial_id {
                " open"
            } else {
                ""
            };
            let _ = writeln!(
                h,
                "<details{open}><summary><code>{}</code></summary>{}</details>",
                esc(id),
                img(png, id)
            );
        }
    }
}
