//! The synthetic objective of `objective = "synthetic"`: what a trial reports instead of
//! training, so that search and stopping can be tested in seconds and compared with other
//! tools on the same function.
//!
//! `val_acc(e) = q · (1 − 0.5^e)` at epoch `e` (1-based), with
//! `q = 0.9 − 0.05·(log10(lr) + 1.3)² − 0.1·((hidden − 96)/128)² − 0.2·(dropout − 0.1)²`;
//! `val_loss = 1 − val_acc`, and the train and test columns equal the validation ones.
//!
//! The maximum: the three penalties are independent squares, each zero at `lr = 10^-1.3`
//! (≈ 0.0501), `hidden = 96`, `dropout = 0.1`, so `q ≤ 0.9` everywhere and `q = 0.9` exactly
//! there. Whenever those points lie in the search space (they do in lr 0.001–1, hidden 16–256,
//! dropout 0–0.5), the best `val_acc` at epoch `e` is `0.9 · (1 − 0.5^e)`: 0.45 after one epoch.

/// The quality `q` of a configuration: the accuracy it tends to as epochs go on.
pub fn quality(lr: f64, hidden: f64, dropout: f64) -> f64 {
    let l = lr.log10() + 1.3;
    let h = (hidden - 96.0) / 128.0;
    let d = dropout - 0.1;
    0.9 - 0.05 * l * l - 0.1 * h * h - 0.2 * d * d
}

/// The validation accuracy at `epoch` (1-based).
pub fn val_acc(lr: f64, hidden: f64, dropout: f64, epoch: u32) -> f64 {
    quality(lr, hidden, dropout) * (1.0 - 0.5f64.powi(epoch.min(i32::MAX as u32) as i32))
}

/// The validation loss at `epoch`: `1 − val_acc`.
pub fn val_loss(lr: f64, hidden: f64, dropout: f64, epoch: u32) -> f64 {
    1.0 - val_acc(lr, hidden, dropout, epoch)
}

/// The best `val_acc` at `epoch` anywhere (reached at `lr = 10^-1.3`, `hidden = 96`,
/// `dropout = 0.1`).
pub fn best_val_acc(epoch: u32) -> f64 {
    val_acc(10f64.powf(-1.3), 96.0, 0.1, epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optimum_is_0_45_after_one_epoch_and_nothing_beats_it() {
        assert!((best_val_acc(1) - 0.45).abs() < 1e-15);
        assert!((best_val_acc(2) - 0.675).abs() < 1e-15);
        // A grid over the benchmark's space never exceeds it.
        let mut best: f64 = 0.0;
        for i in 0..=300 {
            let lr = 10f64.powf(-3.0 + 3.0 * f64::from(i) / 300.0);
            for hidden in 16..=256 {
                for k in 0..=10 {
                    let dropout = 0.05 * f64::from(k);
                    best = best.max(val_acc(lr, f64::from(hidden), dropout, 1));
                }
            }
        }
        assert!(best <= 0.45 && best > 0.4499, "{best}");
        // By hand: lr 0.1, hidden 64, dropout 0.25 after 3 epochs.
        // q = 0.9 − 0.05·0.09 − 0.1·0.0625 − 0.2·0.0225 = 0.88475; × 0.875 = 0.77415625.
        assert!((val_acc(0.1, 64.0, 0.25, 3) - 0.774_156_25).abs() < 1e-12);
        assert!((val_loss(0.1, 64.0, 0.25, 3) - 0.225_843_75).abs() < 1e-12);
    }
}
