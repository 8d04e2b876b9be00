"""Lightning callbacks and plugins shared by every task: sample grids, atomic and exactly resumable checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
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


def stale_temp_files(dirpath: str | os.PathLike) -> list[Path]:
    """Temporary files `AtomicCheckpointIO` leaves behind when the process is killed mid-write."""
    return sorted(Path(dirpath).glob(".*.ckpt.tmp")) if Path(dirpath).is_dir() else []


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that keeps a run directory trustworthy across stops and resumes.

    - The batch at which training stops (`max_steps`, `max_time` or any `should_stop`) writes `last.ckpt`
      there, in `on_train_batch_end`, so a resume from it continues mid-epoch exactly. Lightning's own
      end-of-training save (in `on_train_end`) records the interrupted epoch as finished, and a run resumed
      from it would start a new epoch (other batches, other weights).
    - No version counter: a file written again (`last.ckpt` of a moved or copied run, `stepN.ckpt` after an
      interrupted save) replaces the old one instead of appearing as `last-v1.ckpt` / `stepN-v1.ckpt` beside
      a stale original, so `last.ckpt` is always the newest state.
    - Temporary files of a save killed mid-write are removed when training starts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.is_global_zero and self.dirpath:
            for tmp in stale_temp_files(self.dirpath):
                log.info("Removing %s, left by a checkpoint save that was interrupted.", tmp)
                tmp.unlink(missing_ok=True)

    @staticmethod
    def stops_after_this_batch(trainer: L.Trainer) -> bool:
        """True when the fit loop will exit after the current batch (step budget or a stop request)."""
        if trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step:
            return True
        return bool(trainer.should_stop) and trainer.fit_loop._can_stop_early

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.save_last and self.stops_after_this_batch(trainer) and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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
