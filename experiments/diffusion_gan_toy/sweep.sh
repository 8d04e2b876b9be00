#!/usr/bin/env bash
# 25 Gaussians: the plain GAN and Diffusion-GAN with the reference controller defaults, the co-author
# group's protocol, 100k iterations, 3 seeds each (6 runs, 12-25 CPU-minutes each), then beatgans-report.
#   bash experiments/diffusion_gan_toy/sweep.sh                    # from the repository root
#   SEEDS=0 ARMS=toy/diffusion_gan_25gaussians_ct_sigma02 bash experiments/diffusion_gan_toy/sweep.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/diffusion_gan_toy}
SEEDS=${SEEDS:-0,1,2}
ARMS=${ARMS:-toy/gan_25gaussians_ct,toy/diffusion_gan_25gaussians_ct}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} PYTHONPATH=${PYTHONPATH:-src}
"$PY" -m beatgans.cli.train -m experiment="$ARMS" seed="$SEEDS" logger=csv print_config=false \
    trainer.enable_progress_bar=false hydra.sweep.dir="$OUT" "$@"
# REPORT=0 skips the report (a lane that trains arm by arm reports once at the end).
if [ "${REPORT:-1}" = 1 ]; then
  "$PY" -m beatgans.cli.report experiments/diffusion_gan_toy/report.yaml "$OUT"
fi
