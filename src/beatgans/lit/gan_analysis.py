"""`GANAnalysis`: what a Diffusion-GAN run measures and draws besides training (toy data only).

- every ``plot_every`` iterations (and at the end): a scatter plot of raw and EMA generator samples over
  the mode centres, on top of D's landscape ``sigmoid(D(x, t=0))``, as ``<run>/samples/<name>.png``
  (also sent to wandb when a wandb logger is attached);
- at the end: ``<run>/gan_history.json`` (the module's history of p, T, r_d and D means);
- ``final_metrics``: mode coverage of ``eval_samples`` samples (latent seeds 12345 ...) of both generators.

`DiffusionGANModule` builds one from its own settings and returns it from ``configure_callbacks``, so
presets keep configuring it under ``task.`` and the module keeps only the G/D steps, the controller and
checkpoint state.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from beatgans.gan import discriminator_field, mode_coverage
from beatgans.lit.callbacks import log_image

EVAL_SEED = 12345  # latents of every toy metric


class GANAnalysis(L.Callback):
    """Scatter plots, history file and toy mode coverage for a `DiffusionGANModule`.

    Args:
        plot_every: iterations between scatter plots of 2-D samples (0 = only none).
        eval_modes: (K, 2) float mode centres, or None (no coverage, no crosses on the plots).
        eval_std, eval_min_count, eval_samples: the coverage protocol (``beatgans.gan.mode_coverage``).
        save_artifacts: write files into ``trainer.default_root_dir`` (rank 0 only).
    """

    def __init__(self, plot_every: int = 0, eval_modes: torch.Tensor | None = None, eval_std: float = 0.05,
                 eval_min_count: int = 20, eval_samples: int = 2500, save_artifacts: bool = True) -> None:
        self.plot_every = plot_every
        self.eval_modes = eval_modes
        self.eval_std = eval_std
        self.eval_min_count = eval_min_count
        self.eval_samples = eval_samples
        self.save_artifacts = save_artifacts

    def _run_dir(self, trainer) -> Path | None:
        # debug=fdr (fast_dev_run) writes no artefacts
        if trainer is None or not self.save_artifacts or trainer.global_rank != 0 or trainer.fast_dev_run:
            return None
        return Path(trainer.default_root_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.plot_every and pl_module.iteration % self.plot_every == 0:
            self.save_scatter(trainer, pl_module, f"scatter_it{pl_module.iteration:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        run_dir = self._run_dir(trainer)
        if run_dir is None:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "gan_history.json").write_text(json.dumps(pl_module.history, indent=1))
        if self.plot_every:
            self.save_scatter(trainer, pl_module, "scatter_final")

    def save_scatter(self, trainer, module, name: str, num_points: int = 2000) -> Path | None:
        """Scatter plot of 2-D samples (raw and EMA G) over the modes and D's landscape; None for images."""
        run_dir = self._run_dir(trainer)
        if run_dir is None:
            return None
        from beatgans.gan.plots import scatter_png  # matplotlib only when plotting

        raw = module.sample_images(num_points, seed=0, use_ema=False).cpu()
        if raw.dim() != 2:
            return None
        ema = module.sample_images(num_points, seed=0, use_ema=True).cpu()
        path = run_dir / "samples" / f"{name}.png"
        title = f"it {module.iteration}  T={module.diffusion.T}  p={module.diffusion.p:.3f}"
        scatter_png(path, {"G": raw, "EMA G": ema}, self.eval_modes, title=title,
                    field=lambda pts: discriminator_field(module.discriminator, pts),
                    field_label="sigmoid D(x, t=0)")
        log_image(trainer, "samples/scatter", path, trainer.global_step)
        return path

    def final_metrics(self, module) -> dict[str, float]:
        """``toy/{,ema_}{modes_covered,num_modes,hq_share}`` of both generators; {} without ``eval_modes``."""
        if self.eval_modes is None:
            return {}
        out = {}
        for tag, use_ema in (("", False), ("ema_", True)):
            pts = module.sample_images(self.eval_samples, seed=EVAL_SEED, use_ema=use_ema)
            cov = mode_coverage(pts, self.eval_modes, self.eval_std, self.eval_min_count)
            out.update({f"toy/{tag}{k}": v for k, v in cov.items()})
        return out
