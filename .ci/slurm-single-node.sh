#!/usr/bin/env bash
# A real single-node Slurm cluster (Debian's slurmctld + slurmd + munge, no systemd, no
# cgroups, no accounting) for the Slurm job-array test. Needs root.
#
#   .ci/slurm-single-node.sh install   # apt-get the packages (slurmctld slurmd slurm-client munge)
#   .ci/slurm-single-node.sh up        # start munged, slurmctld, slurmd; wait for the node to be idle
#   .ci/slurm-single-node.sh down      # stop the daemons this script started (by pid file)
#
# State, logs and pid files live in $CLEF_SLURM_DIR (default /tmp/clef-slurm).
set -euo pipefail
DIR="${CLEF_SLURM_DIR:-/tmp/clef-slurm}"
HOST="$(hostname -s)"

install_packages() {
    export DEBIAN_FRONTEND=noninteractive
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
        apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge \
            || { apt-get update && apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge; }
    fi
}

start_munge() {
    if munge -n >/dev/null 2>&1; then
        return
    fi
    if [ ! -f /etc/munge/munge.key ]; then
        mungekey --create
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n >/dev/null 2>&1 && return; sleep 0.1; done
    echo "munged did not start" >&2
    exit 1
}

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    local mem
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    cat > /etc/slurm/slurm.conf <<CONF
ClusterName=clef
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

up() {
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "slurm: already up"
        return
    fi
    start_munge
    write_conf
    slurmctld -c
    slurmd
    for _ in $(seq 100); do
        if sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then
            echo "slurm: up (node ${HOST})"
            return
        fi
        sleep 0.2
    done
    echo "slurm: the node did not become idle; logs in $DIR/log" >&2
    exit 1
}

down() {
    for f in "$DIR/slurmd.pid" "$DIR/slurmctld.pid"; do
        if [ -f "$f" ]; then
            kill "$(cat "$f")" 2>/dev/null || true
            rm -f "$f"
        fi
    done
}

case "${1:-}" in
    install) install_packages ;;
    up) up ;;
    down) down ;;
    *) echo "usage: $0 install|up|down" >&2; exit 2 ;;
esac
