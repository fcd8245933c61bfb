#!/usr/bin/env bash
# A real single-node Slurm on this machine, for trying deploy/slurm/ and for the tests in
# tests/tests/slurm.rs: munged, slurmctld and slurmd from Debian's packages (`slurm-wlm`,
# `munge`; `bash scripts/ci-tools.sh` installs them), with every file they write under one
# folder and nothing under /etc touched.
#
#   bash scripts/slurm-local.sh up [DIR]     start (or find running) munged, slurmctld, slurmd
#   bash scripts/slurm-local.sh down [DIR]   cancel every job, stop the three daemons
#
# DIR defaults to $TMPDIR/hypersweep-slurm. `up` prints `export SLURM_CONF=DIR/slurm.conf`:
# sbatch, srun, squeue and sinfo find this Slurm through it. Both commands are idempotent.
# Needs root (slurmd starts job steps as the submitting user). Ports: SLURM_LOCAL_CTLD_PORT
# (default 6817) and SLURM_LOCAL_D_PORT (6818); give others to run two side by side.
#
# No cgroups and no systemd: processes are tracked through /proc (proctrack/linuxproc) and
# tasks are not bound to CPUs (task/none), the configuration shared/FACTS.md records as
# working on these machines. CPUs are counted (select/cons_tres, CR_CPU); memory is not.
set -euo pipefail

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

cmd=${1:-}
dir=${2:-${TMPDIR:-/tmp}/hypersweep-slurm}
ctld_port=${SLURM_LOCAL_CTLD_PORT:-6817}
d_port=${SLURM_LOCAL_D_PORT:-6818}

# The pid a daemon recorded in FILE, if that process is alive.
alive_pid() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Sends TERM to the daemons of the pid files given (name=file), all at once (each takes a
# second or two to go), waits up to 10 s for them, then KILLs what is left.
stop_daemons() {
    local spec name file pid left=() _
    for spec in "$@"; do
        name=${spec%%=*} file=${spec#*=}
        if pid=$(alive_pid "$file"); then
            kill -TERM "$pid" 2>/dev/null || true
            left+=("$name=$pid")
        fi
        rm -f "$file"
    done
    ((${#left[@]} == 0)) || log "stopping ${left[*]}"
    for _ in $(seq 100); do
        local still=()
        for spec in "${left[@]}"; do
            kill -0 "${spec#*=}" 2>/dev/null && still+=("$spec")
        done
        left=("${still[@]}")
        ((${#left[@]} == 0)) && break
        sleep 0.1
    done
    for spec in "${left[@]}"; do
        log "${spec%%=*} (pid ${spec#*=}) ignored SIGTERM for 10 s: SIGKILL"
        kill -KILL "${spec#*=}" 2>/dev/null || true
    done
}

need_tools() {
    local missing=() t
    for t in munged mungekey slurmctld slurmd sinfo sbatch srun scancel; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]}: apt-get install slurm-wlm munge (or bash scripts/ci-tools.sh)"
    [[ $(id -u) == 0 ]] || die "needs root: slurmd starts job steps as the submitting user"
}

write_conf() {
    local host cpus
    host=$(hostname -s)
    cpus=$(nproc --all)
    cat >"$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a single-node Slurm whose files are all under $dir.
ClusterName=hypersweep
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Pending jobs are looked at every second or two, not every minute (a requeued job waits for
# the next pass once its begin time has come).
SchedulerParameters=sched_interval=1,bf_interval=2
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
# Cancelled and requeued jobs die within seconds (tests cancel jobs mid-sweep).
KillWait=5
# sbatch --wait polls every 2 s only while MinJobAge/2 exceeds that (else every 8, then 32 s);
# a finished job's record is kept for 4 s, which is as long as any caller here needs it.
MinJobAge=4
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if alive_pid "$dir/munge/munged.pid" >/dev/null; then
        return
    fi
    # munged checks permissions: its socket's folder must be searchable by all, its key 0600.
    install -d -m 0755 "$dir/munge"
    if [[ ! -f $dir/munge/munge.key ]]; then
        mungekey --create --keyfile="$dir/munge/munge.key"
        chmod 0600 "$dir/munge/munge.key"
    fi
    munged --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/munged.seed" ||
        die "munged did not start; see $dir/munge/munged.log"
    log "munged up (socket $dir/munge/munge.socket)"
}

# Waits up to 30 s for the node to take jobs.
wait_idle() {
    local state=""
    for _ in $(seq 300); do
        state=$(SLURM_CONF="$dir/slurm.conf" sinfo -h -N -o %t 2>/dev/null | head -n1 || true)
        case $state in
        idle | mix | alloc) return 0 ;;
        esac
        sleep 0.1
    done
    die "the node is '${state:-not answering}' after 30 s; see $dir/log/slurmctld.log and $dir/log/slurmd.log"
}

up() {
    need_tools
    if alive_pid "$dir/run/slurmctld.pid" >/dev/null && alive_pid "$dir/run/slurmd.pid" >/dev/null &&
        alive_pid "$dir/munge/munged.pid" >/dev/null; then
        log "already up in $dir"
        wait_idle
        echo "export SLURM_CONF=$dir/slurm.conf"
        return
    fi
    # Half up (a daemon died): start over from a clean state.
    down_daemons
    install -d -m 0755 "$dir" "$dir/run" "$dir/log" "$dir/spool" "$dir/spool/ctld" "$dir/spool/d"
    write_conf
    start_munge
    # -c: no state from an earlier run (jobs, node states) is recovered.
    slurmctld -c -f "$dir/slurm.conf" || die "slurmctld did not start; see $dir/log/slurmctld.log"
    slurmd -f "$dir/slurm.conf" || die "slurmd did not start; see $dir/log/slurmd.log"
    wait_idle
    log "slurm up: node $(hostname -s), $(nproc --all) CPUs, ports $ctld_port/$d_port, files in $dir"
    echo "export SLURM_CONF=$dir/slurm.conf"
}

down_daemons() {
    stop_daemons slurmd="$dir/run/slurmd.pid" slurmctld="$dir/run/slurmctld.pid" munged="$dir/munge/munged.pid"
}

down() {
    if alive_pid "$dir/run/slurmctld.pid" >/dev/null; then
        # Jobs first, so that no job step outlives slurmd.
        local jobs
        jobs=$(SLURM_CONF="$dir/slurm.conf" squeue -h -o %A 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086 # one id per word
            SLURM_CONF="$dir/slurm.conf" scancel --full $jobs 2>/dev/null || true
            log "cancelled jobs ${jobs//$'\n'/ }"
        fi
        for _ in $(seq 100); do
            [[ -z $(SLURM_CONF="$dir/slurm.conf" squeue -h -t running,completing 2>/dev/null) ]] && break
            sleep 0.1
        done
    fi
    down_daemons
    log "down ($dir)"
}

case $cmd in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down [DIR]   (DIR default: \$TMPDIR/hypersweep-slurm)" >&2
    exit 2
    ;;
esac
