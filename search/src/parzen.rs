//! The Parzen estimator of one parameter, as Optuna's `_ParzenEstimator` builds it for the
//! independent TPE: a mixture with one kernel per observation plus a prior kernel. Numbers get
//! truncated normals (in the logarithm for log distributions; integers as the mass of
//! `[x - 0.5, x + 0.5]` under normals truncated to `[lo - 0.5, hi + 0.5]`), choices get
//! categorical kernels that put extra weight on the observed option.

use crate::rng::Draws;
use crate::space::Distribution;
use crate::truncnorm;

/// Optuna's `default_weights`: equal weights for fewer than 25 observations, else the 25
/// latest at 1 and the older ones on a ramp from `1/n` up, so old observations fade.
pub(crate) fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let mut w = linspace(1.0 / n as f64, 1.0, n - 25);
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// numpy's `linspace(start, stop, num)` (endpoint included), with its arithmetic.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    out[num - 1] = stop;
    out
}

/// The kernels of one parameter; each vector has one entry per observation, then the prior's.
#[derive(Debug, Clone)]
enum Kernels {
    /// Truncated normals over `[low, high]`, in the transformed space (logarithm when `log`,
    /// bounds widened by half a step for integers).
    Numeric {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        low: f64,
        high: f64,
        log: bool,
        /// For integers, the original bounds that samples are rounded and clipped into.
        int: Option<(f64, f64)>,
    },
    /// One row of option probabilities per kernel.
    Categorical { rows: Vec<Vec<f64>> },
}

/// A weighted mixture of kernels over one parameter's values. Values are plain numbers: the
/// float, the integer, or the option index.
#[derive(Debug, Clone)]
pub(crate) struct Parzen {
    weights: Vec<f64>,
    kernels: Kernels,
}

impl Parzen {
    /// The estimator of `observed` values (in trial order, which the weights depend on).
    pub(crate) fn new(dist: &Distribution, observed: &[f64], prior_weight: f64) -> Parzen {
        let mut weights = default_weights(observed.len());
        if observed.is_empty() {
            weights = vec![1.0];
        } else {
            weights.push(prior_weight);
        }
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let kernels = match *dist {
            Distribution::Choice { n } => categorical(observed, n, prior_weight),
            Distribution::Uniform { lo, hi } => numeric(observed, lo, hi, false, None),
            Distribution::LogUniform { lo, hi } => numeric(observed, lo, hi, true, None),
            Distribution::Int { lo, hi, log } => {
                let (l, h) = (lo as f64, hi as f64);
                numeric(observed, l - 0.5, h + 0.5, log, Some((l, h)))
            }
        };
        Parzen { weights, kernels }
    }

    /// `size` values drawn from the mixture: first every kernel index, then a value from each
    /// chosen kernel.
    pub(crate) fn sample(&self, draws: &mut Draws, size: usize) -> Vec<f64> {
        let active = self.choose_kernels(draws, size);
        active.iter().map(|&k| self.draw_from(k, draws)).collect()
    }

    /// The mixture's log-density (log-mass for integers and choices) at `x`. Continuous log
    /// parameters are measured in the logarithm, as Optuna does: the Jacobian is the same for
    /// both estimators TPE compares, so it cancels.
    pub(crate) fn log_pdf(&self, x: f64) -> f64 {
        log_sum_exp(
            (0..self.weights.len()).map(|k| self.weights[k].ln() + self.kernel_log_pdf(k, x)),
        )
    }

