#!/usr/bin/env bash
# Fault injection in one command: builds the debug binaries (the profile CI tests) and runs
#
# Each is a module of a crate's one integration-test binary, selected by its module path.
#
#   faults      tests/tests/faults.rs   workers and the coordinator kill -9ed five times each
#                                       mid-sweep; results equal an uninterrupted run; a
#                                       `--slots 2` worker gives the same numbers and its slot
#                                       processes die with it
#   netns       tests/tests/netns.rs    a worker's network link cut mid-trial for longer than
#                                       the lease timeout, across network namespaces (root)
#   load        tests/tests/load.rs     200 simulated workers, then kill -9: no acknowledged
#                                       report lost or duplicated
#   sweep_fuzz  coordinator/tests/sweep_fuzz.rs with PROPTEST_CASES=$FUZZ_CASES (20000)
#
# then prints one line per step (PASS/FAIL, seconds, what it reported). Every step runs even
# when an earlier one failed; the exit status is 1 if any failed. Logs: target/fault-injection/.
#
#   bash scripts/fault-injection.sh
#   FUZZ_CASES=100000 bash scripts/fault-injection.sh
#   HYPERSWEEP_SKIP_NETNS=1 bash scripts/fault-injection.sh   # not root: netns says SKIPPED
#
# Needs `bash scripts/setup.sh` first (libtorch, data, DuckDB), like scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d .deps/libtorch && -z "${LIBTORCH:-}" && -z "${LIBTORCH_USE_PYTORCH:-}" ]]; then
    echo "scripts/fault-injection.sh: no libtorch yet, running scripts/setup.sh first" >&2
    bash scripts/setup.sh || exit 1
fi
export PATH="$PWD/.deps/venv/bin:$PATH"
# Tests start several training processes at once: one libtorch thread each.
export OMP_NUM_THREADS=1
fuzz_cases=${FUZZ_CASES:-20000}
logs=target/fault-injection
mkdir -p "$logs"

echo "::: building (debug): coordinator, worker, loadgen and the test binaries"
cargo build --locked -p coordinator -p worker -p tests || exit 1
cargo test --locked --no-run -p tests --test integration || exit 1
cargo test --locked --no-run -p coordinator --test integration || exit 1

summary=()
failed=0
step() { # name, then the command
    local name=$1
    shift
    echo "::: $name: $*"
    local t0 t1 secs status note cases
    t0=$(date +%s.%N)
    "$@" 2>&1 | tee "$logs/$name.log"
    status=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    note=$(grep -E '^(test result|netns:|load:|SKIPPED)' "$logs/$name.log" | grep -v '^test result: ok. 0 passed' | tr '\n' ' ' | cut -c1-300)
    # The fuzz test prints `Tally { ok: N, err: M }` per generator.
    cases=$(awk -F'[:,}]' '/^Tally/ { n += $2 + $4 } END { print n + 0 }' "$logs/$name.log")
    [[ $cases == 0 ]] || note="$cases generated sweep files; $note"
    if [[ $status == 0 ]]; then
        summary+=("$(printf 'PASS  %-10s %7s s  %s' "$name" "$secs" "$note")")
    else
        failed=1
        summary+=("$(printf 'FAIL  %-10s %7s s  %s (log: %s)' "$name" "$secs" "$note" "$logs/$name.log")")
    fi
}

step faults cargo test --locked -p tests --test integration faults::
step netns cargo test --locked -p tests --test integration netns:: -- --nocapture
step load cargo test --locked -p tests --test integration load:: -- --nocapture
# PROPTEST_CASES reaches the fuzz tests only: the filter runs nothing else.
step sweep_fuzz env PROPTEST_CASES="$fuzz_cases" cargo test --locked -p coordinator --test integration sweep_fuzz:: -- --nocapture

echo
echo "fault injection summary (debug build, $(getconf _NPROCESSORS_ONLN) cores, PROPTEST_CASES=$fuzz_cases):"
printf '  %s\n' "${summary[@]}"
exit $failed
