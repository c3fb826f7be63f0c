#!/usr/bin/env bash
# The CPU rows of README's performance table, measured in one run on one machine (about 10 minutes
# on 2 cores). One JSON line per row, {"command", "load_1m", "result"}, on stdout and appended to
# ${OUT:-.}/cpu_table.jsonl. Run it on a quiet machine: the figures are images/s, not ratios.
#
#     bash bench/cpu_table.sh            # PYTHON=... to use another interpreter than .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=${OUT:-.}/cpu_table.jsonl
mkdir -p "$(dirname "$out")"

row() {  # row SCRIPT ARGS...: run bench/SCRIPT, keep its JSON line with the command and the load
    local result
    result=$("$PY" "bench/$1" "${@:2}" | tail -n 1)
    printf '{"command": "%s", "load_1m": %s, "result": %s}\n' "$*" "$(cut -d' ' -f1 /proc/loadavg)" "$result" \
        | tee -a "$out"
}

row phantom_throughput.py
row loader_throughput.py
row ingest_throughput.py --rounds 5
row ingest_throughput.py --codec mjpeg --rounds 5
row clean_throughput.py --n 8
for model in mae_vit_micro_patch8_64 mae_vit_tiny_patch8_64; do
    for recipe in paper fast; do
        row pretrain_throughput.py --model "$model" --batch 64 --steps 20 --recipe "$recipe"
    done
done
for recipe in paper fast; do
    row pretrain_throughput.py --model mae_vit_base_patch16 --batch 8 --steps 3 --recipe "$recipe"
done
