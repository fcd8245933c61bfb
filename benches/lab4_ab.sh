#!/usr/bin/env bash
# lab4 wall time of two builds side by side (issue 13's comparison): runs
# `coordinator run sweeps/lab4.toml` with each build's coordinator and worker, one after the
# other in the order new, old, old, new, and prints wall and CPU seconds per run. Never run by
# CI. Build the old release in a worktree of its own, e.g.:
#   git worktree add --detach ../old 0125048 && (cd ../old && cargo build --release)
#   bash benches/lab4_ab.sh ../old/target/release target/release [--train-limit 15000]
# Extra arguments go to both `coordinator run`s. Results: bench-results/lab4-ab/<run>/.
set -euo pipefail
cd "$(dirname "$0")/.."
(($# >= 2)) || {
    echo "usage: $0 OLD_RELEASE_DIR NEW_RELEASE_DIR [coordinator run flags...]" >&2
    exit 2
}
old=$(realpath "$1") new=$(realpath "$2")
shift 2
out=bench-results/lab4-ab
mkdir -p "$out"
echo "| run | wall (s) | user + sys (s) | load average before |"
echo "|---|---|---|---|"
for run in new1 old1 old2 new2; do
    case $run in new*) bin=$new ;; old*) bin=$old ;; esac
    rm -rf "${out:?}/$run"
    load=$(cut -d' ' -f1 /proc/loadavg)
    HYPERSWEEP_WORKER=$bin/worker /usr/bin/time -f "%e %U %S" -o "$out/$run.time" \
        "$bin/coordinator" run sweeps/lab4.toml --results "$out/$run" --plain "$@" \
        >"$out/$run.out" 2>"$out/$run.err"
    read -r wall user sys <"$out/$run.time"
    echo "| $run | $wall | $(awk "BEGIN { print $user + $sys }") | $load |"
done
