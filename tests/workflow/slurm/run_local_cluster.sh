#!/usr/bin/env bash
# Run a workflow through a real, throw-away, one-node SLURM cluster on this machine.
#
#   tests/workflow/slurm/run_local_cluster.sh WORKDIR [-- COMMAND ...]
#
# 1. Installs Debian's slurmctld, slurmd, slurm-client and munge if they are missing.
# 2. Re-runs itself as PID 1 of new network, mount and PID namespaces:
#    - network: loopback only (the daemons bind every address; they must not see the host's);
#    - mount: our slurm.conf is bind-mounted over /etc/slurm (the plugin's job step strips
#      SLURM_CONF, so it must be at the default path); the host's /etc/slurm stays untouched;
#    - PID: when this script ends, the kernel ends every process left in the namespace (job
#      steps of a failed run), so nothing outlives it and nothing outside it is ever touched.
# 3. Starts munged, slurmctld and slurmd (one node that claims 16 CPUs and 128 GB, the size of
#    a compute node, so the profile's real requests are accepted), waits for it to be idle.
# 4. Runs COMMAND (default: tests/workflow/slurm/reduced_demo.sh slurm WORKDIR/slurm_run, the reduced
#    pathfuse demo through workflow/profiles/slurm), output in WORKDIR/workflow.log.
# 5. Checks the jobs went through sbatch: every "SLURM jobid N" of the log is listed as
#    COMPLETED by `squeue --states=all` (written to WORKDIR/squeue.txt), and there is one at least.
# 6. On any exit (trap): cancels queued jobs, asks the daemons to shut down, then stops each
#    daemon it started by its PID (TERM, KILL after 5 s).
#
# Exit status: COMMAND's status if it failed, 1 if a check failed, 0 on success, and 77 when
# this machine cannot host the cluster (not root, no apt-get, no namespaces, daemons do not
# come up): tests/workflow/test_slurm.py turns 77 into a skip with the reason printed on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
CANNOT=77

cannot() { echo "run_local_cluster: cannot set up SLURM here: $*" >&2; exit "$CANNOT"; }
log() { echo "run_local_cluster: $*" >&2; }

# ----------------------------------------------------------------------------- outside
install_packages() {
    local missing=() pkg
    for pkg in slurmctld slurmd slurm-client munge; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || cannot "packages ${missing[*]} missing and no apt-get"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$WORKDIR/apt.log" 2>&1; then
        # A stale package index is the usual cause; refresh it once and retry.
        apt-get update >>"$WORKDIR/apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${missing[@]}" >>"$WORKDIR/apt.log" 2>&1 \
            || cannot "apt-get install ${missing[*]} failed (see $WORKDIR/apt.log)"
    fi
}

NAMESPACES=(--net --mount --propagation private --pid --fork --mount-proc)

outside() {
    [[ $(id -u) -eq 0 ]] || cannot "needs root (daemons, apt-get, namespaces)"
    command -v unshare >/dev/null || cannot "no unshare (util-linux)"
    unshare "${NAMESPACES[@]}" true 2>/dev/null \
        || cannot "cannot create network, mount and PID namespaces (unshare failed)"
    install_packages
    # --kill-child: if we are killed (e.g. a test timeout), the namespace's PID 1 gets TERM and
    # runs its trap.
    exec unshare "${NAMESPACES[@]}" --kill-child=TERM "$0" --inside "$WORKDIR" "${COMMAND[@]}"
}

# ----------------------------------------------------------------------------- inside
PIDS=()       # daemons we started, in start order
MUNGE_DIR=""  # munged's socket and state: a folder the munge user can reach
SCRATCH=""

