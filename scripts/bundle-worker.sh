#!/usr/bin/env bash
# Builds a self-contained worker bundle that a bare Linux machine can download, unpack and run:
#
#   dist/hypersweep-worker-<version>-linux-x86_64-<cpu|cuda>.tar.zst
#
# One top folder (named like the file) holding the stripped `worker` and, in lib/, every shared
# library it loads but the system's (glibc, libstdc++, libgcc_s) and the NVIDIA driver's (see
# SYSTEM_LIBS below). The worker finds them through its RUNPATH `$ORIGIN/lib` and each library
# its neighbours through `$ORIGIN`: no Rust, Python or LD_LIBRARY_PATH needed where it runs. No
# dataset is in it: a `worker join` that finds none fetches it from its coordinator and caches it
# in $XDG_CACHE_HOME/hypersweep (worker/src/fetch.rs).
#
# usage: bash scripts/bundle-worker.sh cpu|cuda [--profile release|dev] [--out DIR]
#
#   cpu   the CPU libtorch the worker is built against (scripts/setup.sh's .deps/libtorch, or
#         $LIBTORCH) plus the two small CUDA runtime libraries libtorch_cpu.so loads.
#   cuda  a CUDA libtorch put together from the PyPI wheels torch 2.11.0 installs from (2.5 GB
#         downloaded once into $BUNDLE_CACHE, default .deps-cuda/), built in <target>/cuda/ so
#         that the CPU build's cache survives. Built on demand, never in CI.
#   --profile release  (default) runs `cargo build --release -p worker` first.
#   --profile dev      bundles the debug worker `cargo build` or `cargo test` already built and
#                      builds nothing (tests use it; same as BUNDLE_PROFILE=dev).
#   --out DIR          where the .tar.zst goes (default dist/).
#
# Needs binutils (strip, readelf, objdump), patchelf and zstd (Debian: apt-get install patchelf
# zstd), and python3 for the cuda variant (to unzip wheels). BUNDLE_ZSTD_LEVEL (default 10)
# trades build time for download size.
#
# Why patchelf rather than an rpath chosen at link time: the debug worker the tests have already
# built carries an absolute rpath to the libtorch folder, and relinking it with another rpath
# would be a second build of the worker; the wheels' libraries carry rpaths into Python's
# site-packages layout (`$ORIGIN/../../nvidia/cublas/lib`) that must become `$ORIGIN` too, which
# no link option of ours can do. One tool, on copies, after the build, for both.
set -euo pipefail
# Functions below print their result on stdout and are called as $(...): fail there too.
shopt -s inherit_errexit

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

TORCH_VERSION=2.11.0
# The wheels `pip install torch==2.11.0` pulls in on Linux x86_64 that hold libraries
# libtorch_cuda.so loads (cuda-toolkit 13.0.2's pins for its extras, and torch's own pins).
CUDA_WHEELS=(
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85" "nvidia-cuda-nvrtc==13.0.88.*"
    "nvidia-cublas==13.1.0.3.*" "nvidia-cufft==12.0.0.61.*" "nvidia-cufile==1.15.1.6.*"
    "nvidia-curand==10.4.0.35.*" "nvidia-cusolver==12.0.4.66.*" "nvidia-cusparse==12.6.3.3.*"
    "nvidia-nvjitlink==13.0.88.*" "nvidia-nvtx==13.0.85.*" "nvidia-cudnn-cu13==9.19.0.56"
    "nvidia-cusparselt-cu13==0.8.0" "nvidia-nccl-cu13==2.28.9" "nvidia-nvshmem-cu13==3.4.5"
)
# Libraries loaded with dlopen, which ldd cannot see: cuDNN 9's engines and ops (libcudnn.so.9
# is a shim that loads them), NVRTC (cuDNN's runtime-compiled engines; torch's jiterator through
# libcaffe2_nvrtc.so).
CUDA_DLOPENED=('libcudnn_*.so.9' 'libnvrtc.so.*' 'libnvrtc-builtins.so.*' 'libcaffe2_nvrtc.so')
# Left to the machine that runs the bundle:
# - glibc, which every Linux has and which must match its own loader (the minimum version is
#   printed at the end: 2.34, set by the worker itself);
# - libstdc++ and libgcc_s: the bundle needs GLIBCXX_3.4.26 (GCC 9) at most, which every
#   distribution with glibc >= 2.34 has (RHEL 9 ships GCC 11's, Ubuntu 22.04 GCC 12's), while
#   this Debian 12's libstdc++ itself needs GLIBC_2.36 and would raise the floor for everyone;
# - the NVIDIA driver's libcuda.so.1, which must match the kernel module (cudart loads it with
#   dlopen; libcaffe2_nvrtc.so links it).
# The loader's own variable, written literally into rpaths.
# shellcheck disable=SC2016
ORIGIN='$ORIGIN'
SYSTEM_LIBS=(linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0
    librt.so.1 libutil.so.1 libstdc++.so.6 libgcc_s.so.1)
