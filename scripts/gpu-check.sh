#!/usr/bin/env bash
# The GPU check of issue 10, for any GPU machine with a Python torch 2.11.0 and no Rust: runs
# the worker built here (scripts/gpu-pack.sh) against that machine's torch, and writes each
# step's result into the output folder as soon as it has it. Steps 1-3: under 5 minutes on one
# H200 (an estimate: never run on one yet); step 4 adds about 2 more (an estimate too).
#
#   1. ffv0 and cnn train 2 epochs on cuda:0 and on the CPU with the same seed: the test
#      accuracies must be within 2 points (the random streams differ between devices).
#   2. seconds per epoch of ffv0 and cnn on the GPU: the worker (from step 1) beside the same
#      networks in PyTorch on the same GPU with the tensors already there (benches/gpu_torch.py).
#   3. a subset of sweeps/lab4.toml (one trial of each experiment and a second cnn, 2 epochs)
#      with 1 and with 4 local workers on cuda:0: wall time, and each worker's GPU memory (as it
#      reports it per epoch, from NVML, and as nvidia-smi samples it).
#   4. issue 13's fused groups on cuda:0: sweeps/lab4.toml (12,000 training images) fused and
#      with `fuse = false`, and 64 same-shape ffv2 h64 trials as one group of 64 against the
#      same trials unfused: wall times, one local worker.
#
# usage: bash scripts/gpu-check.sh [--pack DIR] [--out DIR] [--python PY] [--torch-lib DIR]
#                                  [--dry-run]
#
#   --pack DIR       what gpu-pack.sh built (default target/gpu-pack)
#   --out DIR        where results go (default $OUT if set, else target/gpu-check)
#   --python PY      a python with torch 2.11.0 (default /opt/torch/.venv/bin/python, else python3)
#   --torch-lib DIR  that torch's lib/ (default: asked of --python), what LD_LIBRARY_PATH gets
#   --dry-run        the same steps on the CPU (--device cpu, small subsets, 1 and 2 workers),
#                    for checking this script on a machine without a GPU; the PyTorch step is
#                    skipped when --python has no torch
#
# Results: 00-env.txt, 01-accuracy.md (+ the epochs as JSON lines), 02-speed.md, 03-lab4.md
# (+ logs and nvidia-smi samples), 04-fuse.md, and summary.md gathering them; exit status 1 when a check
# failed.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
pack="$root/target/gpu-pack"
out=${OUT:-$root/target/gpu-check}
py=""
torch_lib=""
dry=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --pack) pack=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        --python) py=${2:?}; shift ;;
        --torch-lib) torch_lib=${2:?}; shift ;;
        --dry-run) dry=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-check: unexpected argument '$1' (see --help)" >&2; exit 1 ;;
    esac
    shift
done
log() { printf 'gpu-check [%3ds]: %s\n' "$SECONDS" "$*" >&2; }
die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 1; }

if [[ -z "$py" ]]; then
    if [[ -x /opt/torch/.venv/bin/python ]]; then py=/opt/torch/.venv/bin/python; else py=python3; fi
fi
has_torch=1
"$py" -c 'import torch' 2>/dev/null || has_torch=0
if [[ -z "$torch_lib" ]]; then
    ((has_torch)) || die "$py has no torch: give --python PY with torch 2.11.0, or --torch-lib DIR"
    torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
fi
[[ -f "$torch_lib/libtorch_cuda.so" ]] || die "$torch_lib has no libtorch_cuda.so (a CUDA torch 2.11.0's lib/ is needed)"
[[ -f "$pack/worker.zst" && -f "$pack/coordinator.zst" ]] || die "$pack has no worker.zst/coordinator.zst: run 'bash scripts/gpu-pack.sh' where Rust is"

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for bin in worker coordinator; do
    zstd -q -d "$pack/$bin.zst" -o "$work/$bin"
    chmod +x "$work/$bin"
done
data="$pack/data"
failed=0
summary="$out/summary.md"
: > "$summary"
# Appends a result file to the summary as soon as it is written.
publish() { { cat "$1"; echo; } >> "$summary"; log "wrote $1"; }

