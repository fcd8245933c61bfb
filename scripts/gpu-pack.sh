#!/usr/bin/env bash
# Builds what scripts/gpu-check.sh needs on a GPU machine that has no Rust toolchain, into one
# git-ignored folder small enough to carry (at most 64 MiB):
#
#   target/gpu-pack/worker.zst        the release worker linked against a CUDA libtorch 2.11.0,
#                                     stripped (~8 MB; ~3 MB compressed)
#   target/gpu-pack/coordinator.zst   the release coordinator, stripped (~26 MB; ~7 MB compressed)
#   target/gpu-pack/data/             Fashion-MNIST's four .gz files (30 MB, as setup.sh has them)
#   target/gpu-pack/MANIFEST.txt      what was built, from which commit, sizes and SHA-256s
#
# usage: bash scripts/gpu-pack.sh [--out DIR]
#
# The worker is built in target/cuda/ (as `bundle-worker.sh cuda` builds it) against the CUDA
# libtorch that `bash scripts/bundle-worker.sh cuda` assembles from the PyPI wheels in
# $BUNDLE_CACHE/libtorch (default .deps-cuda/); run that first if it is not there. On the GPU
# machine the worker loads libtorch from that machine's torch 2.11.0 (LD_LIBRARY_PATH at its
# lib/, set by gpu-check.sh), so no library travels: only the two executables and the data.
# Needs binutils (strip, readelf), zstd and the set-up of scripts/setup.sh.
set -euo pipefail
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out="$root/target/gpu-pack"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) out=${2:?--out needs a folder}; shift ;;
        --out=*) out=${1#*=} ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu-pack: unexpected argument '$1' (usage: bash scripts/gpu-pack.sh [--out DIR])" >&2; exit 1 ;;
    esac
    shift
done
log() { printf 'gpu-pack: %s\n' "$*" >&2; }
die() { printf 'gpu-pack: error: %s\n' "$*" >&2; exit 1; }

for t in strip readelf zstd sha256sum cargo; do
    command -v "$t" >/dev/null || die "missing $t (Debian: apt-get install binutils zstd)"
done
cuda_libtorch=${BUNDLE_CACHE:-$root/.deps-cuda}/libtorch
[[ -f "$cuda_libtorch/lib/libtorch_cuda.so" ]] ||
    die "no CUDA libtorch in $cuda_libtorch: run 'bash scripts/bundle-worker.sh cuda' first (it assembles one from the PyPI wheels), or set BUNDLE_CACHE"
data="$root/data/fashion-mnist"
[[ -f "$data/train-images-idx3-ubyte.gz" ]] || die "no Fashion-MNIST in $data: run 'bash scripts/setup.sh data'"

t0=$SECONDS
target=${CARGO_TARGET_DIR:-$root/target}
log "building the CUDA worker (release, $target/cuda, LIBTORCH=$cuda_libtorch)"
env -u LIBTORCH_USE_PYTORCH LIBTORCH="$cuda_libtorch" CARGO_TARGET_DIR="$target/cuda" \
    cargo build --release --locked -p worker >&2
worker="$target/cuda/release/worker"
readelf -d "$worker" | grep -q 'NEEDED.*\[libtorch_cuda\.so\]' || die "$worker does not link libtorch_cuda.so"
log "building the coordinator (release)"
cargo build --release --locked -p coordinator >&2
coordinator="$target/release/coordinator"

rm -rf "$out.partial"
mkdir -p "$out.partial/data"
for bin in "$worker" "$coordinator"; do
    name=$(basename "$bin")
    strip -o "$out.partial/$name" "$bin"
    zstd -q -19 -T0 --rm "$out.partial/$name" -o "$out.partial/$name.zst"
done
cp "$data"/*.gz "$out.partial/data/"
{
    echo "gpu-pack of $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD || echo ' (with uncommitted changes)'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "worker: $("$worker" --version) (built against $cuda_libtorch)"
    echo "coordinator: $("$coordinator" --version)"
    echo
    (cd "$out.partial" && find . -type f ! -name MANIFEST.txt | sort | xargs sha256sum)
} > "$out.partial/MANIFEST.txt"
rm -rf "$out"
mv "$out.partial" "$out"
size=$(du -sb "$out" | cut -f1)
log "wrote $out: $((size / 1000000)) MB in $((SECONDS - t0)) s"
((size < 64 * 1024 * 1024)) || die "$out is $size bytes, over the 64 MiB a GPU machine can be handed"
du -b "$out"/*.zst "$out"/data/* | sed 's/^/gpu-pack:   /' >&2
echo "$out"