stop_all() {
    local status=$? pid i
    trap - EXIT INT TERM
    if [[ ${#PIDS[@]} -ge 2 ]]; then
        scancel --user=root >/dev/null 2>&1 || true  # no-op after a clean run
        scontrol shutdown >/dev/null 2>&1 || true    # slurmctld and slurmd exit in ~1 s
    fi
    # Last started first: slurmd, slurmctld, then munged (they authenticate through it).
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $MUNGE_DIR ]]; then
        cp "$MUNGE_DIR/munged.log" "$SCRATCH/log/" 2>/dev/null || true
        rm -rf "$MUNGE_DIR"
    fi
    log "stopped daemons ${PIDS[*]:-none}"
    exit "$status"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... (gives up early if a daemon died)
    local seconds=$1 what=$2 pid; shift 2
    for _ in $(seq $((seconds * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || cannot "a daemon (PID $pid) exited while waiting for $what (logs in $SCRATCH/log)"
        done
        sleep 0.1
    done
    cannot "$what did not come up within ${seconds}s (logs in $SCRATCH/log)"
}

node_idle() { [[ $(sinfo -h -N -o %T 2>/dev/null) == idle ]]; }

start_cluster() {
    ip link set lo up
    # glibc's address check needs a second loopback address, else slurmctld dies with
    # "Address family not supported by protocol".
    ip addr add 127.0.0.2/8 dev lo

    SCRATCH="$WORKDIR/cluster"
    mkdir -p "$SCRATCH"/{etc,spool/ctld,spool/d,run,log}
    # A node the size of a typical compute node (see slurm.conf.in), at least this machine's.
    local cpus=${PATHFUSE_TEST_NODE_CPUS:-16} mem_mb=${PATHFUSE_TEST_NODE_MEM_MB:-131072}
    (( cpus >= $(nproc) )) || cpus=$(nproc)
    # munged runs as user munge, which must be able to walk to its socket: WORKDIR may sit
    # below folders only root can enter (pytest's tmp_path), so it gets a folder in /tmp.
    MUNGE_DIR=$(mktemp -d /tmp/pathfuse-munge.XXXXXX)
    sed -e "s|@SCRATCH@|$SCRATCH|g" -e "s|@MUNGE@|$MUNGE_DIR|g" -e "s|@CPUS@|$cpus|g" \
        -e "s|@MEM_MB@|$mem_mb|g" "$HERE/slurm.conf.in" >"$SCRATCH/etc/slurm.conf"
    [[ -d /etc/slurm ]] || cannot "/etc/slurm missing (reinstall slurm-client)"
    mount --bind "$SCRATCH/etc" /etc/slurm || cannot "bind mount over /etc/slurm failed"

    # munged wants its folder owned by its user, not group/world-writable, and searchable by
    # all (clients connect to the socket in it).
    chown munge:munge "$MUNGE_DIR"
    chmod 0755 "$MUNGE_DIR"
    [[ -f /etc/munge/munge.key ]] || cannot "/etc/munge/munge.key missing (reinstall munge)"
    setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --socket="$MUNGE_DIR/munge.socket" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" >"$SCRATCH/log/munged.out" 2>&1 &
    PIDS+=($!)
    wait_for 10 munged test -S "$MUNGE_DIR/munge.socket"

    # -f names our config on the command line too, so these processes are recognisable.
    slurmctld -D -i -f "$SCRATCH/etc/slurm.conf" >"$SCRATCH/log/slurmctld.out" 2>&1 &
    PIDS+=($!)
    slurmd -D -N localhost -f "$SCRATCH/etc/slurm.conf" >"$SCRATCH/log/slurmd.out" 2>&1 &
    PIDS+=($!)
    wait_for 30 "the SLURM node" node_idle
    log "cluster up: munged, slurmctld, slurmd = PIDs ${PIDS[*]} (in its PID namespace);" \
        "$(sinfo -h -o '%P %D %T %c CPUs %m MB')"
}

check_jobs() {  # every SLURM job id the workflow log names was a COMPLETED sbatch job
    local ids id bad=0
    squeue --states=all --noheader -o '%i %j %T %M' >"$WORKDIR/squeue.txt"
    mapfile -t ids < <(grep -oE 'SLURM jobid [0-9]+' "$WORKDIR/workflow.log" | awk '{print $3}' | sort -un)
    if [[ ${#ids[@]} -eq 0 ]]; then log "FAIL: no 'SLURM jobid' in $WORKDIR/workflow.log"; return 1; fi
    for id in "${ids[@]}"; do
        grep -qE "^$id .* COMPLETED " "$WORKDIR/squeue.txt" \
            || { log "FAIL: job $id is not COMPLETED in squeue --states=all"; bad=1; }
    done
    log "${#ids[@]} sbatch jobs, all COMPLETED: ${ids[*]}"
    return "$bad"
}

inside() {
    # Only ever as PID 1 of the namespaces `outside` made (never on the host itself).
    [[ $$ -eq 1 ]] || cannot "--inside is internal: run the script without it"
    trap stop_all EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    start_cluster
    local start=$SECONDS status=0
    (cd "$REPO" && "${COMMAND[@]}") >"$WORKDIR/workflow.log" 2>&1 || status=$?
    log "workflow finished with status $status in $((SECONDS - start))s (log: $WORKDIR/workflow.log)"
    if [[ $status -ne 0 ]]; then
        tail -n 40 "$WORKDIR/workflow.log" >&2
        exit "$status"
    fi
    check_jobs || exit 1
}

# ----------------------------------------------------------------------------- main
MODE=outside
if [[ ${1:-} == --inside ]]; then MODE=inside; shift; fi
[[ $# -ge 1 ]] || { echo "usage: $0 WORKDIR [-- COMMAND ...]" >&2; exit 2; }
mkdir -p "$1"
WORKDIR="$(cd "$1" && pwd)"
shift
[[ ${1:-} == -- ]] && shift
if [[ $# -gt 0 ]]; then COMMAND=("$@"); else COMMAND=("$HERE/reduced_demo.sh" slurm "$WORKDIR/slurm_run"); fi
"$MODE"
