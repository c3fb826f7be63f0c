#!/usr/bin/env bash
# Curation split over N machines with SLURM job arrays: every stage with --shard I/N runs as an
# array (one task per shard), and `usfmae merge` combines its N output folders after it.
#
#   J=$(sbatch --parsable --array=0-7 examples/slurm_array.sh ingest /data/openus /scratch/ingest)
#   sbatch --dependency=afterok:$J examples/slurm_array.sh merge /scratch/ingest /scratch/corpus
#
# `ingest IN PARTS` (an array task): ingests the files whose path hashes to this task's index (the
# same split on every machine and in every run) into PARTS/shard-INDEX; a task that was killed
# resumes where it stopped when resubmitted with the same index.
# `merge PARTS OUT` (one task): refuses to merge until every shard has finished with the same
# settings, finds duplicates across shards, and writes what a single run would have (for ingest:
# the same manifest rows, frames hard-linked into OUT). OUT is locked while it runs.
#SBATCH --job-name=usfmae-curate
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=12:00:00
#SBATCH --output=usfmae-curate-%A_%a.log
set -euo pipefail
usage="usage: sbatch --array=0-(N-1) slurm_array.sh ingest IN PARTS | sbatch slurm_array.sh merge PARTS OUT"
STAGE=${1:?$usage}
IN=${2:?$usage}
OUT=${3:?$usage}
# workers = the cores SLURM gave this task; usfmae sizes its threads to them (--threads to override)
WORKERS=${SLURM_CPUS_PER_TASK:-1}
case "$STAGE" in
  merge)
    usfmae merge "$IN"/shard-* --out "$OUT" --no-progress
    ;;
  ingest)
    INDEX=${SLURM_ARRAY_TASK_ID:?run as a SLURM array task (sbatch --array=0-N)}
    COUNT=${SLURM_ARRAY_TASK_COUNT:?run as a SLURM array task (sbatch --array=0-N)}
    usfmae ingest "$IN" --out "$OUT/shard-$INDEX" --shard "$INDEX/$COUNT" --workers "$WORKERS" --no-progress
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
