"""ASHA on a lab4-like space (issue 12's benchmark): the same 27 random trials run in full
and under ASHA, per seed; epochs spent, best validation accuracy, wall time.

Space: arch ffv1 or ffv2, hidden int 32-128, lr log-uniform 0.01-0.5, 20 epochs, batch 64,
validation 0.1, the full Fashion-MNIST; 27 random trials (`search = "random"`, seeded by the
sweep's seed: both runs of a seed train the same trials); 2 local workers of 1 thread (the
machine's 2 cores); ASHA `grace = 1, reduction = 3` (rungs at epochs 1, 3, 9). Seeds 1-3.

    python3 benches/asha_lab4.py --coordinator target/release/coordinator \\
        --worker target/release/worker --out bench-results/asha [--seeds 1-3]

Never run by CI (about 10 minutes per seed on 2 cores).
"""

import argparse
import os
import subprocess
import time

SWEEP = """name = "{name}"
seed = {seed}
[defaults]
epochs = 20
batch_size = 64
validation = 0.1
[[experiment]]
name = "lab4"
search = "random"
trials = 27
arch = ["ffv1", "ffv2"]
hidden = {{ int = [32, 128] }}
lr = {{ loguniform = [0.01, 0.5] }}
{stop}"""


def run(args, seed, asha):
    name = f"asha-{seed}" if asha else f"full-{seed}"
    results = os.path.join(args.out, name)
    sweep = results + ".toml"
    stop = "stop = { asha = { grace = 1, reduction = 3 } }\n" if asha else ""
    with open(sweep, "w") as f:
        f.write(SWEEP.format(name=name, seed=seed, stop=stop))
    cmd = [args.coordinator, "run", sweep, "--results", results, "--fresh",
           "--local-workers", "2", "--threads", "1", "--plain", "--no-report"]
    env = dict(os.environ, HYPERSWEEP_WORKER=args.worker, RUST_LOG="warn")
    done = os.path.join(results, "trials.parquet")
    if args.keep and os.path.exists(done) and os.path.exists(results + ".wall"):
        wall = float(open(results + ".wall").read())  # a finished run of an earlier call
    else:
        t = time.perf_counter()
        with open(results + ".log", "w") as log:
            # Exit 1: some trials failed (a high lr can diverge to NaN, a failure without a
            # divergence rule); they count as they are, in both runs of a seed.
            rc = subprocess.run(cmd, env=env, stdout=log, stderr=log).returncode
        if rc not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)}: exit {rc}, see {results}.log")
        wall = time.perf_counter() - t
        with open(results + ".wall", "w") as f:
            f.write(f"{wall}")
    q = (f"SELECT count(*), sum(epochs_done), max(best_val_acc), "
         f"count(*) FILTER (status = 'stopped'), count(*) FILTER (status = 'failed'), "
         f"string_agg(trial_id, ' ' ORDER BY trial_id) FROM '{done}'")
    out = subprocess.run([args.duckdb, "-csv", "-noheader", "-c", q], check=True,
                         capture_output=True, text=True).stdout.strip()
    trials, epochs, best, stopped, failed, ids = out.split(",")
    return {"trials": int(trials), "epochs": int(epochs), "best": float(best),
            "stopped": int(stopped), "failed": int(failed), "ids": ids, "wall": wall}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coordinator", default="target/release/coordinator")
    p.add_argument("--worker", default="target/release/worker")
    p.add_argument("--duckdb", default=".deps/venv/bin/duckdb")
    p.add_argument("--out", default="bench-results/asha")
    p.add_argument("--seeds", default="1-3")
    p.add_argument("--keep", action="store_true",
                   help="reuse the finished runs an earlier call left in --out")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    first, last = (int(s) for s in args.seeds.split("-"))
    print("| seed | trials | epochs in full | epochs under ASHA | ratio | stopped | failed (full / ASHA) | best val_acc in full | best val_acc under ASHA | difference (points) | wall full (s) | wall ASHA (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in range(first, last + 1):
        full, asha = run(args, seed, False), run(args, seed, True)
        assert full["ids"] == asha["ids"], "both runs of a seed must train the same trials"
        print(f"| {seed} | {full['trials']} | {full['epochs']} | {asha['epochs']} | "
              f"{asha['epochs'] / full['epochs']:.2f} | {asha['stopped']} | "
              f"{full['failed']} / {asha['failed']} | {full['best']:.4f} | "
              f"{asha['best']:.4f} | {100 * (asha['best'] - full['best']):+.2f} | "
              f"{full['wall']:.0f} | {asha['wall']:.0f} |", flush=True)
    print(f"\nmachine: {os.cpu_count()} cores; 2 local workers of 1 thread; full Fashion-MNIST")


if __name__ == "__main__":
    main()
