#!/usr/bin/env bash
# Latent diffusion on the bundled digits (issue 24, section 4): a KL autoencoder (16 px -> z (3, 8, 8)), a
# text-conditioned LDM on its latents, and the pixel-space class-conditional CFG model trained for the same
# wall time as both together. Then ONE sampling multirun per model over the CFG scale; every job writes
# metrics.json (target accuracy from the digits CNN, FID on digits-CNN features of the decoded samples,
# sampling time). beatgans-report turns the runs into results/. Sized for a shared 2-core CPU (~40 CPU-minutes).
#   bash experiments/ldm_digits/sweep.sh                       # from the repository root
#   OUT=outputs/ldm2 AE_MIN=8 LDM_MIN=12 bash experiments/ldm_digits/sweep.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/ldm_digits}
AE_MIN=${AE_MIN:-4}            # autoencoder wall-clock minutes
LDM_MIN=${LDM_MIN:-6}          # latent diffusion wall-clock minutes; the pixel model gets AE_MIN + LDM_MIN
NUM=${NUM:-60}                 # samples per job (CPU-bound: ~1 image/s with CFG on a shared core)
STEPS=${STEPS:-25}             # DDIM steps
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} PYTHONPATH=${PYTHONPATH:-src}
COMMON=(logger=csv print_config=false trainer.enable_progress_bar=false trainer.max_steps=100000
        callbacks.sample_grid.every_n_steps=0)
minutes() { printf "00:00:%02d:00" "$1"; }

source experiments/common.sh  # train <name> <overrides...>: skips a run that already finished
train ae experiment=digits/autoencoder trainer.max_time="$(minutes "$AE_MIN")" \
    callbacks.sample_grid.every_n_steps=0
train ldm experiment=digits/ldm_text first_stage=autoencoder first_stage.run="$OUT/ae" \
    trainer.max_time="$(minutes "$LDM_MIN")"
train pixel experiment=digits/ddpm_cfg trainer.max_time="$(minutes $((AE_MIN + LDM_MIN)))"

# Prompts without commas (a comma would split a Hydra list). Training phrasings vs phrasings held out of
# training (data/captions.py HELDOUT_PHRASINGS); the digit each prompt names is its target class.
W=(zero one two three four five six seven eight nine)
train_p=(); held_p=()
for n in 0 1 2 3 4 5 6 7 8 9; do
  train_p+=("\"a handwritten ${W[n]}\"" "\"the digit $n\"" "\"the number ${W[n]}\"")
  held_p+=("\"the handwritten digit ${W[n]}\"" "\"a thick handwritten ${W[n]}\"")
done
join() { local IFS=,; echo "[$*]"; }
# use_ema=false for both models: after a few hundred steps an EMA at rate 0.995 still carries much of the
# initialisation (the LDM, at ~400 steps, samples noise through it), and both models are sampled alike.
SAMPLE=(sampler=ddim sampler.steps="$STEPS" num_samples="$NUM" batch_size=100 metrics=fid guidance=cfg
        progress=false use_ema=false)
sweep() {  # sweep <dir> <task_name> <scales> overrides...
  local dir=$1 name=$2 scales=$3; shift 3
  local jobs; jobs=$(echo "$scales" | tr ',' '\n' | wc -l)
  [ "$(ls "$OUT/$dir"/*/metrics.json 2>/dev/null | wc -l)" -eq "$jobs" ] && { echo "keeping $OUT/$dir"; return; }
  "$PY" -m beatgans.cli.sample -m "${SAMPLE[@]}" task_name="$name" guidance.scale="$scales" "$@" \
      hydra.sweep.dir="$OUT/$dir"
}
sweep sample_train ldm_train_prompts 1,3,5,7.5 run="$OUT/ldm" "prompts=$(join "${train_p[@]}")"
sweep sample_heldout ldm_heldout_prompts 1,3,5,7.5 run="$OUT/ldm" "prompts=$(join "${held_p[@]}")"
# The pixel model at one scale only (CPU budget): the comparison row is scale 3.
sweep sample_pixel pixel_cfg "${PIXEL_SCALES:-3}" run="$OUT/pixel"

"$PY" -m beatgans.cli.report experiments/ldm_digits/report.yaml "$OUT/sample_train" "$OUT/sample_heldout"
"$PY" -m beatgans.cli.report experiments/ldm_digits/pixel_vs_latent.yaml "$OUT/sample_train" "$OUT/sample_pixel"
"$PY" -m beatgans.cli.report experiments/ldm_digits/train_cost.yaml "$OUT/ae" "$OUT/ldm" "$OUT/pixel"