DRIVER_LIBS=(libcuda.so.1)

log() { printf 'bundle-worker: %s\n' "$*" >&2; }
die() {
    printf 'bundle-worker: error: %s\n' "$*" >&2
    exit 1
}

variant=""
tmp="" # the staging folder, removed on exit
profile=${BUNDLE_PROFILE:-release}
out="$root/dist"
while [[ $# -gt 0 ]]; do
    case "$1" in
        cpu | cuda) variant=$1 ;;
        --profile) profile=${2:?--profile needs release or dev}; shift ;;
        --profile=*) profile=${1#*=} ;;
        --out) out=${2:?--out needs a folder}; shift ;;
        --out=*) out=${1#*=} ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unexpected argument '$1' (usage: bash scripts/bundle-worker.sh cpu|cuda [--profile release|dev] [--out DIR])" ;;
    esac
    shift
done
[[ -n "$variant" ]] || die "say which bundle: bash scripts/bundle-worker.sh cpu|cuda [--profile release|dev] [--out DIR]"
case "$profile" in
    release) profile_dir=release ;;
    dev | debug) profile=dev profile_dir=debug ;;
    *) die "--profile $profile: expected release or dev" ;;
esac

need_tools() {
    local missing=() t
    for t in strip readelf objdump ldd patchelf zstd tar "$@"; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        die "missing ${missing[*]}: on Debian, apt-get install binutils patchelf zstd python3 (libc-bin has ldd)"
    fi
}

pip_download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_25_x86_64 \
        --platform manylinux_2_18_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$1" "${@:2}"
}