    /// `size` kernel indices, as numpy's `choice` with probabilities draws them: the first index
    /// whose cumulative weight exceeds a uniform number.
    fn choose_kernels(&self, draws: &mut Draws, size: usize) -> Vec<usize> {
        let mut cdf: Vec<f64> = self
            .weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w;
                Some(*acc)
            })
            .collect();
        let last = *cdf.last().expect("a mixture has at least the prior kernel");
        cdf.iter_mut().for_each(|c| *c /= last);
        (0..size)
            .map(|_| {
                let u = draws.uniform();
                cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
            })
            .collect()
    }

    /// A value from kernel `k`.
    fn draw_from(&self, k: usize, draws: &mut Draws) -> f64 {
        match &self.kernels {
            Kernels::Categorical { rows } => {
                let u = draws.uniform();
                let mut acc = 0.0;
                let row = &rows[k];
                // The count of cumulative probabilities below u; the last counts as 1.
                row[..row.len() - 1]
                    .iter()
                    .take_while(|&&p| {
                        acc += p;
                        acc < u
                    })
                    .count() as f64
            }
            Kernels::Numeric {
                mus,
                sigmas,
                low,
                high,
                log,
                int,
            } => {
                let (mu, sigma) = (mus[k], sigmas[k]);
                let z = truncnorm::ppf(draws.uniform(), (low - mu) / sigma, (high - mu) / sigma);
                let t = (z * sigma + mu).clamp(*low, *high);
                let x = if *log { t.exp() } else { t };
                match int {
                    Some((lo, hi)) => (lo + (x - lo).round_ties_even()).clamp(*lo, *hi),
                    None => x,
                }
            }
        }
    }

    /// The log-density (log-mass) of kernel `k` alone at `x`.
    fn kernel_log_pdf(&self, k: usize, x: f64) -> f64 {
        match &self.kernels {
            Kernels::Categorical { rows } => rows[k][x as usize].ln(),
            Kernels::Numeric {
                mus,
                sigmas,
                low,
                high,
                log,
                int,
            } => {
                let t = |v: f64| if *log { v.ln() } else { v };
                let (mu, sigma) = (mus[k], sigmas[k]);
                if int.is_some() {
                    truncnorm::log_gauss_mass((t(x - 0.5) - mu) / sigma, (t(x + 0.5) - mu) / sigma)
                        - truncnorm::log_gauss_mass((low - mu) / sigma, (high - mu) / sigma)
                } else {
                    truncnorm::log_pdf(t(x), mu, sigma, *low, *high)
                }
            }
        }
    }
}

/// The estimators of several parameters, fitted to the same observations, joined into one
/// mixture of product kernels (Optuna's multivariate TPE): kernel `k` is observation `k`'s
/// kernels of every parameter together, so a candidate takes all its values from one
/// observation's neighbourhood.
#[derive(Debug, Clone)]
pub(crate) struct Joint<'a>(pub(crate) &'a [Parzen]);

impl Joint<'_> {
    /// `size` candidates, one value per parameter each: all kernel indices first, then the
    /// values parameter by parameter.
    pub(crate) fn sample(&self, draws: &mut Draws, size: usize) -> Vec<Vec<f64>> {
        let active = self.0[0].choose_kernels(draws, size);
        let columns: Vec<Vec<f64>> = self
            .0
            .iter()
            .map(|p| active.iter().map(|&k| p.draw_from(k, draws)).collect())
            .collect();
        (0..size)
            .map(|i| columns.iter().map(|c| c[i]).collect())
            .collect()
    }

    pub(crate) fn log_pdf(&self, x: &[f64]) -> f64 {
        let weights = &self.0[0].weights;
        log_sum_exp((0..weights.len()).map(|k| {
            weights[k].ln()
                + self
                    .0
                    .iter()
                    .zip(x)
                    .map(|(p, &v)| p.kernel_log_pdf(k, v))
                    .sum::<f64>()
        }))
    }
}

/// `ln Σ e^v`, `-inf` when every term is.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Optuna's categorical kernels: each observation's row gives every option
/// `prior_weight / kernels` and its own option 1 more, normalised; the prior's row is uniform.
fn categorical(observed: &[f64], n: usize, prior_weight: f64) -> Kernels {
    if observed.is_empty() {
        return Kernels::Categorical {
            rows: vec![vec![1.0 / n as f64; n]],
        };
    }
    let kernels = observed.len() + 1;
    let fill = prior_weight / kernels as f64;
    let mut rows = vec![vec![fill; n]; kernels];
    for (row, &x) in rows.iter_mut().zip(observed) {
        row[x as usize] += 1.0;
    }
    for row in &mut rows {
        let sum: f64 = row.iter().sum();
        if sum > 0.0 {
            row.iter_mut().for_each(|p| *p /= sum);
        }
    }
    Kernels::Categorical { rows }
}

