//! Generated sweep files of any size, for tests of big sweeps (`coordinator check` of 100,000
//! trials). The benchmark `bash scripts/bench.sh check` writes its own in
//! `benches/check_big.py`.

use proto::trial::canon_f64;
use std::fmt::Write as _;

/// The text of a sweep file that expands to exactly `trials` distinct trials (at least 1)
/// over several axes: 1,000 trials per seed of an
/// `lr × hidden × dropout × seed` grid, plus a seed axis for the remainder.
pub fn synthetic_toml(name: &str, trials: usize) -> String {
    let trials = trials.max(1);
    let (grids, rest) = (trials / 1000, trials % 1000);
    let list = |values: Vec<String>| format!("[{}]", values.join(", "));
    let mut out = format!("name = {name:?}\nseed = 1\n\n[defaults]\nepochs = 1\n");
    if grids > 0 {
        let _ = write!(
            out,
            "\n[[experiment]]\nname = \"grid\"\narch = \"ffv3\"\nlr = {}\nhidden = {}\ndropout = {}\nseed = {}\n",
            list((1..=10).map(|k| canon_f64(f64::from(k) / 100.0)).collect()),
            list((1..=10).map(|k| (8 * k).to_string()).collect()),
            list((0..10).map(|k| canon_f64(f64::from(k) / 20.0)).collect()),
            list((0..grids).map(|s| s.to_string()).collect()),
        );
    }
    if rest > 0 {
        let _ = write!(
            out,
            "\n[[experiment]]\nname = \"rest\"\narch = \"ffv1\"\nseed = {}\n",
            list((0..rest).map(|s| s.to_string()).collect()),
        );
    }
    out
}
