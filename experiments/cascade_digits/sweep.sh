#!/usr/bin/env bash
# The digits analogue of ADM Table 5 (issue 23, section 2): an 8 px base followed by the 8 -> 16 px upsampler,
# unguided and with classifier-free guidance at the base, against one 16 px model trained for the same total
# time (base + upsampler train_seconds, through trainer.max_time). beatgans-report writes results/.
#   bash experiments/nfe_digits/sweep.sh train && bash experiments/cascade_digits/sweep.sh   # from the repo root
# The 8 px base is experiments/nfe_digits' cfg8 run (a class-conditional net trained with label dropout), so
# that experiment's training phase must run first.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
BASE=${BASE:-outputs/nfe_digits/cfg8}
OUT=${OUT:-outputs/cascade_digits}
UPS_STEPS=${UPS_STEPS:-200}   # upsampler training steps
NUM=${NUM:-100}               # samples per job
SEEDS=${SEEDS:-"0 1000"}      # sample i uses seed + i: seeds 1000 apart never share a sample
CFG_W=${CFG_W:-2}             # classifier-free weight of the guided rows (1 = unguided)
STEPS=${STEPS:-25}            # DDIM steps of every stage (base, upsampler, 16 px model)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} PYTHONPATH=${PYTHONPATH:-src}
COMMON=(logger=csv print_config=false trainer.enable_progress_bar=false callbacks.sample_grid.every_n_steps=0)
[ -f "$BASE/metrics.json" ] || { echo "Error: $BASE has no finished run; run experiments/nfe_digits/sweep.sh train first."; exit 2; }

source experiments/common.sh  # train <name> <overrides...>: skips a run that already finished
seconds() { "$PY" -c "import json,sys; print(int(json.load(open(sys.argv[1]))['train_seconds']))" "$1/metrics.json"; }

train ups16 experiment=digits/upsampler trainer.max_steps="$UPS_STEPS" ++trainer.max_time=null
# Same total wall time as base + upsampler: the 16 px model stops on trainer.max_time, not on a step count.
budget=$(( $(seconds "$BASE") + $(seconds "$OUT/ups16") ))
max_time=$(printf "00:%02d:%02d:%02d" $((budget / 3600)) $((budget % 3600 / 60)) $((budget % 60)))
echo "16 px model: trainer.max_time=$max_time ($budget s = base + upsampler train_seconds)"
train single16 experiment=digits/ddpm_cfg trainer.max_steps=100000 ++trainer.max_time="$max_time"

# One multirun per (pipeline, guidance): each process pays the imports once; jobs differ only in seed.
sample() {
  local dir=$OUT/sample/$1; shift
  [ -d "$dir" ] && { echo "keeping $dir"; return; }
  "$PY" -m beatgans.cli.sample -m seed="${SEEDS// /,}" "$@" sampler=ddim sampler.steps="$STEPS" num_samples="$NUM" \
      batch_size="$NUM" metrics=fid_is_pr progress=false hydra.sweep.dir="$dir"
}
# The upsampler samples with its raw weights: after 200 steps its EMA (rate 0.995) still holds 0.995^200 = 37 %
# of the random initial weights, and those samples are noise.
UPS=(upsampler.run="$OUT/ups16" upsampler.use_ema=false upsampler.sampler.name=ddim upsampler.sampler.steps="$STEPS")
sample cascade_none run="$BASE" guidance=none "${UPS[@]}"
sample cascade_cfg run="$BASE" guidance=cfg guidance.scale="$CFG_W" "${UPS[@]}"
sample single_none run="$OUT/single16" guidance=none
sample single_cfg run="$OUT/single16" guidance=cfg guidance.scale="$CFG_W"
# The committed results/ come from the default OUT; any other OUT reports into $OUT/report.
[ "$OUT" = outputs/cascade_digits ] && DEST=() || DEST=(--out "$OUT/report")
"$PY" -m beatgans.cli.report experiments/cascade_digits/report.yaml "$OUT/sample" "${DEST[@]}"
"$PY" -m beatgans.cli.report experiments/cascade_digits/training.yaml "$BASE" "$OUT/ups16" "$OUT/single16" "${DEST[@]}"
