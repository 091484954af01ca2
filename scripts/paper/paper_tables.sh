#!/usr/bin/env bash
# The shape of the paper's Tables 1, 3 and 4 on the synthetic world, in one command on a
# GPU machine (sized for one GPU and 16 CPU cores: everything ends within END_S, 420 s
# by default):
#   (a) six trainings at once on the one GPU (training/recipes/table-*.yaml: CTN with
#       R1r, MHN, STN, CTN with R2, with R3, with Rrnd), each `ctn train --max-minutes`;
#   (b) the fine-tuning of the R2 run on R3 (table-finetune.yaml), and meanwhile the
#       nine evaluations that do not need it;
#   (c) the two evaluations of the fine-tuned model.
# Each evaluation is `ctn evaluate --json` on held-out scenes (seed 5; training uses seed
# 0, validation 100000, fine-tuning 7) to its own JSON file. Every stage runs under
# `timeout`, so a failure or an overrun costs only its own rows.
#
# What comes back: ONE file, $OUT/results.tar (re-packed after every stage): recipes/
# (the recipes as run), train/NAME/{history.json,curves.png,train.log}, eval/*.json|log,
# timings.txt, gpu.txt (the date, the GPU, the cores, the commit, torch). No model weights. Read it with
#   mkdir -p R && tar -xf results.tar -C R && .venv/bin/python scripts/paper/paper_tables.py R
#
#   bash scripts/paper/paper_tables.sh                    (GPU machine, repository root)
# A CPU dry run of the whole logic (a few minutes on 2 cores):
#   DEVICE=cpu SIZE=64 BATCH=4 STEPS=2 EPOCHS=1 VAL_N=4 BN_BATCHES=1 WORKERS=1 \
#     FT_N=8 FT_EPOCHS=1 EVAL_N=8 EVAL_SIZE=64 TRAIN_MIN=6 FT_MIN=3 END_S=1500 \
#     bash scripts/paper/paper_tables.sh
#
# MHN and STN train on complete labels (rule S), as the paper's baselines; the CTNs
# with their rules.
set -u
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/ctn-tables-out}
LOGS=${LOGS:-/tmp/ctn-tables-logs}   # the small files, packed into $OUT/results.tar
RUN=${RUN:-/tmp/ctn-tables-run}      # checkpoints (not returned)
END=${END_S:-420}                    # seconds from start by which everything must end
TRAIN_MIN=${TRAIN_MIN:-3.75}         # ctn train --max-minutes of each of the six runs
FT_MIN=${FT_MIN:-1.0}                # ctn finetune --max-minutes
FT_N=${FT_N:-2000}                   # fine-tuning scenes (R3 palettes), seed 7
FT_EPOCHS=${FT_EPOCHS:-2}
EVAL_N=${EVAL_N:-200}                # evaluation scenes, seed 5
EVAL_SIZE=${EVAL_SIZE:-128}
EVAL_SEED=${EVAL_SEED:-5}
EVAL_LIMIT=${EVAL_LIMIT:-120}        # seconds, each evaluation
RUNS=${RUNS:-ctn-r1r mhn stn ctn-r2 ctn-r3 ctn-rrnd}
# recipe overrides for dry runs (empty: the recipe's value): SIZE BATCH STEPS EPOCHS
# VAL_N BN_BATCHES WORKERS
export SIZE=${SIZE:-} BATCH=${BATCH:-} STEPS=${STEPS:-} EPOCHS=${EPOCHS:-} VAL_N=${VAL_N:-} \
    BN_BATCHES=${BN_BATCHES:-} WORKERS=${WORKERS:-}
export PYTHONUNBUFFERED=1
T0=$(date +%s)
now() { echo $(( $(date +%s) - T0 )); }
log() { echo "[$(now) s] $*" | tee -a "$LOGS/timings.txt"; }
left() { echo $(( END - $(now) )); }
limit() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }  # min(want, left)
pack() { tar -cf "$OUT/results.tar.tmp" -C "$LOGS" . 2>/dev/null && mv "$OUT/results.tar.tmp" "$OUT/results.tar"; }
clean_log() { tr '\r' '\n' <"$1" | grep -v '|' >"$1.tmp"; mv "$1.tmp" "$1"; }  # no tqdm spam

rm -rf "$LOGS" "$RUN"; mkdir -p "$OUT" "$LOGS/recipes" "$LOGS/train" "$LOGS/eval" "$RUN"
. scripts/device/device_env.sh "$LOGS/pip.log" 2>>"$LOGS/timings.txt"  # zarr is not needed here
log "start: DEVICE=$DEVICE TRAIN_MIN=$TRAIN_MIN FT_MIN=$FT_MIN FT_N=$FT_N FT_EPOCHS=$FT_EPOCHS EVAL_N=$EVAL_N" \
    "EVAL_SIZE=$EVAL_SIZE END_S=$END overrides: SIZE=$SIZE BATCH=$BATCH STEPS=$STEPS EPOCHS=$EPOCHS" \
    "VAL_N=$VAL_N BN_BATCHES=$BN_BATCHES WORKERS=$WORKERS"
{ date -u '+%Y-%m-%d %H:%M UTC'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  echo "cores: $(nproc --all)"; git rev-parse HEAD 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
} >"$LOGS/gpu.txt" 2>&1

