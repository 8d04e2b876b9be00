#!/usr/bin/env bash
# Quality against NFE on 8 px digits (issue 23, section 4): three ways of getting class-directed samples
# (a conditional net, an unconditional net + noisy classifier, classifier-free guidance), each sampled with
# DDPM, DDIM, DPM-Solver++ 2M and 3M at several NFE and three sample seeds; beatgans-report writes results/.
#   bash experiments/nfe_digits/sweep.sh            # train, then sample, then report (from the repo root)
#   bash experiments/nfe_digits/sweep.sh train      # only the three trainings (the cascade reuses cfg8)
#   bash experiments/nfe_digits/sweep.sh sample     # only the sampling sweeps and the report
# Sized for a shared 2-core CPU (see README.md for the budget): 8 px, small nets, 64 samples per job.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/nfe_digits}
STEPS=${STEPS:-400}           # diffusion training steps (each model)
CLF_STEPS=${CLF_STEPS:-300}   # noisy-classifier training steps
NUM=${NUM:-64}                # samples per job
NFES=${NFES:-5,10,15,25,50,100}   # network evaluations per sample (= sampler.steps for all four samplers)
SEEDS=${SEEDS:-"0 1000 2000"} # sample i uses seed + i: seeds 1000 apart never share a sample
CFG_W=${CFG_W:-2}             # classifier-free weight (1 = plain conditional)
CLF_S=${CLF_S:-4}             # classifier scale for the unconditional model
MODELS=${MODELS:-"cond clf cfg"} # which of the three to sample (cond and cfg need only cfg8)
PHASE=${1:-all}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} PYTHONPATH=${PYTHONPATH:-src}
SMALL=(data.image_size=8 "net.channel_mult=[1,2]" "net.attention_resolutions=[4]")
COMMON=("${SMALL[@]}" logger=csv print_config=false trainer.enable_progress_bar=false ++trainer.max_time=null)

source experiments/common.sh  # train <name> <overrides...>: skips a run that already finished
if [ "$PHASE" != sample ]; then
  # One class-conditional net trained with label dropout serves as "conditional" (guidance=none, the
  # conditional output) and as "CFG" (guidance=cfg); it is also the 8 px base of experiments/cascade_digits.
  train cfg8 experiment=digits/ddpm_cfg trainer.max_steps="$STEPS" callbacks.sample_grid.every_n_steps=0
  if [[ " $MODELS " == *" clf "* ]]; then   # only the classifier-guided model needs these two
    train uncond8 experiment=digits/ddpm_uncond trainer.max_steps="$STEPS" callbacks.sample_grid.every_n_steps=0
    train classifier8 experiment=digits/classifier trainer.max_steps="$CLF_STEPS"
  fi
fi
[ "$PHASE" = train ] && exit 0

# model name -> run and guidance overrides
declare -A MODEL=(
  [cond]="run=$OUT/cfg8 guidance=none"
  [clf]="run=$OUT/uncond8 guidance=classifier guidance.classifier_run=$OUT/classifier8 guidance.scale=$CLF_S"
  [cfg]="run=$OUT/cfg8 guidance=cfg guidance.scale=$CFG_W"
)
sweep() {
  local dir=$OUT/sample/$1 jobs=$2; shift 2
  if [ -d "$dir" ]; then
    [ "$(find "$dir" -name metrics.json | wc -l)" -ge "$jobs" ] && { echo "keeping $dir"; return; }
    echo "$dir is incomplete; move it away and re-run"; exit 1
  fi
  "$PY" -m beatgans.cli.sample -m "$@" num_samples="$NUM" batch_size="$NUM" metrics=fid_is_pr progress=false \
      hydra.sweep.dir="$dir"
}
# One multirun per (model, sampler family): each process pays torch's and the metrics' imports once (about a
# minute on the shared machine). `seed` comes first, so Hydra runs whole seeds one after another.
n_nfe=$(echo "$NFES" | tr ',' '\n' | wc -l)
n_seed=$(echo $SEEDS | wc -w)
for m in $MODELS; do
  # shellcheck disable=SC2086
  sweep "${m}_ddxm" $((2 * n_nfe * n_seed)) seed="${SEEDS// /,}" ${MODEL[$m]} sampler=ddpm,ddim sampler.steps="$NFES"
  # shellcheck disable=SC2086
  sweep "${m}_dpm" $((2 * n_nfe * n_seed)) seed="${SEEDS// /,}" ${MODEL[$m]} sampler=dpm_solver sampler.order=2,3 \
      sampler.steps="$NFES"
done
"$PY" -m beatgans.cli.report experiments/nfe_digits/report.yaml "$OUT/sample"
"$PY" -m beatgans.cli.report experiments/nfe_digits/training.yaml "$OUT/cfg8" "$OUT/uncond8" "$OUT/classifier8"
