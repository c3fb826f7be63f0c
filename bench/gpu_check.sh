#!/usr/bin/env bash
# The GPU proof in one command: correctness checks + benchmarks, <= 8 minutes on one GPU.
#   bash bench/gpu_check.sh              # JSON lines on stdout and in ${OUT:-.}/gpu_check.jsonl
#   bash bench/gpu_check.sh --smoke      # the CPU smoke mode CI runs
# Extra arguments go to bench/gpu_check.py (--only NAMES, --budget SECONDS, --out FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
# the product's imports on this path need only torch, timm, numpy, opencv, pyarrow, pandas, tqdm, yaml
"$PY" -c "import torch, timm, cv2, pyarrow" || { echo "gpu_check: install torch, timm, opencv-python-headless, pyarrow" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" bench/gpu_check.py --out "${OUT:-.}/gpu_check.jsonl" "$@"
