#!/usr/bin/env bash
# The `label` benchmark, then the paper's tables, in one call on a GPU machine (sized to
# end within ~9 minutes on one GPU with 16 CPU cores). This is the command that made
# docs/measurements/h200-2026-11-27-paper-tables (docs/results.md says the date and the
# machine):
#   1. the `label` benchmark on CUDA, memory rows included (end to end over model-only
#      with the writer processes on a 512-image folder; 100 vs 1000 images);
#   2. scripts/paper/paper_tables.sh (Tables 1, 3 and 4 on the synthetic world).
# What comes back: $OUT/label.tar (gpu.txt: the date, the commit, the GPU and the cores;
# bench-label.json/md/log) and $OUT/results.tar (the tables' results, see paper_tables.sh).
#   bash scripts/device/gpu_label_and_tables.sh        (on the GPU machine, repository root)
# Knobs: LABEL_S (seconds for the benchmark), TABLES_END_S (paper_tables.sh's END_S), OUT.
set -u
OUT=${OUT:-/tmp/ctn-gpu-out}
L=/tmp/ctn-label-logs
rm -rf "$L"; mkdir -p "$OUT" "$L"
. scripts/device/device_env.sh "$L/pip.log"
{ date -u '+%Y-%m-%d %H:%M UTC'; git rev-parse HEAD 2>/dev/null; } >"$L/gpu.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$L/gpu.txt" 2>&1
nproc --all >>"$L/gpu.txt"
t0=$(date +%s)
CTN_BENCH_LABEL_MEMORY=1 timeout -k 5 "${LABEL_S:-170}" python3 benchmarks/run.py --device cuda --only label \
    --json "$L/bench-label.json" >"$L/bench-label.md" 2>"$L/bench-label.log"
echo "label benchmark: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$L/gpu.txt"
tar -cf "$OUT/label.tar" -C "$L" .
END_S=${TABLES_END_S:-370} OUT="$OUT" bash scripts/paper/paper_tables.sh
tail -5 /tmp/ctn-tables-logs/timings.txt 2>/dev/null
