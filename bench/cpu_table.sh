#!/usr/bin/env bash
# The CPU rows of README's performance table, measured in one run on one machine (about 10 minutes
# on 2 cores). One JSON line per row, {"command", "load_1m", "result"}, on stdout and appended to
# ${OUT:-.}/cpu_table.jsonl, then one {"summary": ...} line: the median of each row's rounds, and the
# fast / paper pretraining ratios of those medians. The speed of a core on a shared virtual machine
# moves by up to 1.6x from one few-second episode to the next, so the two arms of every comparison
# run in alternating rounds (ROUNDS, default 3) and ingest keeps the best of 5 fresh workers.
#
#     bash bench/cpu_table.sh            # PYTHON=... to use another interpreter than .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=${OUT:-.}/cpu_table.jsonl
rounds=${ROUNDS:-3}
mkdir -p "$(dirname "$out")"
run_lines=$(mktemp)
trap 'rm -f "$run_lines"' EXIT

row() {  # row SCRIPT ARGS...: run bench/SCRIPT, keep its JSON line with the command and the load
    local result
    result=$("$PY" "bench/$1" "${@:2}" | tail -n 1)
    printf '{"command": "%s", "load_1m": %s, "result": %s}\n' "$*" "$(cut -d' ' -f1 /proc/loadavg)" "$result" \
        | tee -a "$out" "$run_lines"
}

row phantom_throughput.py
row loader_throughput.py
row ingest_throughput.py --rounds 5
row ingest_throughput.py --codec mjpeg --rounds 5
for _ in $(seq "$rounds"); do
    row clean_throughput.py --n 8
    for model in mae_vit_micro_patch8_64 mae_vit_tiny_patch8_64; do
        for recipe in paper fast; do
            row pretrain_throughput.py --model "$model" --batch 64 --steps 20 --recipe "$recipe"
        done
    done
    for recipe in paper fast; do
        row pretrain_throughput.py --model mae_vit_base_patch16 --batch 8 --steps 3 --recipe "$recipe"
    done
done

"$PY" - "$run_lines" <<'PY' | tee -a "$out"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def median(command, key):
    return round(statistics.median(r["result"][key] for r in rows if r["command"] == command), 3)
summary = {"clean_speedup": median("clean_throughput.py --n 8", "speedup")}
for model, args in (("mae_vit_micro_patch8_64", "--batch 64 --steps 20"), ("mae_vit_tiny_patch8_64", "--batch 64 --steps 20"),
                    ("mae_vit_base_patch16", "--batch 8 --steps 3")):
    arms = {recipe: median(f"pretrain_throughput.py --model {model} {args} --recipe {recipe}", "images_per_s")
            for recipe in ("paper", "fast")}
    summary[model] = {**arms, "fast_over_paper": round(arms["fast"] / arms["paper"], 3)}
print(json.dumps({"summary": summary, "rounds": sum(r["command"].startswith("clean") for r in rows)}))
PY