/// Optuna's numerical kernels over `[low, high]` (already widened for integers): each
/// observation is a normal whose width is the larger gap to its sorted neighbours (the bounds
/// count as neighbours, except that with `consider_endpoints = false` the first and last take
/// the gap on their inner side), clipped to `[(high - low) / min(100, 1 + kernels), high - low]`
/// (the "magic clip"); the prior is a normal at the middle as wide as the range.
fn numeric(observed: &[f64], low: f64, high: f64, log: bool, int: Option<(f64, f64)>) -> Kernels {
    let (low, high) = if log {
        (low.ln(), high.ln())
    } else {
        (low, high)
    };
    let mut mus: Vec<f64> = observed
        .iter()
        .map(|&x| if log { x.ln() } else { x })
        .collect();
    let mut order: Vec<usize> = (0..mus.len()).collect();
    order.sort_by(|&i, &j| mus[i].total_cmp(&mus[j]));
    let mut with_ends = Vec::with_capacity(mus.len() + 2);
    with_ends.push(low);
    with_ends.extend(order.iter().map(|&i| mus[i]));
    with_ends.push(high);
    let mut sorted_sigmas: Vec<f64> = (1..with_ends.len() - 1)
        .map(|i| (with_ends[i] - with_ends[i - 1]).max(with_ends[i + 1] - with_ends[i]))
        .collect();
    let m = with_ends.len();
    if m >= 4 {
        sorted_sigmas[0] = with_ends[2] - with_ends[1];
        let last = sorted_sigmas.len() - 1;
        sorted_sigmas[last] = with_ends[m - 2] - with_ends[m - 3];
    }
    let kernels = mus.len() + 1;
    let (min_sigma, max_sigma) = ((high - low) / 100f64.min(1.0 + kernels as f64), high - low);
    let mut sigmas = vec![0.0; mus.len()];
    for (pos, &i) in order.iter().enumerate() {
        sigmas[i] = sorted_sigmas[pos].clamp(min_sigma, max_sigma);
    }
    mus.push(0.5 * (low + high));
    sigmas.push(high - low);
    Kernels::Numeric {
        mus,
        sigmas,
        low,
        high,
        log,
        int,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{generator, Purpose};

    #[test]
    fn weights_are_flat_below_25_then_ramp_up_to_the_latest() {
        assert_eq!(default_weights(0), Vec::<f64>::new());
        assert_eq!(default_weights(3), vec![1.0; 3]);
        assert_eq!(default_weights(25), vec![1.0; 25]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        // np.linspace(1/30, 1, 5) = [0.0333, 0.2750, 0.5167, 0.7583, 1.0]
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-15);
        assert!((w[1] - 0.275).abs() < 1e-12);
        assert_eq!(w[4], 1.0);
        assert!(w[5..].iter().all(|&x| x == 1.0));
    }

    #[test]
    fn log_densities_equal_optunas() {
        // Golden values: Optuna 5.0.0's `_ParzenEstimator(...).log_pdf` with prior_weight 1,
        // magic clip on, endpoints off, default_weights, for the same observations and points
        // (printed by search/golden/optuna_parzen.py).
        let many: Vec<f64> = linspace(0.0, 1.0, 30).iter().map(|x| x * x).collect();
        let int = |lo, hi, log| Distribution::Int { lo, hi, log };
        // (distribution, observations, points, Optuna's log-density at each point)
        type Case<'a> = (Distribution, &'a [f64], &'a [f64], &'a [f64]);
        let cases: [Case<'_>; 7] = [
            (
                Distribution::Uniform { lo: 0.0, hi: 0.5 },
                &[0.1, 0.35, 0.2, 0.21],
                &[0.0, 0.05, 0.2, 0.33, 0.5],
                &[
                    0.251115551101301,
                    0.6307034764323552,
                    1.0318558063451981,
                    0.6544496416598895,
                    -0.1899452824242256,
                ],
            ),
            (
                Distribution::LogUniform { lo: 1e-3, hi: 1.0 },
                &[0.01, 0.05, 0.5],
                &[1e-3, 0.003, 0.04, 0.9, 1.0],
                &[
                    -2.642327620752593,
                    -2.15171819212334,
                    -1.7551034622429071,
                    -2.071407168902737,
                    -2.0926182487447305,
                ],
            ),
            (
                int(16, 256, true),
                &[32.0, 100.0, 101.0, 250.0],
                &[16.0, 31.0, 99.0, 256.0],
                &[
                    -4.435604661355805,
                    -4.691351557703804,
                    -5.423588790570879,
                    -6.495850700442913,
                ],
            ),
            (
                int(1, 5, false),
                &[2.0, 2.0, 5.0],
                &[1.0, 2.0, 3.0, 5.0],
                &[
                    -1.6335859270253217,
                    -1.378150549104864,
                    -1.4920205134885605,
                    -1.8886510399885927,
                ],
            ),
            (
                Distribution::Choice { n: 4 },
                &[3.0, 3.0, 0.0],
                &[0.0, 1.0, 2.0, 3.0],
                &[
                    -1.268511325463507,
                    -1.8562979903656256,
                    -1.8562979903656256,
                    -0.9007865453381897,
                ],
            ),
            (
                Distribution::Uniform { lo: 0.0, hi: 1.0 },
                &many,
                &[0.0, 0.3, 0.7, 1.0],
                &[
                    0.8596571270074813,
                    -0.04067093147175427,
                    -0.4433508270123523,
                    -0.47535696608139916,
                ],
            ),
            (
                Distribution::Uniform { lo: -2.0, hi: 3.0 },
                &[],
                &[-2.0, 0.5, 3.0],
                &[
                    -1.6934601119431507,
                    -1.5684601119431507,
                    -1.6934601119431507,
                ],
            ),
        ];
        for (dist, observed, xs, want) in cases {
            let p = Parzen::new(&dist, observed, 1.0);
            for (&x, &w) in xs.iter().zip(want) {
                let got = p.log_pdf(x);
                assert!(
                    (got - w).abs() < 1e-12,
                    "{dist:?} at {x}: {got} vs Optuna's {w}"
                );
            }
        }
    }

    #[test]
    fn the_joint_log_density_equals_optunas_multivariate_one() {
        // Golden values from search/golden/optuna_parzen.py ("joint").
        let dists = [
            Distribution::Uniform { lo: 0.0, hi: 1.0 },
            Distribution::Int {
                lo: 1,
                hi: 10,
                log: true,
            },
            Distribution::Choice { n: 3 },
        ];
        let rows = [
            [0.2, 3.0, 0.0],
            [0.25, 4.0, 0.0],
            [0.9, 9.0, 2.0],
            [0.5, 1.0, 1.0],
        ];
        let parzens: Vec<Parzen> = dists
            .iter()
            .enumerate()
            .map(|(i, d)| Parzen::new(d, &rows.map(|r| r[i]), 1.0))
            .collect();
        let joint = Joint(&parzens);
        let points = [
            [0.22, 3.0, 0.0],
            [0.9, 9.0, 2.0],
            [0.22, 9.0, 2.0],
            [1.0, 10.0, 1.0],
        ];
        let want = [
            -2.1159184829242,
            -3.6245466903477968,
            -4.423336940538924,
            -5.138129798194617,
        ];
        for (x, w) in points.iter().zip(want) {
            let got = joint.log_pdf(x);
            assert!((got - w).abs() < 1e-12, "{x:?}: {got} vs Optuna's {w}");
        }
        // Candidates come from one kernel at a time: each in range.
        let mut draws = generator(2, "t", Purpose::Tpe, 0);
        for c in joint.sample(&mut draws, 100) {
            assert!((0.0..=1.0).contains(&c[0]) && (1.0..=10.0).contains(&c[1]) && c[2] < 3.0);
        }
    }

    #[test]
    fn kernel_widths_follow_optunas_neighbour_rule() {
        // Observations 0.2, 0.5, 0.6 on [0, 1]: gaps to neighbours (ends included) are
        // 0.2|0.3, 0.3|0.1, 0.1|0.4. Without endpoints the first takes its right gap 0.3 and
        // the last its left gap 0.1; the middle takes max(0.3, 0.1) = 0.3. Magic clip: at least
        // 1 / min(100, 1 + 4) = 0.2, so 0.1 becomes 0.2. The prior: mu 0.5, sigma 1.
        let Kernels::Numeric { mus, sigmas, .. } = numeric(&[0.6, 0.2, 0.5], 0.0, 1.0, false, None)
        else {
            unreachable!()
        };
        assert_eq!(mus, vec![0.6, 0.2, 0.5, 0.5]);
        let want = [0.2, 0.3, 0.3, 1.0];
        for (s, w) in sigmas.iter().zip(want) {
            assert!((s - w).abs() < 1e-12, "{sigmas:?}");
        }
    }

    #[test]
    fn categorical_rows_add_one_to_the_observed_option() {
        // Two observations of option 1 among 3, prior weight 1: 3 kernels, fill 1/3;
        // rows (1/3, 4/3, 1/3) / 2 and the prior (1/3, 1/3, 1/3).
        let Kernels::Categorical { rows } = categorical(&[1.0, 1.0], 3, 1.0) else {
            unreachable!()
        };
        assert!((rows[0][1] - 4.0 / 6.0).abs() < 1e-15 && (rows[0][0] - 1.0 / 6.0).abs() < 1e-15);
        assert!(rows[2].iter().all(|&p| (p - 1.0 / 3.0).abs() < 1e-15));
    }

    #[test]
    fn samples_stay_in_range_and_the_density_is_a_density() {
        let mut draws = generator(1, "t", Purpose::Tpe, 0);
        let int = Distribution::Int {
            lo: 16,
            hi: 256,
            log: true,
        };
        let p = Parzen::new(&int, &[32.0, 100.0, 101.0, 250.0], 1.0);
        let xs = p.sample(&mut draws, 500);
        assert!(xs
            .iter()
            .all(|&x| (16.0..=256.0).contains(&x) && x.fract() == 0.0));
        // Masses of all integers sum to 1.
        let total: f64 = (16..=256).map(|k| p.log_pdf(k as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");

        let float = Distribution::LogUniform { lo: 1e-3, hi: 1.0 };
        let p = Parzen::new(&float, &[0.01, 0.05], 1.0);
        let xs = p.sample(&mut draws, 500);
        assert!(xs.iter().all(|&x| (1e-3..=1.0).contains(&x)));
        // The density in ln x integrates to 1 over [ln 0.001, 0].
        let n = 20_000;
        let (a, b) = (1e-3f64.ln(), 0.0);
        let h = (b - a) / n as f64;
        let total: f64 = (0..n)
            .map(|i| p.log_pdf((a + (i as f64 + 0.5) * h).exp()).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");

        let choice = Distribution::Choice { n: 4 };
        let p = Parzen::new(&choice, &[3.0, 3.0, 0.0], 1.0);
        let xs = p.sample(&mut draws, 2000);
        let threes = xs.iter().filter(|&&x| x == 3.0).count();
        // Four kernels of weight 1/4 (three observations and the prior), fill 1/4: the rows of
        // the two "3"s are (1/4, 1/4, 1/4, 5/4) / 2, giving option 3 the probability 5/8; the
        // row of the "0" gives it 1/8 and the prior 1/4. P(3) = (5/8 + 5/8 + 1/8 + 1/4) / 4
        // = 13/32 ≈ 0.406, ~812 of 2000.
        assert!((700..930).contains(&threes), "{threes}");
        assert!((p.log_pdf(3.0).exp() - 13.0 / 32.0).abs() < 1e-12);
    }
}