if ((dry)); then
    dev=cpu subset=(--train-limit 3000 --test-limit 1000) lab4_workers=(1 2) lab4_epochs=1 threads=1
else
    dev=cuda:0 subset=() lab4_workers=(1 4) lab4_epochs=2 threads=$(nproc)
fi
# Every worker and coordinator run loads libtorch from the torch of this machine.
run() { LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }

# --- 0: the machine ----------------------------------------------------------------------
{
    echo "## 0. machine ($(date -u +%Y-%m-%dT%H:%M:%SZ)$( ((dry)) && echo ', DRY RUN on the CPU: no GPU numbers'))"
    echo '```'
    echo "host: $(hostname), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "glibc: $(ldd --version | head -n1)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: none"
    ((has_torch)) && "$py" -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
    echo "torch lib: $torch_lib"
    sed -n 1,3p "$pack/MANIFEST.txt" 2>/dev/null
    echo "worker --version: $(run "$work/worker" --version)"
    missing=$(run ldd "$work/worker" | grep 'not found' || true)
    echo "libraries not found: ${missing:-none}"
    echo '```'
} > "$out/00-env.txt" 2>&1
publish "$out/00-env.txt"
run "$work/worker" --version | grep -q 'cuda build' || die "the packed worker is not a cuda build"
if ! ((dry)); then
    run "$work/worker" train --arch ffv0 --epochs 1 --device cuda:0 --train-limit 64 --test-limit 64 --format json >/dev/null ||
        die "the worker cannot train on cuda:0 (see above)"
fi

# --- 1: accuracy on the GPU against the CPU, same seed --------------------------------------
train() { # arch hidden device -> JSON lines in $out/01-<arch>-<device>.jsonl
    local f="$out/01-$1-${3/:/}.jsonl"
    run "$work/worker" train --arch "$1" --hidden "$2" --lr 0.1 --epochs 2 --seed 55 --validation 0 \
        --device "$3" --threads "$threads" --format json --data-dir "$data" ${subset[@]+"${subset[@]}"} > "$f"
}
for arch in ffv0:32 cnn:10; do
    train "${arch%:*}" "${arch#*:}" "$dev"
    train "${arch%:*}" "${arch#*:}" cpu
done
"$py" - "$out" "$dev" > "$out/01-accuracy.md" <<'EOF' || failed=1
import json, sys
out, dev = sys.argv[1:]
rows, ok = [], True
for arch in ["ffv0", "cnn"]:
    get = lambda d: [json.loads(l) for l in open(f"{out}/01-{arch}-{d.replace(':', '')}.jsonl")]
    g, c = get(dev), get("cpu")
    diff = abs(g[-1]["test_acc"] - c[-1]["test_acc"])
    ok &= diff <= 0.02
    rows.append(f"| {arch} | {g[-1]['test_acc']:.4f} | {c[-1]['test_acc']:.4f} | {100 * diff:.2f} | {'PASS' if diff <= 0.02 else 'FAIL'} |")
print(f"## 1. test accuracy after 2 epochs, seed 55, {dev} against cpu (within 2 points)\n")
print(f"| model | {dev} | cpu | difference (points) | |\n|---|---|---|---|---|")
print("\n".join(rows))
sys.exit(0 if ok else 1)
EOF
publish "$out/01-accuracy.md"

# --- 2: seconds per epoch, worker beside PyTorch on the same device -----------------------
if ((has_torch)); then
    for arch in ffv0:32 cnn:10; do
        "$py" "$root/benches/gpu_torch.py" --arch "${arch%:*}" --hidden "${arch#*:}" --epochs 3 \
            --device "$dev" --threads "$threads" --data-dir "$data" ${subset[@]+"${subset[@]}"} \
            > "$out/02-${arch%:*}-pytorch.jsonl" || failed=1
    done
