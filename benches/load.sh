#!/usr/bin/env bash
# Load: N simulated workers (`loadgen`, one gRPC connection each) lease and report against one
# coordinator for S seconds; prints loadgen's JSON summary (held throughput, report latency)
# and the coordinator's CPU time and peak RSS. Then checks that no acknowledged report was
# lost: the coordinator is killed with SIGKILL, started again on the same results folder, and
# every (trial, epoch) loadgen was told was recorded must be in epochs/*.parquet exactly once,
# with nothing else there.
#
#   bash benches/load.sh            # via `bash scripts/bench.sh load`, which builds release first
#
# Environment: LOAD_BIN_DIR (target/release), LOAD_WORKERS (200), LOAD_SECONDS (60),
# LOAD_CHECKPOINT_BYTES (1024), LOAD_TRIALS_LR / LOAD_TRIALS_SEEDS (400 / 100: 3 archs × lr ×
# seeds trials of 3 epochs, 120,000 trials by default; the script stops if the sweep runs
# out). Compare runs of the same sweep size only: trials.parquet rewrites and lease expiry
# still walk every trial. LOAD_METRICS=1: the coordinator also serves --metrics-listen, and a
# scraper fetches /metrics every second meanwhile (its count, latency and size are printed),
# to measure what the metrics cost; run it with and without, side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${LOAD_BIN_DIR:-target/release}
workers=${LOAD_WORKERS:-200}
seconds=${LOAD_SECONDS:-60}
ckpt=${LOAD_CHECKPOINT_BYTES:-1024}
n_lr=${LOAD_TRIALS_LR:-400}
n_seeds=${LOAD_TRIALS_SEEDS:-100}
duckdb=.deps/venv/bin/duckdb
[[ -x $duckdb ]] || duckdb=duckdb
for b in coordinator loadgen; do
    [[ -x $bin/$b ]] || { echo "benches/load.sh: $bin/$b not built" >&2; exit 2; }
done

