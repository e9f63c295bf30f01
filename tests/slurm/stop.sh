#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh started, by their pid files, and nothing else.
set -u
DIR=${FIBSEG_SLURM_DIR:-/tmp/fibseg-slurm}
for pidfile in "$DIR"/run/{slurmd,slurmctld,slurmdbd}.pid "$DIR"/mysql/mariadb.pid "$DIR"/run/munged.pid; do
  [[ -s $pidfile ]] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null && for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$pidfile"
done
echo "[slurm-harness] stopped"