fi
"$py" - "$out" "$dev" "$has_torch" > "$out/02-speed.md" <<'EOF'
import json, os, sys
out, dev, has_torch = sys.argv[1:]
print(f"## 2. seconds per epoch on {dev} (train on every image, batch 64, + evaluate the test set)\n")
print("| model | worker (tch), epoch 1 / 2 | PyTorch, tensors on the device, epoch 1 / 2 / 3 | worker ÷ PyTorch (last epochs) |\n|---|---|---|---|")
for arch in ["ffv0", "cnn"]:
    w = [json.loads(l)["seconds"] for l in open(f"{out}/01-{arch}-{dev.replace(':', '')}.jsonl")]
    path = f"{out}/02-{arch}-pytorch.jsonl"
    t = [json.loads(l)["seconds"] for l in open(path)] if os.path.exists(path) and os.path.getsize(path) else []
    ratio = f"{w[-1] / t[-1]:.2f}" if t else "n/a"
    tt = " / ".join(f"{s:.2f}" for s in t) if t else ("no torch here" if has_torch == "0" else "failed")
    print(f"| {arch} | {' / '.join(f'{s:.2f}' for s in w)} | {tt} | {ratio} |")
EOF
publish "$out/02-speed.md"

# --- 3: a subset of lab4 with 1 and 4 local workers on the device --------------------------
sweep="$work/lab4-subset.toml"
cat > "$sweep" <<EOF
# sweeps/lab4.toml cut down: one trial of each experiment and a second cnn, $lab4_epochs epoch(s).
name = "lab4-subset"
seed = 55
[defaults]
batch_size = 64
validation = 0.1
epochs = $lab4_epochs
[[experiment]]
name = "base"
arch = "ffv0"
hidden = 32
lr = 0.1
[[experiment]]
name = "grid"
model = [{ arch = "ffv1", hidden = 32 }, { arch = "ffv2", hidden = 32 }, { arch = "ffv2", hidden = 64 }]
lr = 0.1
[[experiment]]
name = "dropout"
arch = "ffv3"
hidden = 64
dropout = 0.25
lr = 0.1
[[experiment]]
name = "cnn"
arch = "cnn"
hidden = 10
lr = [0.05, 0.1]
EOF
{
    echo "## 3. lab4 subset ($(grep -c '^\[\[experiment' "$sweep") experiments, 7 trials, $lab4_epochs epoch(s) each) on $dev"
    echo
    echo "| local workers | wall time (s) | GPU memory per worker, max of its epochs (MiB, NVML) | nvidia-smi max per process (MiB) |"
    echo "|---|---|---|---|"
} > "$out/03-lab4.md"
for n in "${lab4_workers[@]}"; do
    res="$work/lab4-$n"
    smi=""
    if command -v nvidia-smi >/dev/null; then
        smi="$out/03-nvidia-smi-$n.csv"
        nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 500 > "$smi" 2>/dev/null &
        smi_pid=$!
    fi
    t=$SECONDS
    if ! run env HYPERSWEEP_WORKER="$work/worker" "$work/coordinator" run "$sweep" --results "$res" \
        --local-workers "$n" --device "$dev" --threads $((threads / n > 0 ? threads / n : 1)) --plain --no-report \
        --data-dir "$data" ${subset[@]+"${subset[@]}"} > "$out/03-lab4-$n.txt" 2>&1; then
        failed=1
    fi
    wall=$((SECONDS - t))
    if [[ -n "$smi" ]]; then
        kill "$smi_pid" 2>/dev/null || true
        wait "$smi_pid" 2>/dev/null || true
    fi
    mkdir -p "$out/03-logs-$n"
    cp "$res"/logs/*.log "$out/03-logs-$n/" 2>/dev/null || true
    per_worker=$(for l in "$res"/logs/worker-*.log; do
        grep -o 'gpu_memory=[0-9]*' "$l" | cut -d= -f2 | sort -n | tail -n1 | awk '{ printf "%.0f ", $1 / 1048576 }'
        grep -q 'gpu_memory=' "$l" || printf 'none '
    done)
    smi_max=$([[ -n "$smi" ]] && awk -F', ' '{ if ($2 > m[$1]) m[$1] = $2 } END { for (p in m) printf "%s ", m[p] }' "$smi" || echo "no nvidia-smi")
    echo "| $n | $wall | ${per_worker:-none} | ${smi_max:-none} |" >> "$out/03-lab4.md"
    grep -q ' 0 failed' "$out/03-lab4-$n.txt" || { failed=1; echo "(run with $n workers failed: 03-lab4-$n.txt)" >> "$out/03-lab4.md"; }
done
publish "$out/03-lab4.md"

# --- 4: fused against unfused on the device (issue 13) --------------------------------------
# lab4 (every experiment, on a subset of the images) with fusion on, as by default, and with
# `fuse = false`; and a 64-trial same-shape group (ffv2 h64, 64 learning rates) leased to one
# worker of --max-fuse 64 against the same trials unfused. One local worker each time.
fuse_limit=(--train-limit 12000 --test-limit 2000)
((dry)) && fuse_limit=(--train-limit 3000 --test-limit 1000)
fuse64="$work/fuse64.toml"
{
    echo 'name = "fuse64"'
    echo 'seed = 55'
    echo '[defaults]'
    echo 'validation = 0.1'
    echo '[[experiment]]'
    echo 'name = "same-shape"'
    echo 'arch = "ffv2"'
    echo 'hidden = 64'
    echo 'epochs = 2'
    # 64 learning rates, geometric from 0.005 to 0.3.
    echo "lr = [$(awk 'BEGIN { for (i = 0; i < 64; i++) printf "%s%.5f", (i ? ", " : ""), 0.005 * (60 ^ (i / 63)) }')]"
} > "$fuse64"
cp "$root/sweeps/lab4.toml" "$work/lab4.toml"
for sweep in "$work/lab4.toml" "$fuse64"; do
    sed 's/^\[defaults\]$/[defaults]\nfuse = false/' "$sweep" > "${sweep%.toml}-unfused.toml"
done
{
    echo "## 4. fused against unfused on $dev (${fuse_limit[*]}, one local worker)"
    echo
    echo "| sweep | fused (s) | unfused (s) | unfused ÷ fused | trials, epoch rows (fused / unfused) |"
    echo "|---|---|---|---|---|"
} > "$out/04-fuse.md"
# One run of sweep $1 (a file name in $work, without .toml): "seconds trials epochs" into
# $work/fuse-$1.result (trials finished and epochs reported, from the worker's log).
fuse_run() {
    local res="$work/fuse-$1" t
    t=$(date +%s.%N)
    if ! run env HYPERSWEEP_WORKER="$work/worker" "$work/coordinator" run "$work/$1.toml" \
        --results "$res" --local-workers 1 --device "$dev" --threads "$threads" --plain --no-report \
        --worker-arg=--max-fuse=64 --data-dir "$data" "${fuse_limit[@]}" > "$out/04-$1.txt" 2>&1; then
        failed=1
    fi
    mkdir -p "$out/04-logs-$1"
    cp "$res"/logs/*.log "$out/04-logs-$1/" 2>/dev/null || true
    {
        awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f ", b - a }'
        echo "$(cat "$res"/logs/*.log 2>/dev/null | grep -c 'trial finished') $(cat "$res"/logs/*.log 2>/dev/null | grep -c 'epoch finished')"
    } > "$work/fuse-$1.result"
}
for sweep in lab4 fuse64; do
    fuse_run "$sweep"
    fuse_run "$sweep-unfused"
    read -r fused_s fused_trials fused_rows < "$work/fuse-$sweep.result"
    read -r solo_s solo_trials solo_rows < "$work/fuse-$sweep-unfused.result"
    ratio=$(awk -v f="$fused_s" -v u="$solo_s" 'BEGIN { printf "%.2f", f > 0 ? u / f : 0 }')
    echo "| $sweep | $fused_s | $solo_s | $ratio | $fused_trials, $fused_rows / $solo_trials, $solo_rows |" >> "$out/04-fuse.md"
done
publish "$out/04-fuse.md"

log "done in ${SECONDS}s; $( ((failed)) && echo 'SOME CHECKS FAILED' || echo 'every check passed'); summary: $summary"
exit "$failed"
