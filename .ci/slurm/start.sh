#!/usr/bin/env bash
# A single-node SLURM cluster (controller, compute daemon, accounting) for the launcher tests.
# Usage: .ci/slurm/start.sh [start|stop|status]   (default start; idempotent; run as root)
#
# It runs the workplace's checked recipe (../shared/tools/slurm/start-slurm.sh: Debian's
# slurm-wlm + munge + MariaDB/slurmdbd, no systemd) with accounting on: submitit learns of a job
# that died without a result (time limit, scancel, OOM) only through `sacct`.
# MMER_SLURM_RECIPE names another copy of that script.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
recipe=${MMER_SLURM_RECIPE:-$root/../shared/tools/slurm/start-slurm.sh}
action=${1:-start}
case "$action" in start|stop|status) ;; *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;; esac

if [ ! -f "$recipe" ]; then
  echo "ERROR: the SLURM recipe $recipe is missing (set MMER_SLURM_RECIPE to its path)" >&2
  exit 1
fi
if [ "$action" = start ] && [ "$(id -u)" != 0 ]; then
  echo "ERROR: starting the SLURM daemons needs root" >&2
  exit 1
fi
if [ "$action" = start ] && ! { command -v slurmctld && command -v slurmdbd && command -v mariadbd; } >/dev/null 2>&1; then
  # apt's package lists may be absent on a fresh machine: the recipe's apt-get install needs them.
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
fi
SLURM_ACCOUNTING=1 bash "$recipe" "$action"
if [ "$action" = start ]; then
  # Smoke test: a job goes through the queue and accounting records it.
  out=$(srun -N1 -n1 -t 1 hostname 2>&1) || { echo "ERROR: srun failed: $out" >&2; exit 1; }
  echo "slurm ready: srun ran on $out"
fi
