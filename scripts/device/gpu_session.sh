#!/usr/bin/env bash
# The GPU benchmarks and the training of the bundled CTN, in one call on a GPU machine
# (sized to end within END_S, 570 s by default). This is how the bundled model
# (src/composite_tasking/weights/ctn) was trained; docs/results.md and
# docs/benchmarks.md say when and on which machine:
#   1. the GPU benchmarks (gpupath, latency = Figure 5, region, precision, then label:
#      model-only vs roofline, end to end, memory), each in its own process with a
#      time limit, so one failure or overrun costs only its own rows;
#   2. training the bundled CTN (training/recipes/ctn-synthetic.yaml) for the time that
#      is left (ctn train --max-minutes), then bundling its newest epoch as float16
#      (scripts/maintainer/bundle_model.py);
#   3. torch.compile, if time is left.
# What comes back is at most 8 files: $OUT/results.tar (the small files: bench-*.json/md/
# log, gpu.txt (the date, the commit, the GPU, cores, versions), train.log, history.json,
# curves.png, train-summary.txt; rewritten after every stage) and the bundled model as
# $OUT/ctn.tar.part-* (<= 15 MiB each, for a transfer that takes files up to 16 MiB).
# Rejoin with
#   cat ctn.tar.part-* | tar -x -C src/composite_tasking/weights
# zarr must be importable (the label benchmark and the store need it): on a machine
# without it, see scripts/device/device_env.sh (wheels in a `.whl/` folder).
#
#   bash scripts/device/gpu_session.sh            (on the GPU machine, in the repository root)
# A dry run of the script's logic on a CPU (minutes):
#   DEVICE=cpu BENCH_ARGS=--quick RECIPE=ctn-synthetic-cpu END_S=200 TRAIN_END_S=150 bash scripts/device/gpu_session.sh
set -u
DEVICE=${DEVICE:-cuda}
RECIPE=${RECIPE:-training/recipes/ctn-synthetic.yaml}
BENCH_ARGS=${BENCH_ARGS:-}
OUT=${OUT:-/tmp/ctn-gpu-out}
LOGS=${LOGS:-/tmp/ctn-gpu-logs}  # the small files, packed into $OUT/results.tar
rm -rf "$LOGS"; mkdir -p "$OUT" "$LOGS"
# ctn label's peak memory on 1000 images takes minutes of store writes: not in a short
# lease (CTN_BENCH_LABEL_MEMORY=1 to include it)
export CTN_BENCH_LABEL_MEMORY=${CTN_BENCH_LABEL_MEMORY:-0}
export PYTHONUNBUFFERED=1
T0=$(date +%s)
END=${END_S:-570}          # seconds from start by which everything must have ended
TRAIN_END=${TRAIN_END_S:-480}  # training (and bundling) must end by then
RUN=${RUN:-/tmp/ctn-gpu-run}
rm -rf "$RUN"
now() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(now) s] $*"; }
left() { echo $(( $1 - $(now) )); }
pack() { tar -cf "$OUT/results.tar" -C "$LOGS" . 2>/dev/null; }

. scripts/device/device_env.sh "$LOGS/pip.log"
python3 -c "import zarr" || exit 1  # the label benchmark and the store need it
{ date -u '+%Y-%m-%d %H:%M UTC'; git rev-parse HEAD 2>/dev/null; } | tee "$LOGS/gpu.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a "$LOGS/gpu.txt"
nproc --all | tee -a "$LOGS/gpu.txt"; df -h /dev/shm /tmp | tee -a "$LOGS/gpu.txt"
python3 -c "import torch, zarr, composite_tasking as c; print('torch', torch.__version__, torch.cuda.get_device_name(), 'zarr', zarr.__version__)" \
    2>&1 | tee -a "$LOGS/gpu.txt"

bench() {  # bench NAME[,NAME] SECONDS
    local t=$2
    [ "$t" -gt 5 ] || { log "skip $1 (no time)"; return; }
    log "bench $1 (limit $t s)"
    timeout -k 5 "$t" python3 benchmarks/run.py --device "$DEVICE" $BENCH_ARGS --only "$1" --json "$LOGS/bench-${1//,/-}.json" \
        >"$LOGS/bench-${1//,/-}.md" 2>"$LOGS/bench-${1//,/-}.log"
    log "bench $1: exit $?"
    pack
}

bench gpupath,latency,region,precision 90
bench label $(( $(left 300) < 150 ? $(left 300) : 150 ))

# training: whatever is left before TRAIN_END (bundling takes ~15 s), at least 3 min
mins=$(python3 -c "print(max(3.0, ($(left "$TRAIN_END") - 45) / 60))")
log "train for $mins min"
timeout -k 10 $(python3 -c "print(int($mins * 60 + 60))") \
    python3 -m composite_tasking.cli train --config "$RECIPE" \
    --out "$RUN" --device "$DEVICE" --max-minutes "$mins" >"$LOGS/train.log" 2>&1
log "train: exit $?"
tr '\r' '\n' <"$LOGS/train.log" | grep -v '|' | tail -5
cp $RUN/history.json $RUN/curves.png "$LOGS/" 2>/dev/null
python3 - "$RUN/history.json" <<'EOF' 2>&1 | tee -a "$LOGS/train-summary.txt"
import json, sys
for h in json.load(open(sys.argv[1])):
    m = h.get("val", {}).get("metrics", {})
    print(h["epoch"], round(h["images_per_s"]), {k: round(v, 3) for k, v in h["train_loss"].items()},
          {t: round(next(iter(v.values())), 2) for t, v in m.items()})
EOF
python3 scripts/maintainer/bundle_model.py $RUN --name ctn --note "GPU run of training/recipes/ctn-synthetic.yaml (scripts/device/gpu_session.sh)" \
    && (tar -cf - -C src/composite_tasking/weights ctn | split -b 15M - "$OUT/ctn.tar.part-")
pack

bench compile $(left "$END")
log "done"
ls -la "$OUT" "$LOGS"
