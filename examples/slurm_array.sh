#!/usr/bin/env bash
# Curation split over N machines with SLURM job arrays: each stage runs as an array (one task per
# shard, `--shard I/N`), then one `usfmae merge` job combines its N parts into what a single run
# writes; the next stage starts from the merged output.
#
#   S=examples/slurm_array.sh; N=7   # 8 shards: --array=0-$N
#   A=$(sbatch --parsable --array=0-$N $S ingest /data/openus /scratch/ingest)
#   B=$(sbatch --parsable --dependency=afterok:$A $S merge /scratch/ingest /scratch/corpus)
#   C=$(sbatch --parsable --dependency=afterok:$B --array=0-$N $S clean /scratch/corpus/manifest.parquet /scratch/clean)
#   D=$(sbatch --parsable --dependency=afterok:$C $S merge /scratch/clean /scratch/cleaned)
#   E=$(sbatch --parsable --dependency=afterok:$D --array=0-$N $S pack /scratch/cleaned/manifest.parquet /scratch/pack)
#   sbatch --dependency=afterok:$E $S merge /scratch/pack /scratch/shards
#   # after pretraining, features split the same way (options after PARTS go to the verb):
#   G=$(sbatch --parsable --array=0-$N $S embed /scratch/shards /scratch/embed --weights usfmae.pt)
#   sbatch --dependency=afterok:$G $S merge /scratch/embed /scratch/features.parquet
#
# `STAGE IN PARTS [OPTIONS]` (an array task; STAGE ingest, clean, pack or embed): runs
# `usfmae STAGE IN --shard INDEX/COUNT` into PARTS/shard-INDEX (embed: PARTS/shard-INDEX.parquet).
# The split is the same on every machine and in every run; a killed task resumes where it stopped
# when resubmitted with the same index. Workers and threads follow the cores SLURM gives the task.
# `merge PARTS OUT` (one job): `usfmae merge` refuses until every shard has finished with the same
# settings, finds duplicates across ingest shards, and writes OUT as a single run would (the same
# manifest rows; frames and images hard-linked). OUT is locked while it runs.
#SBATCH --job-name=usfmae-curate
#SBATCH --cpus-per-task=8
#SBATCH --mem=16G
#SBATCH --time=12:00:00
#SBATCH --output=usfmae-curate-%A_%a.log
set -euo pipefail
usage="usage: sbatch --array=0-(N-1) slurm_array.sh ingest|clean|pack|embed IN PARTS [OPTIONS] | sbatch slurm_array.sh merge PARTS OUT"
STAGE=${1:?$usage}
IN=${2:?$usage}
OUT=${3:?$usage}
shift 3
case "$STAGE" in
  merge)
    if [ -e "$IN/shard-0.parquet" ]; then parts=("$IN"/shard-*.parquet); else parts=("$IN"/shard-*/); fi
    usfmae merge "${parts[@]}" --out "$OUT" --no-progress "$@"
    ;;
  ingest|clean|pack|embed)
    INDEX=${SLURM_ARRAY_TASK_ID:?run as a SLURM array task (sbatch --array=0-N)}
    COUNT=${SLURM_ARRAY_TASK_COUNT:?run as a SLURM array task (sbatch --array=0-N)}
    PART="$OUT/shard-$INDEX"
    [ "$STAGE" = embed ] && PART="$PART.parquet"
    mkdir -p "$OUT"
    progress=(--no-progress)
    [ "$STAGE" = embed ] && progress=()  # embed has no bar to switch off
    usfmae "$STAGE" "$IN" --out "$PART" --shard "$INDEX/$COUNT" ${progress[@]+"${progress[@]}"} "$@"
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
