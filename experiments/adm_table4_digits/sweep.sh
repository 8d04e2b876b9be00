#!/usr/bin/env bash
# ADM Table 4 on the bundled digits: an unconditional and a class-conditional diffusion model, one noisy
# classifier trained on the same diffusion (linear schedule, T = 1000), then ONE sampling multirun over
# model x guidance scale (s = 0 is guidance off: the DDPM mean moves by variance * 0 * grad). Every job
# writes metrics.json (target accuracy, FID / IS / precision / recall on the digits CNN's features);
# beatgans-report turns the sweep into results/. Sized for a shared 2-core CPU: 8 px digits, ~20 minutes.
#   bash experiments/adm_table4_digits/sweep.sh                       # from the repository root
#   OUT=outputs/t4 STEPS=2000 bash experiments/adm_table4_digits/sweep.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/adm_table4_digits}
STEPS=${STEPS:-1000}          # diffusion training steps (each model)
CLF_STEPS=${CLF_STEPS:-1000}  # classifier training steps
NUM=${NUM:-300}               # samples per row
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} PYTHONPATH=${PYTHONPATH:-src}
# 8 px digits and a two-level net keep the whole experiment at CPU-minutes.
SMALL=(data.image_size=8 "net.channel_mult=[1,2]" "net.attention_resolutions=[4]")
# No wall-clock cap (the digits/ddpm demo has one): both models get exactly $STEPS steps.
COMMON=("${SMALL[@]}" logger=csv print_config=false trainer.enable_progress_bar=false ++trainer.max_time=null)

source experiments/common.sh  # train <name> <overrides...>: skips a run that already finished
train uncond experiment=digits/ddpm_uncond trainer.max_steps="$STEPS" callbacks.sample_grid.every_n_steps=0
train cond experiment=digits/ddpm trainer.max_steps="$STEPS" callbacks.sample_grid.every_n_steps=0
train classifier experiment=digits/classifier trainer.max_steps="$CLF_STEPS"

# One multirun job per (model, scale); targets are uniform random labels (seeded), as in ADM.
if [ ! -f "$OUT/sample/5/metrics.json" ]; then
  "$PY" -m beatgans.cli.sample -m run="$OUT/uncond,$OUT/cond" guidance=classifier \
      guidance.classifier_run="$OUT/classifier" guidance.scale=0,1,10 sampler=ddpm sampler.steps=50 \
      num_samples="$NUM" batch_size=100 metrics=fid_is_pr hydra.sweep.dir="$OUT/sample"
fi
"$PY" -m beatgans.cli.report experiments/adm_table4_digits/report.yaml "$OUT/sample"