# A CUDA libtorch folder (include/, lib/, version.py, build-version) from the PyPI wheels: torch's
# own libraries and headers, and every library of the NVIDIA wheels, all flat in lib/ with
# `$ORIGIN` rpaths, so that a worker built against it runs here as it will in the bundle.
cuda_libtorch() {
    local cache=${BUNDLE_CACHE:-$root/.deps-cuda}
    local dest="$cache/libtorch" wheels="$cache/wheels"
    local stamp="$TORCH_VERSION ${CUDA_WHEELS[*]}"
    if [[ -f "$dest/.complete" && "$(cat "$dest/.complete")" == "$stamp" ]]; then
        log "CUDA libtorch already in $dest"
        echo "$dest"
        return
    fi
    mkdir -p "$wheels"
    log "downloading torch==$TORCH_VERSION and ${#CUDA_WHEELS[@]} NVIDIA wheels from PyPI into $wheels (2.5 GB, once)"
    local t0=$SECONDS
    pip_download "$wheels" "torch==$TORCH_VERSION" "${CUDA_WHEELS[@]}" >&2
    log "downloaded in $((SECONDS - t0)) s: $(du -sh "$wheels" | cut -f1)"
    rm -rf "$dest.partial"
    mkdir -p "$dest.partial/lib"
    python3 - "$wheels" "$dest.partial" "$TORCH_VERSION" <<'EOF' >&2
import glob, os, shutil, sys, zipfile
wheels, dest, version = sys.argv[1:]
def copy(z, info, out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with z.open(info) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
(torch,) = glob.glob(os.path.join(wheels, f"torch-{version}-*.whl"))
with zipfile.ZipFile(torch) as z:
    for info in z.infolist():
        name = info.filename
        base = os.path.basename(name)
        if name.startswith("torch/include/") and not name.endswith("/"):
            copy(z, info, os.path.join(dest, name[len("torch/"):]))
        elif name.startswith("torch/lib/") and ".so" in base and base != "libtorch_python.so":
            copy(z, info, os.path.join(dest, "lib", base))
        elif name == "torch/version.py":
            copy(z, info, os.path.join(dest, "version.py"))
for whl in glob.glob(os.path.join(wheels, "nvidia_*.whl")):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            base = os.path.basename(info.filename)
            if "/lib/" in info.filename and ".so" in base:
                copy(z, info, os.path.join(dest, "lib", base))
EOF
    local so
    for so in "$dest.partial"/lib/*.so*; do
        set_rpath "$so" "$ORIGIN"
    done
    sed -n "s/^__version__ = '\(.*\)'$/\1/p" "$dest.partial/version.py" > "$dest.partial/build-version"
    echo "$stamp" > "$dest.partial/.complete"
    rm -rf "$dest"
    mv "$dest.partial" "$dest"
    log "CUDA libtorch ready in $dest ($(du -sh "$dest" | cut -f1), $(cat "$dest/build-version"))"
    echo "$dest"
}

# Sets an ELF file's rpath, leaving a file that already has exactly that one untouched.
set_rpath() {
    local current
    current=$(patchelf --print-rpath "$1")
    [[ "$current" == "$2" ]] || patchelf --set-rpath "$2" "$1"
}

# Builds (release) or finds (dev) the worker; prints its path.
worker_binary() {
    local target=${CARGO_TARGET_DIR:-$root/target}
    local env=() libtorch
    if [[ $variant == cuda ]]; then
        target="$target/cuda"
        libtorch=$(cuda_libtorch)
        env=(-u LIBTORCH_USE_PYTORCH LIBTORCH="$libtorch")
    elif [[ -z "${LIBTORCH:-}${LIBTORCH_USE_PYTORCH:-}" && ! -f "$root/.deps/libtorch/lib/libtorch_cpu.so" ]]; then
        bash "$root/scripts/setup.sh" libtorch
    fi
    local bin="$target/$profile_dir/worker"
    if [[ $profile == release ]]; then
        log "building the $variant worker (cargo build --release -p worker, target $target)"
        local t0=$SECONDS
        env ${env[@]+"${env[@]}"} CARGO_TARGET_DIR="$target" cargo build --release --locked -p worker >&2
        log "built in $((SECONDS - t0)) s"
    fi
    [[ -x "$bin" ]] || die "$bin is not built: run cargo build -p worker (or cargo test), or use --profile release"
    echo "$bin"
}

# Prints "soname path" for every library ldd resolves for an ELF file, the system's and the
# driver's included; fails on any other that is not found. A machine without the NVIDIA driver
# has no libcuda.so.1 (libcaffe2_nvrtc.so needs it; torch loads that library only on a GPU).
resolved_libs() {
    local out missing
    out=$(env -i PATH=/usr/bin:/bin ldd "$1") || die "ldd $1 failed: $out"
    missing=$(awk '$2 == "=>" && $3 == "not" { print $1 }' <<<"$out" | grep -vxF -f <(printf '%s\n' "${DRIVER_LIBS[@]}") || true)
    [[ -z "$missing" ]] || die "$1 needs libraries that are not found: $(tr '\n' ' ' <<<"$missing")"
    awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' <<<"$out"
}

# glibc's libraries and the NVIDIA driver's, which a bundle never carries.
is_system_lib() {
    local s
    for s in "${SYSTEM_LIBS[@]}" "${DRIVER_LIBS[@]}"; do [[ "$1" == "$s" ]] && return 0; done
    return 1
}

# Copies the worker (stripped) and its libraries into $top, with $ORIGIN rpaths: what ldd
# finds for the worker and, for cuda, for each library loaded with dlopen (cuDNN's engines
# need zlib, which then comes along).
stage() {
    local bin=$1 top=$2 libdir
    libdir=$(dirname "$(readlink -f "$(resolved_libs "$bin" | awk '$1 == "libtorch_cpu.so" { print $2 }')")")
    mkdir -p "$top/lib"
    strip -o "$top/worker" "$bin"
    local roots=("$bin") pattern f soname path
    if [[ $variant == cuda ]]; then
        for pattern in "${CUDA_DLOPENED[@]}"; do
            for f in "$libdir"/$pattern; do
                [[ -e "$f" ]] || die "no $pattern in $libdir"
                cp -L "$f" "$top/lib/"
                roots+=("$f")
            done
        done
    fi
    for f in "${roots[@]}"; do
        while read -r soname path; do
            is_system_lib "$soname" || [[ -e "$top/lib/$soname" ]] || cp -L "$path" "$top/lib/$soname"
        done < <(resolved_libs "$f")
    done
    # Strip first, then patch: strip can undo patchelf's layout.
    set_rpath "$top/worker" "$ORIGIN/lib"
    for f in "$top"/lib/*; do set_rpath "$f" "$ORIGIN"; done
}

# Everything in the bundle resolves inside it or to glibc, and the worker starts under env -i.
check() {
    local top=$1 f soname path bad=()
    for f in "$top/worker" "$top"/lib/*; do
        while read -r soname path; do
            [[ "$path" == "$top"/* ]] || is_system_lib "$soname" || bad+=("$(basename "$f") → $path")
        done < <(resolved_libs "$f")
    done
    [[ ${#bad[@]} -eq 0 ]] || die "libraries resolve outside the bundle:"$'\n'"$(printf '  %s\n' "${bad[@]}")"
    if [[ $variant == cpu ]]; then
        local cuda=()
        for f in "$top"/lib/lib{cu,nv,nccl,torch_cuda,c10_cuda}*; do
            [[ -e "$f" ]] || continue
            case "${f##*/}" in libcudart.so.13 | libcupti.so.13) ;; *) cuda+=("${f##*/}") ;; esac
        done
        [[ ${#cuda[@]} -eq 0 ]] || die "the cpu bundle carries CUDA libraries beyond libcudart and libcupti: ${cuda[*]}"
    fi
    local version
    version=$(cd / && env -i "$top/worker" --version) || die "the bundled worker does not start under env -i"
    [[ "$version" == *"($variant build,"* ]] || die "the bundled worker says '$version', not a $variant build"
    log "$version"
}

# The highest GLIBC_x.y (or GLIBCXX_x.y.z) symbol version any file of the bundle needs.
glibc_needed() {
    objdump -T "$1/worker" "$1"/lib/* 2>/dev/null | grep -o "\b$2_[0-9.]*" | sort -uV | tail -n1
}

main() {
    local extra=()
    [[ $variant == cpu ]] || extra=(python3)
    need_tools ${extra[@]+"${extra[@]}"}
    local t0=$SECONDS bin version name
    bin=$(worker_binary)
    local needs_cuda=no
    readelf -d "$bin" | grep -q 'NEEDED.*\[libtorch_cuda\.so\]' && needs_cuda=yes
    if [[ $variant == cpu && $needs_cuda == yes ]]; then
        die "$bin links libtorch_cuda.so: it was built against a CUDA libtorch (unset LIBTORCH / LIBTORCH_USE_PYTORCH for the cpu bundle)"
    elif [[ $variant == cuda && $needs_cuda == no ]]; then
        die "$bin does not link libtorch_cuda.so"
    fi
    version=$("$bin" --version | awk '{ print $2 }')
    name="hypersweep-worker-$version-linux-x86_64-$variant"
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    tmp=$(mktemp -d "$out/.bundle-$variant.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    log "staging $name from $bin ($profile)"
    stage "$bin" "$tmp/$name"
    check "$tmp/$name"
    local level=${BUNDLE_ZSTD_LEVEL:-10}
    log "compressing (zstd -$level)"
    tar -C "$tmp" --sort=name --owner=0 --group=0 --numeric-owner -cf - "$name" |
        zstd -q -T0 "-$level" -o "$tmp/$name.tar.zst"
    mv -f "$tmp/$name.tar.zst" "$out/$name.tar.zst"
    log "wrote $out/$name.tar.zst: $(du -h "$out/$name.tar.zst" | cut -f1) (unpacked $(du -sh "$tmp/$name" | cut -f1)) in $((SECONDS - t0)) s"
    log "needs glibc >= $(glibc_needed "$tmp/$name" GLIBC | sed 's/GLIBC_//') and libstdc++ with $(glibc_needed "$tmp/$name" GLIBCXX) (the highest symbol versions its files need)"
    echo "$out/$name.tar.zst"
}

main
