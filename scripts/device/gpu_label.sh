#!/usr/bin/env bash
# `ctn label` on a GPU: what the CPU test suite cannot check and the numbers
# docs/benchmarks.md reports for CUDA (sized to end within ~8 minutes on one GPU with
# 16 CPU cores; each step runs under `timeout`, so one failure or overrun costs only
# its own output):
#   1. scripts/device/label_device_check.py: batches in flight, the pipelined labelling
#      (writer processes, shared memory) against one step after another, no shared
#      memory left;
#   2. the `conditioning` benchmark (<= 100 s): the decoder with the plain and the
#      palette-aware conditioning, float32 and bf16, 256 and 512 (the plain one has no
#      host syncs per level, which would let start_batch leave the encoder in flight too);
#   3. the `label` benchmark, memory rows included: end to end over model-only (steady
#      state, 512 JPEGs), where the labelling thread's time goes and how busy the
#      writers are, store writes on the disk and on tmpfs, 100 vs 1000 images.
# What comes back: $OUT/label.tar (gpu.txt: the date, the commit, the GPU, driver, cores
# and disks; check.txt; bench-{conditioning,label}.json/md/log: the JSON names the
# machine and the date).
#   bash scripts/device/gpu_label.sh        (on the GPU machine, repository root)
# A dry run on a CPU: DEVICE=cpu BENCH_ARGS=--quick bash scripts/device/gpu_label.sh
# Knobs: LABEL_S (seconds for the label benchmark, default 330), DEVICE, BENCH_ARGS, OUT.
set -u
OUT=${OUT:-/tmp/ctn-gpu-out}
DEVICE=${DEVICE:-cuda}
L=/tmp/ctn-label-logs
rm -rf "$L"; mkdir -p "$OUT" "$L"
. scripts/device/device_env.sh "$L/pip.log"
{ date -u '+%Y-%m-%d %H:%M UTC'; git rev-parse HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; nproc --all; df -h /dev/shm /tmp; } >"$L/gpu.txt"
t0=$(date +%s)
timeout -k 5 120 python3 scripts/device/label_device_check.py --device "$DEVICE" >"$L/check.txt" 2>&1
echo "device check: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$L/gpu.txt"
tar -cf "$OUT/label.tar" -C "$L" .
t0=$(date +%s)
timeout -k 5 100 python3 benchmarks/run.py --device "$DEVICE" ${BENCH_ARGS:-} --only conditioning \
    --json "$L/bench-conditioning.json" >"$L/bench-conditioning.md" 2>"$L/bench-conditioning.log"
echo "conditioning benchmark: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$L/gpu.txt"
tar -cf "$OUT/label.tar" -C "$L" .
t0=$(date +%s)
CTN_BENCH_LABEL_MEMORY=1 timeout -k 5 "${LABEL_S:-330}" python3 benchmarks/run.py --device "$DEVICE" ${BENCH_ARGS:-} \
    --only label --json "$L/bench-label.json" >"$L/bench-label.md" 2>"$L/bench-label.log"
echo "label benchmark: exit $? after $(( $(date +%s) - t0 )) s" | tee -a "$L/gpu.txt"
tar -cf "$OUT/label.tar" -C "$L" .
