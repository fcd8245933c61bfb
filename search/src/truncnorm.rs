//! The truncated normal distribution in log space: its log-density, the log of a normal's mass
//! over an interval, and its quantile function (for sampling by inversion).
//!
//! Written by hand after Optuna's `samplers/_tpe/_truncnorm.py` (itself from SciPy), because
//! TPE needs these computed in log space far into the tails (a kernel's bounds can lie 100
//! standard deviations away) and no small crate offers that: `statrs` has a normal but neither
//! the log-space mass nor the truncated quantile, and pulls in `nalgebra`. `libm` supplies
//! `erf`/`erfc`. Bounds `a`, `b` are in standard units: `(bound - mu) / sigma`.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// `ln(sqrt(2π))`.
const LOG_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// The standard normal CDF, with `erfc` in the tails where `1 + erf` would cancel.
fn ndtr(a: f64) -> f64 {
    let x = a * FRAC_1_SQRT_2;
    if x < -FRAC_1_SQRT_2 {
        0.5 * libm::erfc(-x)
    } else if x < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        1.0 - 0.5 * libm::erfc(x)
    }
}

/// `ln Φ(a)`, accurate far into the left tail (an asymptotic series below -20).
pub(crate) fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        return -ndtr(-a);
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    let log_lhs = -0.5 * a * a - (-a).ln() - 0.5 * (2.0 * PI).ln();
    let (mut last_total, mut rhs, mut numerator, mut denom_factor) = (0.0f64, 1.0f64, 1.0, 1.0);
    let denom_cons = 1.0 / (a * a);
    let mut sign = 1.0;
    let mut i = 0.0;
    while (last_total - rhs).abs() > f64::EPSILON {
        i += 1.0;
        last_total = rhs;
        sign = -sign;
        denom_factor *= denom_cons;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom_factor;
    }
    log_lhs + rhs.ln()
}

/// `ln(e^p + e^q)`.
fn log_sum(p: f64, q: f64) -> f64 {
    let m = p.max(q);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + (-(p - q).abs()).exp().ln_1p()
}

/// `ln(e^p - e^q)` for `p >= q`.
fn log_diff(p: f64, q: f64) -> f64 {
    p + (-(q - p).exp()).ln_1p()
}

/// `ln(Φ(b) - Φ(a))`: the log of a standard normal's mass over `[a, b]`, computed in whichever
/// tail keeps it accurate.
pub(crate) fn log_gauss_mass(a: f64, b: f64) -> f64 {
    if b <= 0.0 {
        log_diff(log_ndtr(b), log_ndtr(a))
    } else if a > 0.0 {
        log_diff(log_ndtr(-a), log_ndtr(-b))
    } else {
        (-ndtr(a) - ndtr(-b)).ln_1p()
    }
}

/// The `x` with `ln Φ(x) = y` (`y <= 0`), by Newton's method from an asymptotic first guess.
fn ndtri_exp(y: f64) -> f64 {
    // Near y = 0 solve for -x in the other tail, where ln Φ is accurate.
    let flipped = y > -1e-2;
    let z = if flipped { (-y.exp_m1()).ln() } else { y };
    let mut x = if z < -5.0 {
        -(-2.0 * (z + LOG_SQRT_2PI)).sqrt()
    } else {
        -(3f64.sqrt() / PI) * (-z).exp_m1().ln()
    };
    for _ in 0..100 {
        let log_ndtr_x = log_ndtr(x);
        let log_pdf_x = -0.5 * x * x - LOG_SQRT_2PI;
        let dx = (log_ndtr_x - z) * (log_ndtr_x - log_pdf_x).exp();
        x -= dx;
        if dx.abs() < 1e-8 * x.abs() {
            break;
        }
    }
    if flipped {
        -x
    } else {
        x
    }
}

