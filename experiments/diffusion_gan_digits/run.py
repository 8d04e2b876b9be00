"""Digits (16x16, unconditional): plain GAN vs Diffusion-GAN, sample grids, the adaptive-T curve (Figure 4).

Trains both through the train CLI (experiment=digits/gan and digits/diffusion_gan, identical nets,
losses, budget and seed), then samples 1,797 images (the data set size) from each EMA generator and
scores them with the digits feature net (FID and precision/recall, k = 3) against the clean digits.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_digits/run.py --seed 1
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_digits/run.py --aggregate-only --seeds 0 1 2
    (--aggregate-only tabulates existing runs, scores cached in each run's scores.json; extra Hydra
    overrides for both trainings go at the end)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
MODELS = {"gan": "digits/gan", "diffusion_gan": "digits/diffusion_gan"}


def train(model: str, seed: int, extra: list[str]) -> None:
    run_dir = HERE / "runs" / f"{model}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "beatgans.cli.train", f"experiment={MODELS[model]}", f"seed={seed}",
           f"hydra.run.dir={run_dir}", "logger=none", "print_config=false", "trainer.enable_progress_bar=false",
           *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    with open(HERE / "runs" / f"{model}_seed{seed}.log", "w") as fh:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=fh, stderr=subprocess.STDOUT)


def score(run_dir: Path, num_samples: int = 1797) -> dict[str, float]:
    """Rebuild the module from the run's config and last.ckpt; FID / P / R of EMA-generator samples."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from beatgans.metrics.evaluate import evaluate_samples
    from beatgans.metrics.extractors import quantize_uint8

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    module = instantiate(cfg.task)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module.load_state_dict(state["state_dict"])
    images = module.sample_images(num_samples, seed=10_000)
    uint8 = quantize_uint8(images).permute(0, 2, 3, 1).contiguous()
    return evaluate_samples(uint8, None, metrics=("fid", "pr"), extractor="digits")


def aggregate(seeds: list[int]) -> str:
    """Score every (model, seed) run (cached in its scores.json), tabulate per seed and the mean, plot the
    adaptive T / r_d and D's mean outputs for each seed, copy the first seed's sample grids."""
    import statistics

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = HERE / "results"
    out.mkdir(exist_ok=True)
    lines = ["| model | seed | FID (digits feat.) | precision | recall | final T | final p | iterations | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    fig = Figure(figsize=(11, 3.5 * len(seeds)))
    FigureCanvasAgg(fig)
    scores: dict[str, list[dict]] = {m: [] for m in MODELS}
    for row, seed in enumerate(seeds):
        ax_t, ax_d = fig.add_subplot(len(seeds), 2, 2 * row + 1), fig.add_subplot(len(seeds), 2, 2 * row + 2)
        for model in MODELS:
            run = HERE / "runs" / f"{model}_seed{seed}"
            m = json.loads((run / "metrics.json").read_text())
            cached = run / "scores.json"
            if cached.exists():
                s = json.loads(cached.read_text())
            else:
                s = score(run)
                cached.write_text(json.dumps(s, indent=1))
            scores[model].append(s)
            lines.append(f"| {model} | {seed} | {s['fid']:.2f} | {s['precision']:.3f} | {s['recall']:.3f} | "
                         f"{m['gan/T']:.0f} | {m['gan/p']:.3f} | {m['gan/iterations']:.0f} | {m['train_seconds']:.0f} |")
            h = json.loads((run / "gan_history.json").read_text())
            it = [r["iteration"] for r in h]
            if model == "diffusion_gan":
                ax_t.plot(it, [r["T"] for r in h], label="T (adaptive)")
                ax_t2 = ax_t.twinx()
                ax_t2.plot(it, [r["r_d"] for r in h], color="tab:orange", alpha=0.6, label="r_d")
                ax_t2.axhline(0.6, color="tab:orange", ls=":", lw=0.8)
                ax_t2.set_ylabel("r_d")
            ax_d.plot(it, [r["d_real_prob"] for r in h], label=f"{model}: sigmoid D(real)")
            ax_d.plot(it, [r["d_fake_prob"] for r in h], ls="--", label=f"{model}: sigmoid D(fake)")
            grids = sorted((run / "samples").glob("final_grid*.png"))
            if grids and seed == seeds[0]:
                shutil.copy(grids[-1], out / f"grid_{model}.png")
        ax_t.set_xlabel("iteration")
        ax_t.set_ylabel("T")
        ax_t.set_title(f"Diffusion-GAN adaptive T on digits, seed {seed}", fontsize=9)
        ax_d.set_xlabel("iteration")
        ax_d.set_ylim(0, 1)
        ax_d.legend(fontsize=7)
    for model in MODELS:
        fids = [s["fid"] for s in scores[model]]
        spread = f" ± {statistics.stdev(fids):.2f}" if len(fids) > 1 else ""
        lines.append(f"| **{model} mean** | {len(fids)} seeds | {statistics.mean(fids):.2f}{spread} | "
                     f"{statistics.mean(s['precision'] for s in scores[model]):.3f} | "
                     f"{statistics.mean(s['recall'] for s in scores[model]):.3f} | | | | |")
    fig.tight_layout()
    fig.savefig(out / "adaptive_T.png", dpi=80)
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0, help="seed of the two runs to train")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="seeds to tabulate (default: --seed); each needs both runs under runs/")
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra Hydra overrides for both runs")
    args = ap.parse_args()
    if not args.aggregate_only:
        (HERE / "runs").mkdir(exist_ok=True)
        for model in MODELS:
            train(model, args.seed, args.extra)
    print(aggregate(args.seeds or [args.seed]))


if __name__ == "__main__":
    main()
