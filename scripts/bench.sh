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
#                                 coordinator (benches/load.sh): reports/s, latency, none lost
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
    *)
        echo "usage: $0 train|cnn|lab4|overhead|check|load" >&2
        exit 2
        ;;
esac
