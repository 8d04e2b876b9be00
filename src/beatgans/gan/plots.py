"""Scatter plots of 2-D GAN samples over the true modes (matplotlib, no pyplot state)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch


def scatter_png(path: str | Path, series: dict[str, torch.Tensor], modes: torch.Tensor | None = None,
                title: str = "", lim: float | None = None,
                field: Callable[[torch.Tensor], torch.Tensor] | None = None, field_label: str = "sigmoid D(x)",
                resolution: int = 160) -> Path:
    """One panel per entry of ``series`` (name -> (N, 2) points), mode centres as red crosses.

    ``field`` maps a (M, 2) float32 grid of points to (M,) discriminator logits; when given, every
    panel shows ``sigmoid(field)`` on a ``resolution`` x ``resolution`` grid under the points, so one
    sees where D puts "real" relative to the modes and to where G puts its mass.

    Written atomically-enough for artefacts (rendered in memory, then saved). Returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4 * len(series), 4.2))
    FigureCanvasAgg(fig)
    if lim is None:
        lim = 1.25 * float(modes.abs().max()) + 0.5 if modes is not None else 5.0
    heat = None
    if field is not None:
        axis = torch.linspace(-lim, lim, resolution)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        with torch.no_grad():
            heat = torch.sigmoid(field(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).float().cpu())
        heat = heat.reshape(resolution, resolution)
    for i, (name, pts) in enumerate(series.items()):
        ax = fig.add_subplot(1, len(series), i + 1)
        if heat is not None:
            im = ax.imshow(heat, origin="lower", extent=(-lim, lim, -lim, lim), cmap="Greys", vmin=0, vmax=1)
            if i == len(series) - 1:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=field_label)
        pts = pts.detach().float().cpu()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color="tab:blue", linewidths=0)
        if modes is not None:
            ax.scatter(modes[:, 0], modes[:, 1], s=25, marker="x", color="tab:red", linewidths=1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"{name}  {title}".strip(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
