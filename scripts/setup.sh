#!/usr/bin/env bash
# Sets up everything hypersweep needs on a fresh Debian machine that has Rust,
# Python 3 with pip and apt, into project-local, git-ignored folders:
#
#   .deps/libtorch   CPU libtorch 2.11.0 extracted from PyPI wheels (what tch 0.24.0 expects)
#   data/fashion-mnist  the four original Fashion-MNIST IDX files (gzip, from Debian's package)
#   .deps/venv       a Python venv with the DuckDB CLI (PyPI duckdb-cli) for reading results
#
# Each step is skipped when its output is already there. Override with:
#   LIBTORCH=/path           use an existing libtorch 2.11.0 (no download)
#   LIBTORCH_USE_PYTORCH=1   use the Python torch 2.11.0 of the current python3 (no download)
#   FASHION_MNIST_DIR=/path  use IDX files from that folder (no download)
#   SETUP_SKIP_DUCKDB=1      skip the DuckDB CLI
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps="$root/.deps"
mkdir -p "$deps"

log() { printf 'setup: %s\n' "$*" >&2; }

TORCH_VERSION=2.11.0
CUDA_RUNTIME_VERSION=13.0.96
CUPTI_VERSION=13.0.85
PY=${PYTHON:-python3}

pip_download() {
    # Binary wheels for manylinux x86_64, whatever python runs pip.
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$1" "${@:2}"
}

setup_libtorch() {
    if [[ -n "${LIBTORCH:-}" ]]; then
        log "using LIBTORCH=$LIBTORCH"
        return
    fi
    if [[ -n "${LIBTORCH_USE_PYTORCH:-}" ]]; then
        log "using the Python torch of $PY (LIBTORCH_USE_PYTORCH)"
        return
    fi
    local dest="$deps/libtorch"
    if [[ -f "$dest/build-version" && "$(cat "$dest/build-version")" == "$TORCH_VERSION" && -f "$dest/lib/libtorch_cpu.so" ]]; then
        log "libtorch $TORCH_VERSION already in $dest"
        return
    fi
    local tmp="$deps/wheels"
    mkdir -p "$tmp"
    log "fetching torch==$TORCH_VERSION and CUDA runtime wheels from PyPI into $tmp"
    pip_download "$tmp" "torch==$TORCH_VERSION" \
        "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial/lib"
    local whl
    whl=$(ls "$tmp"/torch-"$TORCH_VERSION"-*.whl | head -n1)
    log "extracting libtorch from $(basename "$whl")"
    # Headers and the shared libraries a tch binary links and loads on CPU.
    "$PY" - "$whl" "$dest.partial" <<'EOF'
import sys, zipfile, os, shutil
whl, dest = sys.argv[1], sys.argv[2]
keep_libs = ("libtorch.so", "libtorch_cpu.so", "libc10.so", "libgomp")
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        name = info.filename
        if name.startswith("torch/include/") and not name.endswith("/"):
            out = os.path.join(dest, name[len("torch/"):])
        elif name.startswith("torch/lib/") and os.path.basename(name).startswith(keep_libs):
            out = os.path.join(dest, "lib", os.path.basename(name))
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
EOF
    local w
    for w in "$tmp"/nvidia_cuda_runtime-*.whl "$tmp"/nvidia_cuda_cupti-*.whl; do
        "$PY" - "$w" "$dest.partial/lib" <<'EOF'
import sys, zipfile, os, shutil
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        base = os.path.basename(info.filename)
        if base.startswith(("libcudart.so", "libcupti.so")):
            with z.open(info) as src, open(os.path.join(dest, base), "wb") as dst:
                shutil.copyfileobj(src, dst)
EOF
    done
    echo "$TORCH_VERSION" > "$dest.partial/build-version"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    rm -rf "$tmp"
    log "libtorch $TORCH_VERSION ready in $dest ($(du -sh "$dest" | cut -f1))"
}

setup_fashion_mnist() {
    local dest="$root/data/fashion-mnist"
    local files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
    local have=1 f
    for f in "${files[@]}"; do
        [[ -f "$dest/$f.gz" || -f "$dest/$f" ]] || have=0
    done
    if [[ $have == 1 ]]; then
        log "Fashion-MNIST already in $dest"
        return
    fi
    mkdir -p "$dest"
    local src=""
    if [[ -n "${FASHION_MNIST_DIR:-}" ]]; then
        log "using FASHION_MNIST_DIR=$FASHION_MNIST_DIR (the worker reads it directly)"
        return
    elif [[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
        src=/usr/share/datasets/fashion-mnist
    elif command -v apt-get >/dev/null; then
        log "fetching Debian's dataset-fashion-mnist package"
        local tmp
        tmp=$(mktemp -d)
        (cd "$tmp" && { apt-get download dataset-fashion-mnist >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get download dataset-fashion-mnist >/dev/null; }; })
        dpkg-deb --fsys-tarfile "$tmp"/dataset-fashion-mnist_*.deb | tar -x -C "$tmp"
        src="$tmp/usr/share/datasets/fashion-mnist"
    fi
    if [[ -n "$src" ]]; then
        for f in "${files[@]}"; do cp "$src/$f.gz" "$dest/"; done
    else
        log "downloading Fashion-MNIST from its canonical address"
        for f in "${files[@]}"; do
            curl -fsSL -o "$dest/$f.gz" "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/$f.gz"
        done
    fi
    log "Fashion-MNIST ready in $dest (checksums are verified by the worker on load)"
}

setup_duckdb() {
    [[ -n "${SETUP_SKIP_DUCKDB:-}" ]] && return
    if [[ -x "$deps/venv/bin/duckdb" ]]; then
        log "DuckDB CLI already in $deps/venv/bin"
        return
    fi
    log "installing the DuckDB CLI (PyPI duckdb-cli) into $deps/venv"
    "$PY" -m venv "$deps/venv"
    "$deps/venv/bin/pip" install --quiet duckdb-cli
}

case "${1:-all}" in
    libtorch) setup_libtorch ;;
    data) setup_fashion_mnist ;;
    duckdb) setup_duckdb ;;
    all)
        setup_libtorch
        setup_fashion_mnist
        setup_duckdb
        ;;
    *) echo "usage: $0 [all|libtorch|data|duckdb]" >&2; exit 2 ;;
esac