# the recipes as run: table-*.yaml with the dry-run overrides applied
recipe() {  # recipe SRC DST
    python3 - "$1" "$2" <<'EOF'
import os, sys, yaml
from composite_tasking.training.recipe import recipe_data
d, _ = recipe_data(sys.argv[1])  # its base: resolved, so that every key can be overridden
for key, var in (("batch_size", "BATCH"), ("max_steps_per_epoch", "STEPS"), ("epochs", "EPOCHS"),
                 ("bn_recalibration_batches", "BN_BATCHES"), ("workers", "WORKERS")):
    if os.environ.get(var):
        d[key] = int(os.environ[var])
for part in ("train", "val"):
    if d.get(part) and os.environ.get("SIZE"):
        d[part]["size"] = int(os.environ["SIZE"])
if d.get("val") and os.environ.get("VAL_N"):
    d["val"]["n"] = int(os.environ["VAL_N"])
yaml.safe_dump(d, open(sys.argv[2], "w"), sort_keys=False)
EOF
}
for name in $RUNS finetune; do
    recipe "training/recipes/table-$name.yaml" "$LOGS/recipes/$name.yaml" || log "recipe $name: FAILED"
done

# ---------------------------------------------------------------- (a) six trainings
t_train=$(limit "$(python3 -c "print(int($TRAIN_MIN * 60 + 60))")")
log "(a) train $RUNS at once: --max-minutes $TRAIN_MIN, timeout $t_train s"
declare -A PID START
for name in $RUNS; do
    mkdir -p "$LOGS/train/$name"
    START[$name]=$(now)
    timeout -k 10 "$t_train" python3 -m composite_tasking.cli train --config "$LOGS/recipes/$name.yaml" \
        --out "$RUN/$name" --device "$DEVICE" --max-minutes "$TRAIN_MIN" >"$LOGS/train/$name/train.log" 2>&1 &
    PID[$name]=$!
done
for name in $RUNS; do
    wait "${PID[$name]}"; rc=$?
    log "train $name: exit $rc after $(( $(now) - START[$name] )) s"
    clean_log "$LOGS/train/$name/train.log"
    cp "$RUN/$name/history.json" "$RUN/$name/curves.png" "$LOGS/train/$name/" 2>/dev/null
done
pack

# ------------------------------------- (b) fine-tune R2 -> R3, meanwhile 9 evaluations
evaluate() {  # evaluate MODEL RULE SECONDS   (MODEL: a run folder name under $RUN)
    local f="$LOGS/eval/$1__$2"
    [ "$3" -gt 5 ] || { log "eval $1 on $2: skipped (no time)"; return; }
    local t=$(now)
    OMP_NUM_THREADS=2 timeout -k 5 "$3" python3 -m composite_tasking.cli evaluate --model "$RUN/$1" \
        --data "synthetic:seed=$EVAL_SEED,n=$EVAL_N,size=$EVAL_SIZE" --rule "$2" --device "$DEVICE" --json \
        >"$f.json" 2>"$f.log"
    local rc=$?
    log "eval $1 on $2: exit $rc after $(( $(now) - t )) s"
    [ $rc -eq 0 ] || mv "$f.json" "$f.failed.json"
}
t_ft=$(limit "$(python3 -c "print(int($FT_MIN * 60 + 45))")")
log "(b) finetune ctn-r2 on R3: $FT_N scenes, $FT_EPOCHS epoch(s), --max-minutes $FT_MIN, timeout $t_ft s"
mkdir -p "$LOGS/train/ft-r2-r3"
ft_start=$(now)
timeout -k 10 "$t_ft" python3 -m composite_tasking.cli finetune --config "$LOGS/recipes/finetune.yaml" \
    --model "$RUN/ctn-r2" --data "synthetic:seed=7,n=$FT_N,size=${SIZE:-128}" --rule R3 \
    --epochs "$FT_EPOCHS" --out "$RUN/ft-r2-r3" --device "$DEVICE" --max-minutes "$FT_MIN" \
    >"$LOGS/train/ft-r2-r3/train.log" 2>&1 &
ft_pid=$!
t_ev=$(limit "$EVAL_LIMIT")
eval_pids=()
for job in ctn-r1r:S mhn:S stn:S ctn-r2:R3 ctn-r3:R3 ctn-r2:R2 ctn-r1r:random ctn-rrnd:random ctn-rrnd:S; do
    evaluate "${job%%:*}" "${job#*:}" "$t_ev" &
    eval_pids+=($!)
done
wait "$ft_pid"; rc=$?
log "finetune: exit $rc after $(( $(now) - ft_start )) s"
clean_log "$LOGS/train/ft-r2-r3/train.log"
cp "$RUN/ft-r2-r3/history.json" "$RUN/ft-r2-r3/curves.png" "$LOGS/train/ft-r2-r3/" 2>/dev/null

# ---------------------------------------------- (c) the fine-tuned model on R3 and R2
t_ev=$(limit "$EVAL_LIMIT")
evaluate ft-r2-r3 R3 "$t_ev" & eval_pids+=($!)
evaluate ft-r2-r3 R2 "$t_ev" & eval_pids+=($!)
wait "${eval_pids[@]}"
pack
log "done"
pack
ls -la "$OUT"
