"""wandb run names and groups for Hydra runs and sweeps (the resolvers ``conf/logger/wandb.yaml`` uses).

- ``${beatgans_wandb_name:<fallback>}``: the job's command-line overrides, sorted, ``k=v`` joined by
  ``,`` (as Hydra's ``job.override_dirname``), without the settings a resume may change
  (``ckpt_path``, ``trainer.max_steps`` ...), so a resumed run keeps its name; ``<fallback>`` (the task
  name) when there are none or outside a Hydra app.
- ``${beatgans_wandb_group:}``: in a multirun, the sweep directory's name, so every job of a sweep lands
  in one wandb group; ``null`` (no group) for a single run.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

MAX_NAME = 128  # wandb shows long names truncated; keep them readable


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def run_name(fallback: str = "train") -> str:
    """The job's overrides as a name (see the module docstring); ``fallback`` when there are none."""
    from beatgans.cli.resume import RESUMABLE_KEYS

    hc = _hydra()
    if hc is None:
        return fallback
    keep = []
    for item in hc.overrides.task:
        key = item.split("=", 1)[0].lstrip("+~")
        if not any(key == r or key.startswith(r + ".") for r in RESUMABLE_KEYS):
            keep.append(item.lstrip("+~"))
    name = ",".join(sorted(keep))
    return name[:MAX_NAME] if name else fallback


def run_group() -> str | None:
    """The sweep directory's name inside a multirun, else None."""
    from hydra.types import RunMode

    hc = _hydra()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("beatgans_wandb_name"):
        OmegaConf.register_new_resolver("beatgans_wandb_name", run_name)
    if not OmegaConf.has_resolver("beatgans_wandb_group"):
        OmegaConf.register_new_resolver("beatgans_wandb_group", run_group)


register_resolvers()
