"""What a person reads while a run trains: one bar over the whole run (step / max_steps, ETA) on a terminal,
plain progress lines every N steps otherwise (SLURM logs), and a model summary without the always-zero FLOPs."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import (
    _format_summary_table,
)

from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def time_left(trainer: L.Trainer) -> float | None:
    """Seconds of training left under `trainer.max_time` (Lightning's Timer callback), None without one."""
    from lightning.pytorch.callbacks import Timer

    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    left = timer.time_remaining("train") if timer is not None else None
    return max(float(left), 0.0) if left is not None else None


def format_eta(seconds: float) -> str:
    """Seconds -> `1h02m`, `3m05s` or `42s`."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class StepProgress(ProgressBar):
    """Training progress counted in optimizer steps over the whole run, not per epoch.

    On a terminal: a tqdm bar `step / max_steps` with ETA and the progress-bar metrics (train/loss...).
    Otherwise (stdout redirected, e.g. SLURM): a log line every `every_n_steps` steps:
    `step 400/10000 (4.0%) | 12.3 steps/s | ETA 13m00s | train/loss=0.0312`.
    A resumed run counts from its checkpoint's step; the rate and ETA use this launch's steps only.
    """

    def __init__(self, every_n_steps: int = 100, tty: bool | None = None):
        super().__init__()
        self.every_n_steps = every_n_steps
        self.tty = tty
        self._enabled = True
        self._bar = None
        self._t0 = 0.0
        self._step0 = 0
        self._last = -1

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._step0 = time.monotonic(), trainer.global_step
        tty = sys.stdout.isatty() if self.tty is None else self.tty
        if self._enabled and tty and trainer.is_global_zero:
            from tqdm import tqdm

            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            self._bar = tqdm(total=total, initial=trainer.global_step, desc="train", unit="step", dynamic_ncols=True)

    def _metrics(self, trainer: L.Trainer) -> str:
        items = self.get_metrics(trainer, trainer.lightning_module)
        items.pop("v_num", None)
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not self._enabled or not trainer.is_global_zero or step == self._last:
            return  # one update per optimizer step (gradient accumulation repeats global_step)
        self._last = step
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(self._metrics(trainer), refresh=False)
        elif self.every_n_steps and step % self.every_n_steps == 0:
            log.info(self.line(trainer))

    def line(self, trainer: L.Trainer) -> str:
        step, total = trainer.global_step, trainer.max_steps
        elapsed = time.monotonic() - self._t0
        rate = (step - self._step0) / elapsed if elapsed > 0 else 0.0
        head = f"step {step}/{total} ({100 * step / total:.1f}%)" if total and total > 0 else f"step {step}"
        eta_s = (total - step) / rate if total and total > 0 and rate > 0 else None
        left = time_left(trainer)  # trainer.max_time stops the run earlier than max_steps would
        cap = left is not None and (eta_s is None or left < eta_s)
        eta = ""
        if cap or eta_s is not None:
            eta = f" | ETA {format_eta(left if cap else eta_s)}" + (" (max_time)" if cap else "")
        return f"{head} | {rate:.2f} steps/s{eta} | {self._metrics(trainer)}".rstrip(" |")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ModelSummaryNoFlops(ModelSummary):
    """Lightning's model summary without the FLOPs column and total when they are all zero (they are unless
    the module defines `example_input_array`)."""

    @staticmethod
    def summarize(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes,
                  total_flops, **kwargs) -> None:
        if total_flops == 0:
            summary_data = [col for col in summary_data if col[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size, total_training_modes,
                                      total_flops, *summary_data)
        if total_flops == 0:
            table = "\n".join(line for line in table.splitlines() if not line.lower().endswith("total flops"))
        log.info("\n%s", table)
