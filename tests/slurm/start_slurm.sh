#!/usr/bin/env bash
# Bring up a private single-node SLURM cluster on this machine, from Debian's packages
# (apt-get install slurmctld slurmd slurm-client munge), for tests/test_slurm.py:
#
#     tests/slurm/start_slurm.sh DIR      # prints "export SLURM_CONF=DIR/slurm.conf" when the node is idle
#     SLURM_CONF=DIR/slurm.conf sbatch ...; squeue; scancel ...
#     tests/slurm/stop_slurm.sh DIR       # stops the daemons by the PIDs recorded in DIR
#
# Everything lives in DIR (config, munge key and socket, state, logs, PID files) and the daemons listen on
# free ports, so it neither needs nor touches /etc/slurm, /etc/munge or a cluster already on the machine.
# One node (this machine's CPUs and memory as `slurmd -C` reports them), one partition `cpu`, no accounting
# daemon (as on the cluster of issue 19: sacct does not work, which submitit tolerates with a warning).
# Runs as root in a container: no cgroups (proctrack/linuxproc, task/none), SlurmUser=SlurmdUser=root.
# A requeued job waits cred_expire seconds before it may start again: SLURM_CRED_EXPIRE (default 120, as on a
# real cluster; the test sets it lower), and then for the scheduler's next pass (every 5 s here; a cluster's
# default is 60 s).
# On any failure the daemons started so far are stopped again and the script exits non-zero.
set -euo pipefail

dir=${1:?usage: start_slurm.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
for exe in munged slurmctld slurmd sbatch squeue scontrol scancel srun; do
  command -v "$exe" >/dev/null || PATH="$PATH:/usr/sbin:/sbin"
  command -v "$exe" >/dev/null || { echo "start_slurm: $exe not found (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 3; }
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/munge" "$dir/ctld" "$dir/spool" "$dir/log"
chmod 700 "$dir/munge"
trap 'echo "start_slurm: failed; logs in $dir/log" >&2; "$here/stop_slurm.sh" "$dir"' ERR

# munge: a fresh key and its own socket (munged refuses keys and directories that others may write)
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host=$(hostname -s)
node=$(slurmd -C | head -1)   # NodeName=<host> CPUs=.. Boards=.. SocketsPerBoard=.. CoresPerSocket=.. ThreadsPerCore=.. RealMemory=..
node=${node#NodeName=* }
cat > "$dir/slurm.conf" <<EOF
ClusterName=biolab-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=${SLURM_CRED_EXPIRE:-120}
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -i          # -i: ignore saved state (a fresh cluster each time)
slurmd
for _ in $(seq 60); do  # the node registers within seconds
  state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
  [ "$state" = idle ] && { trap - ERR; echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
  sleep 1
done
echo "start_slurm: the node did not become idle (state: ${state:-none})" >&2
false