tmp=$(mktemp -d)
coord_pid=
cleanup() {
    if [[ -n ${scraper_pid:-} ]]; then kill "$scraper_pid" 2>/dev/null || true; fi
    if [[ -n $coord_pid ]]; then kill -9 "$coord_pid" 2>/dev/null || true; wait "$coord_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

python3 - "$tmp/load.toml" "$n_lr" "$n_seeds" <<'EOF'
import sys
path, n_lr, n_seeds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lrs = ", ".join(f"{0.0001 * (i + 1):.4f}" for i in range(n_lr))
seeds = ", ".join(str(i) for i in range(n_seeds))
with open(path, "w") as f:
    f.write(f'name = "load"\nseed = 1\n[defaults]\nepochs = 3\n[[experiment]]\nname = "load"\n'
            f'arch = ["ffv0", "ffv1", "ffv2"]\nlr = [{lrs}]\nseed = [{seeds}]\n')
EOF
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
results=$tmp/results
metrics=()
if [[ ${LOAD_METRICS:-0} == 1 ]]; then
    metrics_port=$(free_port)
    metrics=(--metrics-listen "127.0.0.1:$metrics_port")
fi

start_coordinator() {
    RUST_LOG=warn "$bin/coordinator" run "$tmp/load.toml" --results "$results" --local-workers 0 \
        --listen "127.0.0.1:$port" "${metrics[@]}" --plain --no-report >/dev/null 2>>"$tmp/coordinator.log" &
    coord_pid=$!
}
# Scrapes /metrics every second until stopped; prints the count, latency and size at the end.
scrape_every_second() {
    # exec: the background job's pid is Python's, so that stopping it stops the scraper.
    exec python3 - "$1" <<'EOF'
import signal, statistics, sys, time, urllib.request
url, took, size = sys.argv[1], [], 0
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
try:
    while True:
        t = time.monotonic()
        try:
            size = len(urllib.request.urlopen(url, timeout=10).read())
            took.append(time.monotonic() - t)
        except OSError:
            pass
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
finally:
    if took:
        print(f"metrics: {len(took)} scrapes, {statistics.median(took) * 1000:.1f} ms median, "
              f"{max(took) * 1000:.1f} ms max, {size / 1024:.0f} KiB each", flush=True)
EOF
}
cpu_seconds() { # utime + stime of a process, in seconds
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"
}

trials=$("$bin/coordinator" check "$tmp/load.toml" --quiet)
start_coordinator
scraper_pid=
if ((${#metrics[@]})); then
    scrape_every_second "http://127.0.0.1:$metrics_port/metrics" >"$tmp/scrapes.txt" &
    scraper_pid=$!
fi
cpu0=$(cpu_seconds "$coord_pid")
"$bin/loadgen" --coordinator "http://127.0.0.1:$port" --workers "$workers" --seconds "$seconds" \
    --checkpoint-bytes "$ckpt" --acked-out "$tmp/acked.csv" >"$tmp/summary.json" || {
    cat "$tmp/summary.json"
    echo "benches/load.sh: loadgen reported errors; coordinator log:" >&2
    tail -20 "$tmp/coordinator.log" >&2
    exit 1
}
if ! kill -0 "$coord_pid" 2>/dev/null; then
    cat "$tmp/summary.json"
    echo "benches/load.sh: the sweep ran out (the coordinator finished): raise LOAD_TRIALS_LR/LOAD_TRIALS_SEEDS" >&2
    exit 1
fi
cpu1=$(cpu_seconds "$coord_pid")
hwm=$(awk '/^VmHWM/ { print $2 / 1024 }' "/proc/$coord_pid/status")
if [[ -n $scraper_pid ]]; then
    kill -TERM "$scraper_pid"
    wait "$scraper_pid" 2>/dev/null || true
    scraper_pid=
    cat "$tmp/scrapes.txt"
fi
cat "$tmp/summary.json"
elapsed=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["elapsed_s"])' "$tmp/summary.json")
reports=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["reports_acked"])' "$tmp/summary.json")
python3 -c 'import sys; c = float(sys.argv[2]) - float(sys.argv[1]); print(f"coordinator: {c:.1f} CPU s over {float(sys.argv[3]):.1f} s ({100 * c / float(sys.argv[3]):.0f}% of one core), peak RSS {float(sys.argv[4]):.0f} MB")' \
    "$cpu0" "$cpu1" "$elapsed" "$hwm"
echo "sweep: $trials"

# No report lost: kill -9, start again, wait for Parquet to hold every acknowledged report.
kill -9 "$coord_pid"; wait "$coord_pid" 2>/dev/null || true; coord_pid=
missing() {
    if ! compgen -G "$results/epochs/*.parquet" >/dev/null; then echo "$reports"; return; fi
    "$duckdb" -csv -noheader -c "SELECT count(*) FROM read_csv('$tmp/acked.csv') a ANTI JOIN '$results/epochs/*.parquet' e USING (trial_id, epoch)"
}
at_kill=$(missing)
start_coordinator
for _ in $(seq 240); do
    [[ $(missing) == 0 ]] && break
    sleep 0.25
done
check=$("$duckdb" -csv -noheader -c "SELECT count(*), count(DISTINCT (trial_id, epoch)), \
    (SELECT count(*) FROM (SELECT trial_id, epoch FROM '$results/epochs/*.parquet' EXCEPT SELECT trial_id, epoch FROM read_csv('$tmp/acked.csv'))) \
    FROM '$results/epochs/*.parquet'")
left=$(missing)
echo "after kill -9 and restart: $left of $reports acknowledged reports missing from Parquet ($at_kill were only in the state at the kill); rows, distinct (trial, epoch), rows not acknowledged: $check"
echo "machine: $(getconf _NPROCESSORS_ONLN) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); binaries: $bin"
if [[ $left != 0 || $check != "$reports,$reports,0" ]]; then
    echo "LOST OR EXTRA REPORTS" >&2
    exit 1
fi
