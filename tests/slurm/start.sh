#!/usr/bin/env bash
# Start a real single-node SLURM (22.05 from Debian) on this machine, for the live-SLURM test.
# Runs as root. Everything listens on loopback; accounting (slurmdbd + MariaDB on a socket)
# makes `sacct` work, which snakemake-executor-plugin-slurm uses for job status.
#   FIBSEG_SLURM_DIR  state, logs and pid files (default /tmp/fibseg-slurm)
#   PARTITION         the single partition (default debug)
# Stop with tests/slurm/stop.sh. Idempotent: a running daemon is left as it is.
set -euo pipefail
DIR=${FIBSEG_SLURM_DIR:-/tmp/fibseg-slurm}
PARTITION=${PARTITION:-debug}
CLUSTER=fibseg
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
log() { echo "[slurm-harness] $*"; }
fail() { echo "[slurm-harness] ERROR: $*" >&2; exit 1; }
running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
retry() { # retry SECONDS COMMAND...: until the command succeeds
  local limit=$1; shift
  for ((t = 0; t < limit * 4; t++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}
[[ $(id -u) == 0 ]] || fail "must run as root"

packages=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  # no init system here: forbid the packages' scripts to start services
  policy_made=0
  [[ -e /usr/sbin/policy-rc.d ]] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_made=1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((policy_made)) && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$DIR"/{run,log,ctld,spool,mysql} /run/munge /var/log/munge /var/lib/munge /run/mysqld
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chown mysql:mysql /run/mysqld "$DIR/mysql"

[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key
if ! running "$DIR/run/munged.pid"; then
  chown munge:munge "$DIR/run"
  runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/run/munged.pid"
  retry 15 bash -c 'munge -n | unmunge' || fail "munged did not start"
  chown root:root "$DIR/run"
fi

node=$(hostname -s)
hardware=$(slurmd -C | head -1)
memory=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
cat >"$CONF" <<CONFIG
ClusterName=$CLUSTER
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
MailProg=/bin/true
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment
MinJobAge=300
InactiveLimit=0
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 $(sed 's/^NodeName=[^ ]* //; s/RealMemory=[0-9]*/RealMemory='$((memory * 9 / 10))'/' <<<"$hardware") State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONFIG

[[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
if ! running "$DIR/mysql/mariadb.pid"; then
  setsid nohup /usr/sbin/mariadbd --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock \
    --pid-file="$DIR/mysql/mariadb.pid" --log-error="$DIR/mysql/mariadb.err" \
    --innodb-use-native-aio=0 </dev/null >/dev/null 2>&1 &
  retry 60 mariadb -e "select 1" || fail "MariaDB did not start ($DIR/mysql/mariadb.err)"
fi
cat >"$DBD_CONF" <<CONFIG
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=fibseg_slurm_acct
CONFIG
chmod 600 "$DBD_CONF"
if ! running "$DIR/run/slurmdbd.pid"; then
  /usr/sbin/slurmdbd
  retry 60 sacctmgr -n list cluster || fail "slurmdbd did not start ($DIR/log/slurmdbd.log)"
fi
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

if running "$DIR/run/slurmctld.pid"; then
  scontrol reconfigure || true
else
  /usr/sbin/slurmctld -f "$CONF"
  retry 30 bash -c 'scontrol ping | grep -q UP' || fail "slurmctld did not start"
fi
running "$DIR/run/slurmd.pid" || /usr/sbin/slurmd -f "$CONF" -N "$node"

for ((t = 0; t < 120; t++)); do
  state=$(sinfo -h -n "$node" -o %t 2>/dev/null || true)
  case $state in
    idle | mix | alloc) log "ready: node $node, partition $PARTITION, state $state"; exit 0 ;;
    drain* | down*) scontrol update nodename="$node" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
fail "node $node is not ready (state '$state'); see $DIR/log/"
