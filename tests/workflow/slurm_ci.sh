#!/usr/bin/env bash
# CI: bring up a one-node SLURM with one fake GPU (../shared/tools/local-slurm.sh; root, no systemd needed),
# run the SLURM integration test (which must not skip here), then leave the machine as found: stop the
# daemons if this script started them and remove the packages if it installed them. (Installed SLURM client
# tools without a running controller make every later `snakemake` start wait ~9 s: the SLURM plugin asks
# `scontrol show config` at import.) Usage: bash tests/workflow/slurm_ci.sh   (LOCAL_SLURM=... to override)
set -euo pipefail
cd "$(dirname "$0")/../.."
slurm=${LOCAL_SLURM:-../shared/tools/local-slurm.sh}
[ -f "$slurm" ] || { echo "slurm_ci.sh: $slurm not found (set LOCAL_SLURM)" >&2; exit 1; }
packages="munge slurmctld slurmd slurm-client"

cleanup=()
if ! command -v slurmctld >/dev/null; then
  bash "$slurm" install
  cleanup+=("DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq $packages >/dev/null 2>&1 || true")
fi
status=$(bash "$slurm" status 2>&1 || true)
if grep -q "^running: .*slurmctld" <<<"$status"; then
  echo "slurm_ci.sh: SLURM already running; leaving it up afterwards"
else
  cleanup=("bash '$slurm' down" "${cleanup[@]}")
fi
[ "${#cleanup[@]}" -eq 0 ] || trap 'for c in "${cleanup[@]}"; do eval "$c"; done' EXIT
# its slurm.conf sets MinJobAge=600, so the plugin can poll squeue (no accounting daemon needed)
bash "$slurm" up --gpus 1

python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
start=$(date +%s)
DAGMAN_REQUIRE_SLURM=1 OMP_NUM_THREADS=1 "$python" -m pytest tests/workflow/test_slurm.py -q -s -rs \
  -p no:cacheprovider
echo "slurm_ci.sh: SLURM test took $(( $(date +%s) - start )) s"
