#!/usr/bin/env bash
# Fused same-shape trials (issue 13) against the same trials trained solo one after another,
# side by side in one process (the example `worker/examples/fused_speed.rs`): throughput in
# trials × epochs per second and every member's epoch-1 validation accuracy, fused and solo,
# for a group of 3 `ffv2` h64 trials (lr 0.05, 0.1, 0.2) and a group of 9 (lr 0.02 … 0.2).
# Rounds alternate the order (solo first, then fused first), so that other load on the
# machine spreads over both. The `ceiling` column is the most fusion could gain on this
# machine: K solo epochs over the time the fused epoch's matrix products take alone
# (`--floor` of the example). Never part of CI.
#
#   bash benches/fused_speed.sh
#
# Environment: FUSED_THREADS (2), FUSED_EPOCHS (2), FUSED_ROUNDS (2), FUSED_KS ("3 9"),
# FUSED_PROFILE (release; "dev" runs the debug build's example, whose dependencies and
# libtorch are optimised as in release: what the README's figures used while a release build
# was out of reach).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${FUSED_THREADS:-2}
epochs=${FUSED_EPOCHS:-2}
rounds=${FUSED_ROUNDS:-2}
ks=${FUSED_KS:-3 9}
if [[ ${FUSED_PROFILE:-release} == dev ]]; then
    nice cargo build -q -p worker --example fused_speed
    bin=target/debug/examples/fused_speed
else
    nice cargo build --release -q -p worker --example fused_speed
    bin=target/release/examples/fused_speed
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for k in $ks; do
    "$bin" --k "$k" --threads "$threads" --epochs "$epochs" \
        --rounds "$rounds" --floor >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# floor lines: seconds per epoch of a fused group's matrix products alone (--floor).
import os
print(f"machine: {open('/proc/cpuinfo').read().split('model name')[1].split(':')[1].splitlines()[0].strip()}, "
      f"{os.cpu_count()} cores, load average {open('/proc/loadavg').read().split()[0]} at the end, "
      f"{runs[0]['threads']} threads, {runs[0]['epochs']} epochs per trial, full data (54,000 train)")
print(f"{'K':>3} {'solo trial-epochs/s':>20} {'fused trial-epochs/s':>21} {'speed-up':>9} {'ceiling':>8} {'max |val_acc fused - solo| (epoch 1)':>38}")
for k in sorted({r['k'] for r in runs}):
    floor = next(r['seconds_per_epoch'] for r in runs if r['k'] == k and r['mode'] == 'floor')
    solo = [r for r in runs if r['k'] == k and r['mode'] == 'solo']
    fused = [r for r in runs if r['k'] == k and r['mode'] == 'fused']
    s = statistics.median(r['throughput'] for r in solo)
    f = statistics.median(r['throughput'] for r in fused)
    gap = max(abs(a - b) for x, y in zip(solo, fused) for a, b in zip(x['val_acc_epoch1'], y['val_acc_epoch1']))
    rounds = ", ".join(f"{x['throughput']:.2f}/{y['throughput']:.2f}" for x, y in zip(solo, fused))
    # The most fusion could gain: K solo epochs over the fused epoch's matrix products alone.
    ceiling = k / s / floor
    print(f"{k:>3} {s:>20.2f} {f:>21.2f} {f / s:>8.2f}x {ceiling:>7.2f}x {gap:>38.4f}   (rounds solo/fused: {rounds})")
    # Each member's gap, largest over the rounds: high learning rates are chaotic at epoch 1.
    gaps = [max(abs(x['val_acc_epoch1'][i] - y['val_acc_epoch1'][i]) for x, y in zip(solo, fused))
            for i in range(k)]
    print("      per member, lr: |val_acc fused - solo|  " +
          ", ".join(f"{lr:g}: {g:.4f}" for lr, g in zip(solo[0]['lrs'], gaps)))
PY
