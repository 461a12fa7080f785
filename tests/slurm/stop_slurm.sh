#!/usr/bin/env bash
# Stop the cluster that start_slurm.sh DIR started: slurmd, slurmctld and munged, each by the PID in its
# PID file in DIR (never by name, so other SLURM or munge daemons on the machine are left alone).
# First cancels the jobs still in that cluster's queue and waits (up to 60 s) for them to end, so that no job
# step (slurmstepd and the job's processes) outlives the daemons. Waits until each daemon has exited (SIGKILL
# after 20 s). Safe to call twice or after a partial start. Exit status 1 when something had to be killed.
set -uo pipefail
dir=${1:?usage: stop_slurm.sh DIR}
dir=$(cd "$dir" && pwd)
status=0
export SLURM_CONF="$dir/slurm.conf"
PATH="$PATH:/usr/sbin:/sbin"
if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  scancel --user="$(id -un)" 2>/dev/null
  for _ in $(seq 60); do
    [ -z "$(squeue --noheader --states=PENDING,RUNNING,COMPLETING,SUSPENDED,REQUEUED 2>/dev/null)" ] && break
    sleep 1
  done
fi
for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stop_slurm: $pidfile ($pid) ignored SIGTERM; killing it" >&2
      kill -KILL "$pid"
      status=1
    fi
  fi
  rm -f "$pidfile"
done
# job steps of this cluster that survived (they carry its SLURM_CONF in their environment): by PID
for env in /proc/[0-9]*/environ; do
  pid=${env#/proc/}; pid=${pid%/environ}
  [ "$pid" = $$ ] && continue
  if [ "$(tr -d '\0' < "/proc/$pid/comm" 2>/dev/null)" = slurmstepd ] \
      && tr '\0' '\n' < "$env" 2>/dev/null | grep -qx "SLURM_CONF=$SLURM_CONF"; then
    echo "stop_slurm: killing leftover slurmstepd $pid" >&2
    kill -KILL "$pid" 2>/dev/null
    status=1
  fi
done
exit $status
