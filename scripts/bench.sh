#!/usr/bin/env bash
# Benchmarks (never part of CI; timings are published in README with the machine they ran on).
#
#   bash scripts/bench.sh train   seconds/epoch + peak RSS: worker vs the notebook's PyTorch loop
#                                 vs PyTorch from memory (ffv0 h32, cnn h10, full data), at 1 and 2
#                                 threads, alternating (BENCH_THREADS, BENCH_REPEATS, BENCH_EPOCHS)
#   bash scripts/bench.sh cnn     TinyVGG's training step in libtorch several ways (NCHW,
#                                 channels-last, direct oneDNN, im2col) vs PyTorch NCHW and
#                                 channels_last, random data, alternating (worker/examples/cnn_variants.rs)
#   bash scripts/bench.sh lab4    wall time + coordinator peak RSS of `coordinator run sweeps/lab4.toml`
#   bash scripts/bench.sh overhead  10,000 no-op trials through the real gRPC path, 8 workers
#   bash scripts/bench.sh check   `coordinator check` of a generated 100,000-trial sweep: time, RSS
#   bash scripts/bench.sh load    200 simulated workers leasing and reporting for 60 s against one
#                                 coordinator (benches/load.sh): reports/s, latency, none lost;
#                                 LOAD_METRICS=1: with --metrics-listen, scraped every second
#   bash scripts/bench.sh regret  issue 12: regret of random search and TPE through `coordinator
#                                 run` (objective = "synthetic", 40 trials, seeds 1-10) against
#                                 Optuna 4.x (TPESampler() independent) and 5.x (multivariate),
#                                 each in a venv of its own under bench-results/ (benches/search_regret.py)
#   bash scripts/bench.sh asha    issue 12: ASHA on a lab4-like space, 27 random trials of 20
#                                 epochs, 2 local workers, seeds 1-3, against the same trials in
#                                 full: epochs spent, best validation accuracy (benches/asha_lab4.py)
#
# Output goes to bench-results/ (git-ignored). The PyTorch reference needs Python torch 2.11.0
# + torchvision 0.26.0: installed into .deps/bench-venv on first use (~2.7 GB of wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p worker -p coordinator
mkdir -p bench-results
data=$(pwd)/data/fashion-mnist
threads=${BENCH_THREADS:-1,$(nproc)}

bench_python() {
    if ! .deps/bench-venv/bin/python -c 'import torch, torchvision' 2>/dev/null; then
        python3 -m venv .deps/bench-venv
        .deps/bench-venv/bin/pip install -q torch==2.11.0 torchvision==0.26.0 numpy
    fi
    echo .deps/bench-venv/bin/python
}

case "${1:-}" in
    train)
        py=$(bench_python)
        "$py" benches/train_speed.py --worker target/release/worker --python "$py" \
            --data-dir "$data" --threads "$threads" --epochs "${BENCH_EPOCHS:-3}" \
            --repeats "${BENCH_REPEATS:-2}" --impls "${BENCH_IMPLS:-worker,memory,notebook}" \
            --json-out bench-results/train_speed.json | tee bench-results/train_speed.md
        ;;
    cnn)
        cargo build --release --locked -p worker --example cnn_variants
        py=$(bench_python)
        "$py" benches/cnn_speed.py --example target/release/examples/cnn_variants --python "$py" \
            --threads "$threads" --repeats "${BENCH_REPEATS:-3}" \
            --json-out bench-results/cnn_speed.json | tee bench-results/cnn_speed.md
        ;;
    lab4)
        rm -rf bench-results/lab4
        /usr/bin/env python3 benches/sweep_wall.py --coordinator target/release/coordinator \
            --sweep sweeps/lab4.toml --results bench-results/lab4 | tee bench-results/lab4.md
        ;;
    overhead)
        python3 benches/overhead.py --coordinator target/release/coordinator \
            --trials "${BENCH_TRIALS:-10000}" --workers "${BENCH_WORKERS:-8}" | tee bench-results/overhead.md
        ;;
    check)
        python3 benches/check_big.py --coordinator target/release/coordinator --trials 100000 | tee bench-results/check.md
        ;;
    load)
        cargo build --release --locked -p tests --bin loadgen
        LOAD_BIN_DIR=target/release bash benches/load.sh | tee bench-results/load.md
        ;;
    regret)
        # Optuna stays out of .deps: one venv per major version, pinned.
        for v in 4 5; do
            venv=bench-results/optuna$v-venv
            if ! "$venv/bin/python" -c 'import optuna' 2>/dev/null; then
                python3 -m venv "$venv"
                "$venv/bin/pip" install -q "optuna>=$v,<$((v + 1))"
            fi
        done
        python3 benches/search_regret.py --part hypersweep > bench-results/regret-hypersweep.jsonl
        bench-results/optuna4-venv/bin/python benches/search_regret.py --part optuna > bench-results/regret-optuna4.jsonl
        bench-results/optuna5-venv/bin/python benches/search_regret.py --part optuna > bench-results/regret-optuna5.jsonl
        python3 benches/search_regret.py --table bench-results/regret-hypersweep.jsonl \
            bench-results/regret-optuna4.jsonl bench-results/regret-optuna5.jsonl | tee bench-results/regret.md
        ;;
    asha)
        python3 benches/asha_lab4.py --out bench-results/asha --seeds "${BENCH_SEEDS:-1-3}" | tee bench-results/asha.md
        ;;
    *)
        echo "usage: $0 train|cnn|lab4|overhead|check|load|regret|asha" >&2
        exit 2
        ;;
esac
