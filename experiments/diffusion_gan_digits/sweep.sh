#!/usr/bin/env bash
# Diffusion-GAN vs the plain GAN on the 16 px digits: one beatgans-train multirun over model x seed (10 jobs),
# each scored at the end of training (1,797 EMA-generator samples, latent seeds 10000.., FID and
# precision/recall on the digits CNN's features -> final/* in metrics.json), then beatgans-report.
# About 1 CPU-hour (10 runs of ~6 minutes on one thread).
#   bash experiments/diffusion_gan_digits/sweep.sh          # from the repository root
#   SEEDS=0,1 bash experiments/diffusion_gan_digits/sweep.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/diffusion_gan_digits}
SEEDS=${SEEDS:-0,1,2,3,4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} WANDB_MODE=${WANDB_MODE:-offline} PYTHONPATH=${PYTHONPATH:-src}
"$PY" -m beatgans.cli.train -m experiment=digits/gan,digits/diffusion_gan seed="$SEEDS" \
    metrics=fid_is_pr "metrics.names=[fid,precision,recall]" callbacks.sample_metrics.on_train_end=true \
    callbacks.sample_metrics.num_samples=1797 callbacks.sample_metrics.seed=10000 \
    logger=csv print_config=false trainer.enable_progress_bar=false hydra.sweep.dir="$OUT" "$@"
"$PY" -m beatgans.cli.report experiments/diffusion_gan_digits/report.yaml "$OUT"
