#!/usr/bin/env bash
# Ingest a corpus on N machines with a SLURM job array, then merge (usfmae ingest --shard, usfmae merge).
#
#   sbatch --array=0-7 examples/slurm_array.sh /data/openus /scratch/corpus_parts   # 8 shards
#   # when all 8 tasks have finished (or: sbatch --dependency=afterok:JOBID ...):
#   usfmae merge /scratch/corpus_parts/shard-* --out /scratch/corpus
#
# Each task ingests the files whose path hashes to its index (the same split on every machine and
# in every run); a task that was killed resumes where it stopped when resubmitted with the same
# index. `usfmae merge` refuses to merge until every shard has finished with the same settings,
# finds duplicates across shards, and writes what a single `usfmae ingest` run would have.
#SBATCH --job-name=usfmae-ingest
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=12:00:00
#SBATCH --output=usfmae-ingest-%A_%a.log
set -euo pipefail
ROOT=${1:?usage: sbatch --array=0-(N-1) slurm_array.sh ROOT PARTS_DIR}
PARTS=${2:?usage: sbatch --array=0-(N-1) slurm_array.sh ROOT PARTS_DIR}
INDEX=${SLURM_ARRAY_TASK_ID:?run as a SLURM array task (sbatch --array=0-N)}
COUNT=${SLURM_ARRAY_TASK_COUNT:?run as a SLURM array task (sbatch --array=0-N)}
# workers = the cores SLURM gave this task; usfmae sizes its threads to them (--threads to override)
usfmae ingest "$ROOT" --out "$PARTS/shard-$INDEX" --shard "$INDEX/$COUNT" \
    --workers "${SLURM_CPUS_PER_TASK:-1}" --no-progress
