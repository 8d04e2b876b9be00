"""The paper's global batch split over processes, with gradient accumulation.

Papers state the batch of one optimizer step over all devices (ADM ImageNet 64: 2048; DDPM CIFAR-10:
128). A preset states that number as ``data.global_batch_size``; the train CLI turns it into the
per-process ``data.batch_size`` Lightning's loaders use and ``trainer.accumulate_grad_batches``:

    global_batch_size = batch_size x accumulate_grad_batches x world_size,  world_size = devices x nodes

With ``data.micro_batch_size`` unset each process takes ``global / world`` images per step in one pass;
with it set each pass takes ``micro`` images and ``global / world / micro`` passes are accumulated.
Presets that leave ``global_batch_size`` null keep ``data.batch_size`` as the per-process batch.
A split that does not divide is refused with one sentence, before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beatgans.utils.errors import UserError

__all__ = ["BatchSizeError", "BatchSplit", "split_global_batch", "world_size_from_trainer", "apply_batch_split",
           "check_batch_split"]


class BatchSizeError(UserError):
    """A batch configuration that cannot be honoured; the message says what to change."""


@dataclass(frozen=True)
class BatchSplit:
    """How one optimizer step's ``global_batch_size`` images are spread.

    Attributes:
        per_process: images each process loads per forward/backward pass (``data.batch_size``).
        accumulate: passes per optimizer step (``trainer.accumulate_grad_batches``).
        world_size: number of processes (devices x nodes).
    """

    per_process: int
    accumulate: int
    world_size: int

    @property
    def global_batch_size(self) -> int:
        return self.per_process * self.accumulate * self.world_size


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BatchSizeError(f"{name} must be a positive integer, got {value!r}.")
    return value


def split_global_batch(global_batch_size: int, world_size: int, micro_batch_size: int | None = None) -> BatchSplit:
    """Per-process batch and accumulation steps for ``global_batch_size`` over ``world_size`` processes.

    Raises:
        BatchSizeError: when the global batch is not a multiple of the world size, or the per-process
            share is not a multiple of ``micro_batch_size``.
    """
    global_batch_size = _positive_int(global_batch_size, "data.global_batch_size")
    world_size = _positive_int(world_size, "the number of processes")
    if global_batch_size % world_size:
        raise BatchSizeError(
            f"data.global_batch_size={global_batch_size} does not split evenly over {world_size} processes "
            f"(trainer.devices x trainer.num_nodes); use a process count that divides it.")
    share = global_batch_size // world_size
    if micro_batch_size is None:
        return BatchSplit(share, 1, world_size)
    micro_batch_size = _positive_int(micro_batch_size, "data.micro_batch_size")
    if share % micro_batch_size:
        raise BatchSizeError(
            f"data.micro_batch_size={micro_batch_size} does not divide the {share} images each of the {world_size} "
            f"processes takes per step (data.global_batch_size={global_batch_size}); choose a divisor of {share}.")
    return BatchSplit(micro_batch_size, share // micro_batch_size, world_size)


def world_size_from_trainer(trainer_cfg: Mapping[str, Any]) -> int:
    """Processes a ``lightning.Trainer`` built from ``trainer_cfg`` will run: devices x ``num_nodes``.

    ``devices`` as Lightning reads it: a count, a list or comma string of ids, or ``"auto"`` / ``-1``
    (every visible GPU when the run may use GPUs, else one process).
    """
    nodes = int(trainer_cfg.get("num_nodes") or 1)
    devices = trainer_cfg.get("devices", "auto")
    text = str(devices).strip()
    if not isinstance(devices, (str, int)) and hasattr(devices, "__len__"):  # a list (or ListConfig) of ids
        count = len(devices)
    elif "," in text:
        count = len([d for d in text.split(",") if d.strip()])
    elif text.isdigit() and int(text) > 0:
        count = int(text)
    else:
        import torch

        on_gpu = str(trainer_cfg.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
        count = torch.cuda.device_count() if on_gpu and torch.cuda.is_available() else 1
    return max(count, 1) * nodes


def apply_batch_split(cfg) -> BatchSplit | None:
    """Resolve ``data.global_batch_size`` / ``data.micro_batch_size`` in a train config, in place.

    Sets ``data.batch_size`` (per process) and ``trainer.accumulate_grad_batches`` so the recorded
    config holds the values the run uses. Returns the split, or None when ``global_batch_size`` is
    unset (``data.batch_size`` is then the per-process batch, as before).
    """
    from omegaconf import open_dict

    data, trainer = cfg.data, cfg.trainer
    global_batch, micro = data.get("global_batch_size"), data.get("micro_batch_size")
    if global_batch is None:
        if micro is not None:
            raise BatchSizeError("data.micro_batch_size needs data.global_batch_size (the batch of one optimizer step "
                                 "over all processes); set it, or drop micro_batch_size and use data.batch_size.")
        return None
    if data.get("batch_size") is not None:
        raise BatchSizeError(
            f"data.batch_size={data.batch_size} (per process) and data.global_batch_size={global_batch} are both set; "
            "keep one: the global batch, or data.global_batch_size=null with a per-process data.batch_size.")
    if int(trainer.get("accumulate_grad_batches") or 1) != 1:
        raise BatchSizeError("trainer.accumulate_grad_batches is derived from data.global_batch_size; set "
                             "data.micro_batch_size instead.")
    split = split_global_batch(global_batch, world_size_from_trainer(trainer), micro)
    with open_dict(cfg):
        data.batch_size = split.per_process
        trainer.accumulate_grad_batches = split.accumulate
    return split


def check_batch_split(split: BatchSplit | None, trainer, module) -> None:
    """After the Trainer is built: it runs the assumed number of processes, and the task can accumulate."""
    if split is None:
        return
    if trainer.world_size != split.world_size:
        raise BatchSizeError(
            f"data.global_batch_size was split over {split.world_size} processes but the trainer runs "
            f"{trainer.world_size}; set trainer.devices and trainer.num_nodes explicitly.")
    if split.accumulate > 1 and not getattr(module, "automatic_optimization", True):
        raise BatchSizeError(f"{type(module).__name__} steps its optimizers by hand and cannot accumulate gradients; "
                             "leave data.micro_batch_size unset.")
