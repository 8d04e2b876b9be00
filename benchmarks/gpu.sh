#!/usr/bin/env bash
# One prepared GPU measurement (about 5-8 minutes on an H100/H200), JSON under $OUT (or the first argument):
#   1. full-width ADM ImageNet-64 training step in bf16 (width 192, batch 64): images/s and MFU
#      (model FLOPs from torch.utils.flop_counter; peak from the PEAK_FLOPS table in cli/bench.py)
#   2. the same with torch.compile: the speed-up
#   3. classifier-guided DDIM-25 images/s (UNet + noisy classifier), ours vs guided-diffusion's loop
#   4. a 2-GPU DDP training step (beatgans-train, trainer=ddp) when two GPUs are visible
# Without CUDA it runs the same commands at a tiny size on the CPU (a smoke test of this script).
#   bash benchmarks/gpu.sh [out_dir]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-outputs/gpu_bench}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")

if [ "$NGPU" -gt 0 ]; then
  DEV=(device=cuda)
  NET=(net.model_channels=192 batch_size=64)
  SAMPLE=(net.model_channels=192 classifier.model_channels=128 batch_size=64 sample.steps=25)
  REP=(warmup=3 repeats=10)
  TRAIN_NET=(net=imagenet64_cond data.image_size=64 data.batch_size=32 trainer.max_steps=60)
else
  echo "no CUDA device: running the CPU fallback at a tiny size" >&2
  DEV=(device=cpu)
  TINY=(net.image_size=16 net.channel_mult=[1,2] net.num_res_blocks=1 net.attention_resolutions=[8]
        net.num_head_channels=32 net.model_channels=32)
  NET=("${TINY[@]}" batch_size=2)
  SAMPLE=("${TINY[@]}" classifier.image_size=16 classifier.model_channels=32 classifier.channel_mult=[1,2]
          classifier.num_res_blocks=1 classifier.attention_resolutions=[8] classifier.num_head_channels=32
          batch_size=2 sample.steps=3)
  REP=(warmup=1 repeats=2)
  TRAIN_NET=(data.image_size=8 net.channel_mult=[1,1] net.attention_resolutions=[4] data.batch_size=8
             trainer.max_steps=4 diffusion.num_timesteps=50)
fi

bench() { $PY -m beatgans.cli.bench "${DEV[@]}" "${REP[@]}" "$@"; }
bench mode=train precision=bf16 oracle=false "${NET[@]}" output="$OUT_DIR/train_bf16.json"
bench mode=train precision=bf16 oracle=false compile=true "${NET[@]}" output="$OUT_DIR/train_bf16_compile.json"
bench mode=sample "${SAMPLE[@]}" output="$OUT_DIR/sample_guided_ddim.json"

if [ "$NGPU" -ge 2 ]; then
  $PY -m beatgans.cli.train trainer=ddp trainer.devices=2 logger=csv callbacks.sample_grid.on_train_end=false \
    "${TRAIN_NET[@]}" hydra.run.dir="$OUT_DIR/ddp2" print_config=false
fi

$PY - "$OUT_DIR" "$NGPU" <<'EOF'
import json, sys, datetime, pathlib
out, ngpu = pathlib.Path(sys.argv[1]), int(sys.argv[2])
train = json.loads((out / "train_bf16.json").read_text())
comp = json.loads((out / "train_bf16_compile.json").read_text())
samp = json.loads((out / "sample_guided_ddim.json").read_text())
ours, ours_c = train["models"]["ours"]["train"], comp["models"]["ours"]["train"]
summary = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "device": train["device"], "gpus": ngpu, "torch": train["torch"],
    "train_bf16_images_per_s": ours["images_per_s"], "train_bf16_mfu": ours["mfu"],
    "train_bf16_compile_images_per_s": ours_c["images_per_s"], "train_bf16_compile_mfu": ours_c["mfu"],
    "compile_speedup": ours_c["images_per_s"] / ours["images_per_s"],
    "guided_ddim_images_per_s": {k: v["images_per_s"] for k, v in samp["loops"].items()},
}
ddp = out / "ddp2" / "metrics.json"
if ddp.is_file():
    m = json.loads(ddp.read_text())
    summary["ddp2"] = {"global_step": m["global_step"], "train_seconds": m["train_seconds"]}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
EOF
