"""25 Gaussians: plain GAN vs Diffusion-GAN with identical nets, losses, budget and seeds.

Trains both through the train CLI (experiment=toy/gan_25gaussians and toy/diffusion_gan_25gaussians),
then tabulates modes covered / high-quality share per seed from each run's metrics.json, plots D's
mean outputs on real and fake over training (gan_history.json) and collects the final scatter plots.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_toy/run.py --seeds 0 1 2
    (add --aggregate-only to rebuild the table and figures from existing runs)
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
MODELS = {"gan": "toy/gan_25gaussians", "diffusion_gan": "toy/diffusion_gan_25gaussians",
          "diffusion_gan_target0.2": "toy/diffusion_gan_25gaussians_target02"}


def train(model: str, seed: int, extra: list[str]) -> Path:
    run_dir = HERE / "runs" / f"{model}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "beatgans.cli.train", f"experiment={MODELS[model]}", f"seed={seed}",
           f"hydra.run.dir={run_dir}", "logger=none", "callbacks.model_checkpoint=null", "print_config=false",
           "trainer.enable_progress_bar=false", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    with open(HERE / "runs" / f"{model}_seed{seed}.log", "w") as fh:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=fh, stderr=subprocess.STDOUT)
    return run_dir


def aggregate(seeds: list[int]) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, hist = [], {}
    models = [m for m in MODELS if all((HERE / "runs" / f"{m}_seed{s}" / "metrics.json").exists() for s in seeds)]
    for model in models:
        for seed in seeds:
            run = HERE / "runs" / f"{model}_seed{seed}"
            m = json.loads((run / "metrics.json").read_text())
            hist[(model, seed)] = json.loads((run / "gan_history.json").read_text())
            rows.append((model, seed, m))
    lines = ["| model | seed | modes covered (G) | HQ share (G) | modes covered (EMA G) | HQ share (EMA G) "
             "| final T | final r_d | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for model, seed, m in rows:
        lines.append(f"| {model} | {seed} | {m['toy/modes_covered']:.0f}/25 | {m['toy/hq_share']:.3f} | "
                     f"{m['toy/ema_modes_covered']:.0f}/25 | {m['toy/ema_hq_share']:.3f} | {m['gan/T']:.0f} | "
                     f"{m['gan/r_d']:.2f} | {m['train_seconds']:.0f} |")
    for model in models:
        ms = [m for mm, _, m in rows if mm == model]
        cov = sum(m["toy/modes_covered"] for m in ms) / len(ms)
        hq = sum(m["toy/hq_share"] for m in ms) / len(ms)
        lines.append(f"| **{model} mean** | | {cov:.1f}/25 | {hq:.3f} | | | | | |")
    table = "\n".join(lines)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "table.md").write_text(table + "\n")

    fig = Figure(figsize=(5 * len(models), 3.6 * len(seeds)))
    FigureCanvasAgg(fig)
    for i, seed in enumerate(seeds):
        for j, model in enumerate(models):
            h = hist[(model, seed)]
            ax = fig.add_subplot(len(seeds), len(models), len(models) * i + j + 1)
            it = [r["iteration"] for r in h]
            ax.plot(it, [r["d_real_prob"] for r in h], label="mean sigmoid D(real)")
            ax.plot(it, [r["d_fake_prob"] for r in h], label="mean sigmoid D(fake)")
            ax.set_ylim(0, 1)
            ax.set_title(f"{model}, seed {seed}", fontsize=9)
            if model.startswith("diffusion_gan"):
                ax2 = ax.twinx()
                ax2.plot(it, [r["T"] for r in h], color="gray", ls="--", label="T")
                ax2.set_ylabel("T", fontsize=8)
            ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(HERE / "results" / "d_outputs.png", dpi=80)
    for model in models:
        for seed in seeds:
            src = HERE / "runs" / f"{model}_seed{seed}" / "samples" / "scatter_final.png"
            if src.exists():
                shutil.copy(src, HERE / "results" / f"scatter_{model}_seed{seed}.png")
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("extra", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    if not args.aggregate_only:
        (HERE / "runs").mkdir(exist_ok=True)
        for seed in args.seeds:
            for model in args.models:
                train(model, seed, args.extra)
        if args.models != list(MODELS):
            return  # partial launch (e.g. one model per process); aggregate later with --aggregate-only
    print(aggregate(args.seeds))


if __name__ == "__main__":
    main()