/// The quantile `q` of the standard normal truncated to `[a, b]`, clamped into `[a, b]`
/// (Newton's last step may overshoot a bound by an ulp).
pub(crate) fn ppf(q: f64, a: f64, b: f64) -> f64 {
    if a == b {
        return f64::NAN;
    }
    if q <= 0.0 {
        return a;
    }
    if q >= 1.0 {
        return b;
    }
    let log_mass = log_gauss_mass(a, b);
    let x = if a < 0.0 {
        ndtri_exp(log_sum(log_ndtr(a), q.ln() + log_mass))
    } else {
        -ndtri_exp(log_sum(log_ndtr(-b), (-q).ln_1p() + log_mass))
    };
    x.clamp(a, b)
}

/// The log-density at `x` of a normal `(mu, sigma)` truncated to `[low, high]`; `-inf` outside.
pub(crate) fn log_pdf(x: f64, mu: f64, sigma: f64, low: f64, high: f64) -> f64 {
    if x < low || x > high {
        return f64::NEG_INFINITY;
    }
    let z = (x - mu) / sigma;
    let (a, b) = ((low - mu) / sigma, (high - mu) / sigma);
    -0.5 * z * z - LOG_SQRT_2PI - log_gauss_mass(a, b) - sigma.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn log_ndtr_matches_known_values_into_the_far_tail() {
        // Reference values from mpmath at 40 digits: log(ncdf(a)).
        for (a, want) in [
            (0.0, -std::f64::consts::LN_2),
            (-1.0, -1.841_021_645_009_263_5),
            (3.0, -0.001_350_809_964_748_193_8),
            (-10.0, -53.231_285_150_512_47),
            (-20.5, -214.066_728_963_263_8),
            (-100.0, -5_005.524_208_694_205),
        ] {
            assert!(
                close(log_ndtr(a), want, 1e-12),
                "log_ndtr({a}) = {}",
                log_ndtr(a)
            );
        }
    }

    #[test]
    fn the_mass_of_a_whole_line_is_one_and_of_a_far_interval_is_tiny_but_finite() {
        assert!(log_gauss_mass(-40.0, 40.0).abs() < 1e-15);
        assert!(close(
            log_gauss_mass(-1.0, 1.0),
            0.682_689_492_137_085_9f64.ln(),
            1e-13
        ));
        let far = log_gauss_mass(50.0, 51.0);
        assert!(close(far, -1_254.831_361_139_419_9, 1e-12), "{far}");
        assert!(close(far, log_gauss_mass(-51.0, -50.0), 1e-14));
    }

    #[test]
    fn ppf_inverts_the_truncated_cdf() {
        for (a, b) in [
            (-1.0, 2.0),
            (0.5, 3.0),
            (-60.0, -58.0),
            (-0.1, 0.1),
            (-3.0, 90.0),
        ] {
            for q in [1e-9, 0.01, 0.3, 0.5, 0.77, 0.999_999] {
                let x = ppf(q, a, b);
                assert!((a..=b).contains(&x), "ppf({q}, {a}, {b}) = {x}");
                // The truncated CDF at x, (Φ(x) - Φ(a)) / (Φ(b) - Φ(a)), is q. (Newton stops
                // at a relative step of 1e-8 in x, as Optuna's does, so compare probabilities.)
                let cdf = (log_gauss_mass(a, x) - log_gauss_mass(a, b)).exp();
                assert!((cdf - q).abs() < 1e-7, "q={q} a={a} b={b}: cdf {cdf}");
            }
        }
        assert_eq!(ppf(0.0, -1.0, 1.0), -1.0);
        assert!(ppf(0.5, 1.0, 1.0).is_nan());
    }

    #[test]
    fn log_pdf_integrates_to_one() {
        let (mu, sigma, low, high) = (0.3, 0.2, 0.0, 1.0);
        let n = 100_000;
        let h = (high - low) / n as f64;
        let total: f64 = (0..n)
            .map(|i| log_pdf(low + (i as f64 + 0.5) * h, mu, sigma, low, high).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert_eq!(log_pdf(1.5, mu, sigma, low, high), f64::NEG_INFINITY);
    }
}
