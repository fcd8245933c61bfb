"""Regret of Optuna's samplers on hypersweep's synthetic objective (issue 12's benchmark).

Setup: ffv3; lr log-uniform 0.001-1, hidden int 16-256 (log), dropout uniform 0-0.5; 40 trials
of 1 epoch, one after another; seeds 1-10. val_acc at epoch e is q * (1 - 0.5^e) with
q = 0.9 - 0.05 (log10 lr + 1.3)^2 - 0.1 ((hidden - 96) / 128)^2 - 0.2 (dropout - 0.1)^2;
regret = 0.45 - the best val_acc found (0.45 is the true maximum after one epoch; the script
checks it first). Our own samplers on the same setup:
`cargo run -p search --release --example regret`.

Never run by CI. Optuna goes in a venv of its own, not in .deps:

    python3 -m venv /tmp/optuna-venv && /tmp/optuna-venv/bin/pip install optuna
    /tmp/optuna-venv/bin/python benches/search_regret.py [--seeds 1-10] [--trials 40]

Measured (Optuna 5.0.0, numpy 2.4.6; median regret, seeds 1-10 / 1-600):
    optuna random            0.001513 /    -      hypersweep random             0.002639 / 0.003027
    optuna tpe independent   0.001362 / 0.000826  hypersweep tpe                0.000966 / 0.000865
    optuna tpe default       0.000311 / 0.000435  hypersweep tpe multivariate   0.000414 / 0.000417
"""

import argparse
import math
import statistics

import optuna


def val_acc(lr, hidden, dropout, epoch=1):
    q = (
        0.9
        - 0.05 * (math.log10(lr) + 1.3) ** 2
        - 0.1 * ((hidden - 96) / 128) ** 2
        - 0.2 * (dropout - 0.1) ** 2
    )
    return q * (1 - 0.5**epoch)


def check_optimum():
    """The three penalties are separate squares: maximise each over its own range."""
    lrs = [10 ** (-3 + 3 * i / 30000) for i in range(30001)]
    best_lr = max(lrs, key=lambda lr: -((math.log10(lr) + 1.3) ** 2))
    best_hidden = max(range(16, 257), key=lambda h: -(((h - 96) / 128) ** 2))
    best_dropout = max((0.5 * i / 50000 for i in range(50001)), key=lambda d: -((d - 0.1) ** 2))
    best = val_acc(best_lr, best_hidden, best_dropout)
    exact = val_acc(10**-1.3, 96, 0.1)
    print(
        f"true maximum after 1 epoch: {exact!r} at lr=10^-1.3={10**-1.3:.5f}, hidden=96, "
        f"dropout=0.1 (grid search: {best:.12f} at lr={best_lr:.5f}, hidden={best_hidden}, "
        f"dropout={best_dropout:.4f})"
    )
    assert abs(exact - 0.45) < 1e-12 and best <= exact + 1e-12
    return 0.45


def best_value(sampler, trials):
    study = optuna.create_study(direction="maximize", sampler=sampler)

    def objective(trial):
        lr = trial.suggest_float("lr", 0.001, 1.0, log=True)
        hidden = trial.suggest_int("hidden", 16, 256, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        return val_acc(lr, hidden, dropout)

    study.optimize(objective, n_trials=trials)
    return study.best_value


SAMPLERS = [
    ("optuna random", lambda seed: optuna.samplers.RandomSampler(seed=seed)),
    # The TPE of the sweep format: independent per parameter (Optuna's default before 5.0).
    (
        "optuna tpe independent",
        lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=False),
    ),
    # TPESampler() as Optuna 5.0 defaults it for one objective: multivariate=True.
    ("optuna tpe default", lambda seed: optuna.samplers.TPESampler(seed=seed)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-10", help="A-B, inclusive (default 1-10)")
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    first, last = (int(s) for s in args.seeds.split("-"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimum = check_optimum()
    print(
        f"optuna {optuna.__version__}, 1 epoch, {args.trials} trials, seeds {first}-{last}; "
        f"regret = {optimum} - best val_acc"
    )
    print(f"{'method':<24} {'median_regret':>14} {'mean_regret':>12}")
    for name, make in SAMPLERS:
        regrets = [
            optimum - best_value(make(seed), args.trials) for seed in range(first, last + 1)
        ]
        print(
            f"{name:<24} {statistics.median(regrets):>14.6f} {statistics.fmean(regrets):>12.6f}"
        )


if __name__ == "__main__":
    main()
