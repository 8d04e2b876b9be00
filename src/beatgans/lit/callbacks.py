"""Lightning callbacks and plugins shared by every task: sample grids, atomic checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from beatgans.utils.images import save_grid_png, to_uint8
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in the same folder, then rename it into place, so a crash
    mid-write never leaves a truncated `last.ckpt`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def run_dir_of(trainer: L.Trainer) -> Path:
    """The run directory (the trainer's default_root_dir, which the train CLI sets to Hydra's output dir)."""
    return Path(trainer.default_root_dir)


def log_image(trainer: L.Trainer, key: str, path: Path, step: int) -> None:
    """Send a saved PNG to wandb when the trainer logs there (other loggers just keep the file)."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.log_image(key=key, images=[str(path)], step=step)


class SampleGridCallback(L.Callback):
    """Every `every_n_steps` optimizer steps (and at the end of training), sample a grid with EMA weights
    and save it as `samples/<prefix>_step<k>.png` in the run directory (and to wandb).

    Class-conditional models get one row per class (`per_class` columns); others a square grid of `num_samples`.
    """

    def __init__(self, every_n_steps: int = 1000, num_samples: int = 64, per_class: int = 10, seed: int = 0,
                 sampler: str | None = None, steps: int | None = None, scale: int = 4, on_train_end: bool = True):
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.per_class = per_class
        self.seed = seed
        self.sampler = sampler
        self.steps = steps
        self.scale = scale
        self.at_end = on_train_end
        self.last_path: Path | None = None
        self._done_step: int | None = None

    def _labels_and_nrow(self, pl_module) -> tuple[torch.Tensor | None, int | None, int]:
        k = getattr(pl_module, "num_classes", None)
        if k:
            labels = torch.arange(k).repeat_interleave(self.per_class)
            return labels, self.per_class, len(labels)
        return None, None, self.num_samples

    def make_grid(self, trainer: L.Trainer, pl_module, name: str) -> Path | None:
        if not hasattr(pl_module, "sample_images"):
            return None
        labels, nrow, n = self._labels_and_nrow(pl_module)
        images = pl_module.sample_images(n, seed=self.seed, sampler=self.sampler, steps=self.steps, labels=labels)
        if trainer.global_rank != 0:
            return None
        path = run_dir_of(trainer) / "samples" / f"{name}.png"
        save_grid_png(path, to_uint8(images).cpu().numpy(), nrow=nrow, scale=self.scale)
        log_image(trainer, "samples/grid", path, trainer.global_step)
        self.last_path = path
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # global_step repeats across micro-batches under gradient accumulation: one grid per step.
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and self._done_step != step:
            self._done_step = step
            self.make_grid(trainer, pl_module, f"grid_step{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end:
            path = self.make_grid(trainer, pl_module, "final_grid")
            if path is not None:
                log.info("Final sample grid: %s", path)
