#!/usr/bin/env bash
# One lent-GPU call (session 4, planned for ~9 minutes on one H200 + 16 cores):
#   1. the `label` benchmark on CUDA, memory rows included (issue #5: end to end over
#      model-only with the writer processes on a 512-image folder; 100 vs 1000 images);
#   2. scripts/paper_tables.sh (issue #4: Tables 1, 3 and 4 on the synthetic world).
# What comes back: $OUT/label.tar (bench-label.json/md/log) and $OUT/results.tar (the
# tables' results, see paper_tables.sh).
#   bash scripts/gpu_label_and_tables.sh        (on the GPU machine, repository root)
# Knobs: LABEL_S (seconds for the benchmark), TABLES_END_S (paper_tables.sh's END_S).
set -u
OUT=${OUT:-/tmp/ctn-gpu-out}
L=/tmp/ctn-label-logs
rm -rf "$L"; mkdir -p "$OUT" "$L"
. scripts/device_env.sh "$L/pip.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$L/gpu.txt" 2>&1
nproc --all >>"$L/gpu.txt"
t0=$(date +%s)
CTN_BENCH_LABEL_MEMORY=1 timeout -k 5 "${LABEL_S:-170}" python3 benchmarks/run.py --device cuda --only label \
    --json "$L/bench-label.json" >"$L/bench-label.md" 2>"$L/bench-label.log"
echo "label benchmark: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$L/gpu.txt"
tar -cf "$OUT/label.tar" -C "$L" .
END_S=${TABLES_END_S:-370} OUT="$OUT" bash scripts/paper_tables.sh
tail -5 /tmp/ctn-tables-logs/timings.txt 2>/dev/null
