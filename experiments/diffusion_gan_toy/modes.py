"""Which modes does a finished toy run cover? High-quality samples per mode, drawn as the 5x5 grid.

For a run written by ``loop.py`` (``runs/<tag>_<arm>_seed<s>/`` with ``nets.pt``), rebuilds the
raw and EMA generators in a ``DiffusionGANModule``, draws the same samples (100 per mode) as the run's
metrics (``loop.eval_samples``) and counts, per mode, the samples within 3 std of it
(``beatgans.gan.mode_counts``; a mode is covered at >= 20). Writes
``results/<tag>/modes_<arm>_seed<s>.{json,png}``: a heatmap per generator, covered modes outlined.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_toy/modes.py \\
        --tag ct400k --arm diffusion_gan_uniformT500_noclean --seed 0
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

from beatgans.data.toy2d import gaussian_grid_modes
from beatgans.gan import MIN_COUNT, AdaptiveDiffusion, mode_counts
from beatgans.lit.diffusion_gan import DiffusionGANModule
from loop import eval_samples, saved_shape, toy_nets  # this folder is on sys.path when run as a script (and in the tests)

HERE = Path(__file__).resolve().parent


def per_mode(run: Path) -> dict:
    """``{"G": (M,) counts, "EMA G": (M,) counts, "spacing", "modes" (M, 2)}`` for ``run`` (M = grid**2)."""
    metrics = json.loads((run / "metrics.json").read_text())
    nets = torch.load(run / "nets.pt", weights_only=True)
    opt = partial(torch.optim.Adam, lr=0.0)
    modes = gaussian_grid_modes(metrics["spacing"], metrics.get("grid", 5))  # runs before the grid option: 5
    module = DiffusionGANModule(*toy_nets(*saved_shape(nets)), AdaptiveDiffusion(), opt, opt,
                                ema_rate=0.999, eval_modes=modes, eval_std=metrics["data_std"], save_artifacts=False)
    module.generator.load_state_dict(nets["generator"])
    module.ema.shadow(0).load_state_dict(nets["ema_generator"])
    out = {"run": run.name, "spacing": metrics["spacing"], "modes": modes}
    with torch.no_grad():
        for name, pts in eval_samples(module).items():
            out[name] = mode_counts(pts, modes, metrics["data_std"])
    return out


def plot(path: Path, res: dict) -> None:
    """Two grid x grid heatmaps (raw and EMA G) of the per-mode counts, laid out as the grid (y up)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes, spacing = res["modes"], res["spacing"]
    k = round(len(modes) ** 0.5)  # modes per axis
    half = (k - 1) / 2
    col = torch.round(modes[:, 0] / spacing + half).long()  # grid column 0..k-1 from x
    row = torch.round(half - modes[:, 1] / spacing).long()  # grid row 0..k-1 from y, top row first
    fig = Figure(figsize=(8, 3.8))
    FigureCanvasAgg(fig)
    for i, name in enumerate(("G", "EMA G")):
        grid = torch.zeros(k, k, dtype=torch.long)
        grid[row, col] = res[name]
        ax = fig.add_subplot(1, 2, i + 1)
        im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(int(grid.max()), MIN_COUNT))
        for r in range(k):
            for c in range(k):
                v = int(grid[r, c])
                ax.text(c, r, str(v), ha="center", va="center", fontsize=8, color="w" if v < 60 else "k",
                        fontweight="bold" if v >= MIN_COUNT else "normal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{name}: {int((res[name] >= MIN_COUNT).sum())}/{k * k} modes with >= {MIN_COUNT}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{res['run']}: samples within 3 std of each mode (of {100 * k * k:,})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    from run import analysis_cli

    args, run, dest = analysis_cli(__doc__)
    res = per_mode(run)
    plot(dest / f"modes_{args.arm}_seed{args.seed}.png", res)
    js = {"run": res["run"], **{k: res[k].tolist() for k in ("G", "EMA G")},
          "modes": res["modes"].tolist()}
    (dest / f"modes_{args.arm}_seed{args.seed}.json").write_text(json.dumps(js))
    print(json.dumps({k: js[k] for k in ("run", "G", "EMA G")}))


if __name__ == "__main__":
    main()
