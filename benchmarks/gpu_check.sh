#!/usr/bin/env bash
# GPU check: the full-size MERC2020 AttnCNN (EfficientNet-b0) on RAVDESS fold0 in bf16-mixed,
# through the local launcher with one job (one seed) per GPU; prints step time, samples/s and
# the GPU utilisation nvidia-smi saw while it trained.
#
#   bash benchmarks/gpu_check.sh [ARCHIVE]   (default gpu_check_ravdess.tar.gz in the repository)
#
# Needs the repository with a CUDA build of torch installed (PYTHON, default .venv/bin/python),
# and ARCHIVE from `python benchmarks/pack_gpu_check.py` on a machine that has the data: no
# ../shared here. Budget: under 8 minutes on one GPU (60 epochs at most, early stopping).
set -euo pipefail
cd "$(dirname "$0")/.."
archive=${1:-gpu_check_ravdess.tar.gz}
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
[ -f "$archive" ] || { echo "ERROR: $archive is missing (make it with benchmarks/pack_gpu_check.py)" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "ERROR: nvidia-smi not found: this check needs a CUDA machine" >&2; exit 1; }
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device (a CPU build of torch?)")'

rm -rf .gpu_check
tar --sparse -xzf "$archive"
ngpu=$(nvidia-smi -L | wc -l)
seeds=$(seq -s, 0 $((ngpu - 1)))
export MMER_CACHE="$PWD/.gpu_check/cache" HF_HUB_OFFLINE=1 WANDB_MODE=offline
nvidia-smi -L
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 \
  > .gpu_check/utilisation.csv &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT
start=$(date +%s)
"$py" -m mmer_bench.cli bench ravdess --config benchmarks/gpu_check.yaml --data-root .gpu_check/data \
  --folds fold0 --seeds "$seeds" --precision bf16-mixed --launcher local --jobs "$ngpu" \
  --out .gpu_check/run --loggers csv
echo "wall time: $(( $(date +%s) - start )) s for $ngpu job(s) on $ngpu GPU(s)"
kill $smi 2>/dev/null || true
"$py" - <<'PY'
import csv, json, math
from pathlib import Path

run = Path(".gpu_check/run")
for job in sorted(run.glob("jobs/*/*/job.json")):
    info = json.loads(job.read_text())
    hp = info["hparams"]
    epochs = max(1, info["epochs_run"]) + info.get("refit_epochs", 0)  # Lightning's current_epoch after fit
    steps = epochs * math.ceil(info["n_train"] / hp["batch_size"])
    train = info["train_time_s"]
    print(f"{job.parent.relative_to(run)}: {epochs} epochs, {steps} steps in {train:.1f} s "
          f"(validation passes included): {1000 * train / steps:.1f} ms/step, {info['n_train'] * epochs / train:.0f} "
          f"samples/s; precision {info['precision']}")
rows = list(csv.reader(open(".gpu_check/utilisation.csv")))
by_gpu = {}
for row in rows:
    if len(row) >= 4:
        by_gpu.setdefault(row[1].strip(), []).append((float(row[2]), float(row[3])))
for gpu, values in sorted(by_gpu.items()):
    busy = [u for u, _ in values if u > 0]
    print(f"GPU {gpu}: utilisation mean {sum(u for u, _ in values) / len(values):.0f}% over {len(values)} s "
          f"sampled, {sum(busy) / max(1, len(busy)):.0f}% while busy; peak memory {max(m for _, m in values):.0f} MiB")
PY
cat .gpu_check/run/leaderboard.md
