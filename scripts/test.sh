#!/usr/bin/env bash
# The whole test suite: unit tests, real training on a subset of Fashion-MNIST, and
# end-to-end sweeps with a real coordinator, real worker processes and the DuckDB CLI.
# Needs `bash scripts/setup.sh` first (libtorch, data, DuckDB).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -d .deps/libtorch && -z "${LIBTORCH:-}" && -z "${LIBTORCH_USE_PYTORCH:-}" ]]; then
    echo "scripts/test.sh: no libtorch yet, running scripts/setup.sh first" >&2
    bash scripts/setup.sh
fi
export PATH="$PWD/.deps/venv/bin:$PATH"
# Tests start several training processes at once: one libtorch thread each.
export OMP_NUM_THREADS=1
# The multi-host test (tests/tests/netns.rs) builds network namespaces: it needs root and
# iproute2. Without root it is skipped here, loudly; as root (CI) it must run.
if [[ "$(id -u)" != 0 && -z "${HYPERSWEEP_SKIP_NETNS:-}" ]]; then
    echo "scripts/test.sh: not root, the netns multi-host test will be SKIPPED (run as root to include it)" >&2
    export HYPERSWEEP_SKIP_NETNS=1
fi
exec cargo test --workspace --locked "$@"
