"""Resuming a training run: which checkpoint, is it readable, did the settings change, where each launch's
settings are recorded. Everything here runs before anything in the run directory is touched."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf

from beatgans.utils.errors import UserError
from beatgans.utils.logging import get_logger
from beatgans.utils.nested import flatten

log = get_logger(__name__)

# Settings that legitimately change when a run is resumed: the budget, the checkpoint to resume from,
# where things live, the opt-in itself and console output. Everything else must match the checkpoint.
RESUMABLE_KEYS = ("trainer.max_steps", "trainer.max_time", "trainer.max_epochs", "ckpt_path", "resume_overrides",
                  "logger.wandb.name", "logger.wandb.group",  # wandb labels, not training settings
                  "print_config", "paths")
RESUME_MODES = ("refuse", "apply")
CONFIG_KEY = "beatgans_config"  # where the checkpoint keeps the config that trained it


class ResumeError(UserError):
    """A resume that cannot proceed; the message names the file or setting and what to change."""


def find_checkpoint(ckpt_path: str | None, run_dir: Path) -> Path | None:
    """`last` -> `<run>/checkpoints/last.ckpt`, or the newest `step*.ckpt` when no last.ckpt was written yet;
    a run directory -> the same inside it; a file -> itself."""
    if not ckpt_path:
        return None
    if ckpt_path == "last" or Path(ckpt_path).is_dir():
        folder = (run_dir if ckpt_path == "last" else Path(ckpt_path)) / "checkpoints"
        last = folder / "last.ckpt"
        if last.is_file():
            return last
        steps = sorted(folder.glob("step*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or -1))
        if steps:
            log.info("No last.ckpt in %s: resuming from the newest periodic checkpoint, %s.", folder, steps[-1].name)
            return steps[-1]
        raise ResumeError(f"ckpt_path={ckpt_path!r}: no checkpoint in {folder} (to resume a run pass "
                          "hydra.run.dir=<run dir> ckpt_path=last, or ckpt_path=<file.ckpt>).")
    if not Path(ckpt_path).is_file():
        raise ResumeError(f"ckpt_path={ckpt_path!r}: no checkpoint at {ckpt_path}.")
    return Path(ckpt_path)


def read_checkpoint(path: Path) -> dict:
    """Load a Lightning checkpoint on the CPU, or fail with one sentence naming the file."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001  truncated zip, garbage bytes, wrong format: all mean "not a usable checkpoint"
        raise ResumeError(f"checkpoint {path} cannot be read ({type(err).__name__}: it is truncated or not a "
                          "checkpoint); resume from another file with ckpt_path=<file.ckpt>.") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise ResumeError(f"checkpoint {path} is not a Lightning training checkpoint (no state_dict/global_step); "
                          "resume from another file with ckpt_path=<file.ckpt>.")
    return ckpt


def comparable_config(cfg: DictConfig) -> dict:
    """The resolved config with every `paths.*` value replaced by a marker (`<paths.output_dir>`), so a run moved
    or copied elsewhere compares equal, and without the settings that may change on resume (RESUMABLE_KEYS)."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if "paths" in cfg:
        cfg.paths = {k: f"<paths.{k}>" for k in cfg.paths}
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items() if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)}


def config_differences(saved: dict, current: dict) -> list[str]:
    """`key: saved -> current` for every setting that differs (added and removed keys included)."""
    missing = object()
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, missing), current.get(key, missing)
        if a != b:
            lines.append(f"{key}: {'(unset)' if a is missing else a!r} -> {'(unset)' if b is missing else b!r}")
    return lines


def check_resume(cfg: DictConfig, ckpt_path: Path) -> list[str]:
    """Read the checkpoint and compare its config with `cfg`. Returns the differences that `resume_overrides=apply`
    will apply; raises ResumeError when they exist and the opt-in is absent."""
    mode = cfg.get("resume_overrides") or "refuse"
    if mode not in RESUME_MODES:
        raise ResumeError(f"resume_overrides={mode!r}: use 'refuse' (default) or 'apply'.")
    saved = read_checkpoint(ckpt_path).get(CONFIG_KEY)
    if saved is None:
        log.warning("Checkpoint %s holds no config (written before configs were stored): the resumed settings "
                    "cannot be compared with the ones that trained it.", ckpt_path)
        return []
    diffs = config_differences(saved, comparable_config(cfg))
    if diffs and mode != "apply":
        raise ResumeError(f"the settings differ from those that trained {ckpt_path}: {'; '.join(diffs)}. Drop these "
                          "overrides, or pass resume_overrides=apply to continue with the new values.")
    for line in diffs:
        log.info("resume_overrides=apply: %s", line)
    return diffs


def launch_record_dir(run_dir: Path, resuming: bool) -> Path:
    """`<run>/.hydra` for the first launch; `<run>/.hydra/resume-<k>` (next free k) for each resume, so the
    original launch's files are never overwritten."""
    base = run_dir / ".hydra"
    if not resuming:
        return base
    k = 1
    while (base / f"resume-{k}").exists():
        k += 1
    return base / f"resume-{k}"


class ConfigInCheckpoint(L.Callback):
    """Store the run's comparable config (see `comparable_config`) in every checkpoint, under CONFIG_KEY."""

    def __init__(self, cfg: DictConfig):
        self.config = comparable_config(cfg)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config


class ApplyOptimizerSettings(L.Callback):
    """With `resume_overrides=apply`: the optimizers' hyperparameters (lr, weight decay, betas...) come from the
    new config, not from the checkpoint's optimizer state, which Lightning would otherwise restore over them.
    Under an lr scheduler the checkpoint's progress along the schedule is kept and rescaled to the new base lr."""

    def on_train_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.core.optimizer import _init_optimizers_and_lr_schedulers

        fresh, _ = _init_optimizers_and_lr_schedulers(pl_module)  # what the new config asks for
        for new_opt, opt in zip(fresh, trainer.optimizers):
            for new, group in zip(new_opt.param_groups, opt.param_groups):
                factor = group["lr"] / group["initial_lr"] if group.get("initial_lr") else 1.0
                for key, value in new.items():
                    if key != "params":
                        group[key] = value
                if "initial_lr" in new:
                    group["lr"] = new["initial_lr"] * factor
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [g["initial_lr"] for g in config.scheduler.optimizer.param_groups]
