"""Which modes does a finished toy run cover? High-quality samples per mode, drawn as the 5x5 grid.

For a run written by ``beatgans-train experiment=toy/...`` (its ``checkpoints/last.ckpt``), rebuilds the
``DiffusionGANModule``, draws the same samples (100 per mode) as the run's metrics
(``checkpoint.eval_samples``) and counts, per mode, the samples within 3 std of it
(``beatgans.gan.mode_counts``; a mode is covered at >= 20). Writes
``<run>/analysis/modes_<arm>_seed<s>.{json,png}`` (lines.py reads the JSON): a heatmap per generator,
covered modes outlined.

    python experiments/diffusion_gan_toy/modes.py <run dir> [--out DIR]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from checkpoint import (  # this folder is on sys.path as a script and in the tests
    analysis_cli,
    eval_samples,
    load_module,
    run_name,
)

from beatgans.gan import MIN_COUNT, mode_counts


def per_mode(run: Path) -> dict:
    """``{"G": (M,) counts, "EMA G": (M,) counts, "spacing", "modes" (M, 2)}`` for ``run`` (M = grid**2)."""
    module = load_module(run)
    modes = module.eval_modes
    spacing = float(torch.pdist(modes).min())
    out = {"run": Path(run).name, "spacing": spacing, "modes": modes}
    for name, pts in eval_samples(module).items():
        out[name] = mode_counts(pts, modes, module.hparams.eval_std)
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
    run, dest = analysis_cli(__doc__)
    res = per_mode(run)
    name = run_name(run)
    plot(dest / f"modes_{name}.png", res)
    js = {"run": res["run"], **{k: res[k].tolist() for k in ("G", "EMA G")},
          "modes": res["modes"].tolist()}
    (dest / f"modes_{name}.json").write_text(json.dumps(js))
    print(json.dumps({k: js[k] for k in ("run", "G", "EMA G")}))


if __name__ == "__main__":
    main()
