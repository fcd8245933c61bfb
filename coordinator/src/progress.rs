//! What `coordinator run` shows while a sweep runs: live progress bars on a terminal (indicatif:
//! the sweep's epochs and one bar per running trial), plain log lines otherwise.

use crate::scheduler::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tracing::info;

/// Least time between two redraws of the progress display.
pub const DRAW_EVERY: Duration = Duration::from_millis(200);

/// Live progress bars on a terminal, plain log lines otherwise.
pub struct Display {
    bars: Option<(MultiProgress, ProgressBar, HashMap<String, ProgressBar>)>,
    last_log: Instant,
    last_counts: (usize, usize),
}

impl Display {
    pub fn new(plain: bool, total_epochs: u64) -> Display {
        let bars = (!plain && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total_epochs));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30}] {pos}/{len} epochs, {msg} (ETA {eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            overall.set_prefix("sweep");
            (multi, overall, HashMap::new())
        });
        Display {
            bars,
            last_log: Instant::now(),
            last_counts: (0, 0),
        }
    }

    pub fn update(&mut self, p: &Progress, started: Instant) {
        let done_epochs = p.epochs_done;
        let counts = format!(
            "{} done, {} running, {} queued, {} failed",
            p.finished + p.stopped,
            p.running,
            p.queued + p.to_suggest,
            p.failed
        );
        if let Some((multi, overall, per_trial)) = &mut self.bars {
            overall.set_position(done_epochs);
            overall.set_message(counts);
            per_trial.retain(|id, bar| {
                let keep = p.running_trials.iter().any(|r| r.trial_id.as_str() == id);
                if !keep {
                    bar.finish_and_clear();
                    multi.remove(bar);
                }
                keep
            });
            for r in &p.running_trials {
                let bar = per_trial.entry(r.trial_id.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(u64::from(r.epochs)));
                    b.set_style(
                        ProgressStyle::with_template(
                            "  {prefix:<18} [{bar:20}] epoch {pos}/{len} {msg}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    b.set_prefix(r.trial_id.to_string());
                    b
                });
                bar.set_position(u64::from(r.epoch));
                bar.set_message(format!("{} on {}", r.label, r.worker_name));
            }
        } else if (p.finished + p.stopped, p.failed) != self.last_counts
            || self.last_log.elapsed() >= Duration::from_secs(10)
        {
            self.last_counts = (p.finished + p.stopped, p.failed);
            self.last_log = Instant::now();
            let running: Vec<String> = p
                .running_trials
                .iter()
                .map(|r| format!("{} {}/{}", r.trial_id, r.epoch, r.epochs))
                .collect();
            info!(
                finished = p.finished,
                stopped = p.stopped,
                running = p.running,
                queued = p.queued,
                to_suggest = p.to_suggest,
                failed = p.failed,
                epochs = done_epochs,
                elapsed_s = started.elapsed().as_secs(),
                running_trials = %running.join(", "),
                "progress"
            );
        }
    }

    pub fn finish(&mut self, p: &Progress) {
        if let Some((multi, overall, per_trial)) = &mut self.bars {
            for bar in per_trial.values() {
                bar.finish_and_clear();
            }
            overall.finish_with_message(format!(
                "{} done, {} failed",
                p.finished + p.stopped,
                p.failed
            ));
            let _ = multi.clear();
        }
    }
}
