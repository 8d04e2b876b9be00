"""`beatgans-sample` for latent diffusion and cross-attention runs: conditions from `classes` or `prompts`,
classifier-free guidance against the null condition, latents decoded by the run's first stage.

`cli/sample.py` asks `load_latent_sampler` first; it returns None for an ordinary pixel-space run, which
then samples exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from beatgans.cli.loading import RunError
from beatgans.diffusion.latent import conditions_for, sample_latent


@dataclass
class LatentParts:
    """The first stage and condition encoder of a trained run (either may be None)."""

    first_stage: nn.Module | None
    cond_encoder: nn.Module | None


def load_latent_parts(config, ckpt_path: str | Path, use_ema: bool = True, ema_index: int = 0) -> LatentParts | None:
    """Rebuild a run's first stage and condition encoder (with its EMA weights when asked) from its config
    (`task.first_stage`, `task.cond_encoder`) and checkpoint; None for an ordinary pixel-space run."""
    from hydra.utils import instantiate

    task = config.get("task", {}) if config is not None else {}
    if task.get("first_stage") is None and task.get("cond_encoder") is None:
        return None
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("state_dict", {})
    parts = []
    for name, ema_prefix in (("first_stage", None), ("cond_encoder", "cond_ema")):
        if task.get(name) is None:
            parts.append(None)
            continue
        module = instantiate(task[name])
        prefix = f"{name}."
        if use_ema and ema_prefix and any(k.startswith(f"{ema_prefix}.shadows.{ema_index}.") for k in state):
            prefix = f"{ema_prefix}.shadows.{ema_index}."
        weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(weights, strict=True)
        parts.append(module.eval().requires_grad_(False))
    return LatentParts(*parts)


def prompt_labels(prompts: Sequence[str]) -> torch.Tensor | None:
    """The digit each prompt names (for the npz labels and target accuracy), or None if any names none."""
    from beatgans.data.captions import prompt_label

    labels = [prompt_label(p) for p in prompts]
    return None if any(k is None for k in labels) else torch.as_tensor(labels, dtype=torch.int64)


class LatentSampler:
    """Samples of one latent / context-conditioned run, by global sample index (sample i uses seed + i)."""

    def __init__(self, cfg: DictConfig, loaded, parts, device: torch.device):
        self.cfg, self.loaded, self.parts, self.device = cfg, loaded, parts, device
        self.net = loaded.net.to(device)
        for module in (parts.first_stage, parts.cond_encoder):
            if module is not None:
                module.to(device)
        encoder = parts.cond_encoder
        self.num_classes = (
            loaded.config.task.get("num_classes") if encoder is None or encoder.kind == "labels" else None
        )
        g = cfg.guidance
        if g.name not in ("none", "cfg"):
            raise RunError(f"guidance={g.name} is not available for a latent / cross-attention run (a pixel-space "
                           "classifier cannot guide it); use guidance=cfg or guidance=none.")
        self.scale = float(g.scale) if g.name == "cfg" else None
        if self.scale is not None and encoder is None and not getattr(self.net, "null_class", False):
            raise RunError("Classifier-free guidance needs a net trained with a null class (net.null_class=true, "
                           "task.p_uncond > 0).")
        self.conditions = None
        self.prompts: list[str] | None = None

    def set_conditions(self, num_samples: int, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Fix every sample's condition (cycled prompts, else the labels); returns the labels to record."""
        prompts = list(self.cfg.get("prompts") or [])
        if not prompts and self.parts.cond_encoder is not None and self.parts.cond_encoder.kind == "text":
            prompts = list(self.loaded.config.task.get("sample_prompts") or [])  # the run's own grid prompts
        self.prompts = prompts or None
        self.conditions = conditions_for(self.parts.cond_encoder, num_samples, labels, prompts, self.num_classes)
        return prompt_labels(self.conditions) if prompts else labels

    @torch.no_grad()
    def sample(self, indices: np.ndarray) -> torch.Tensor:
        """Decoded images (len(indices), C, H, W) ~[-1, 1] for the global sample `indices`."""
        cfg = self.cfg
        conds = self.conditions
        if conds is not None:
            conds = [conds[int(i)] for i in indices] if isinstance(conds, list) else conds[torch.as_tensor(indices)]
        options = {k: v for k, v in OmegaConf.to_container(cfg.sampler).items() if k != "name"}
        return sample_latent(self.net, self.loaded.diffusion, len(indices), first_stage=self.parts.first_stage,
                             cond_encoder=self.parts.cond_encoder, conditions=conds, guidance_scale=self.scale,
                             null_label=self.num_classes, seeds=[cfg.seed + int(i) for i in indices],
                             sampler=cfg.sampler.name, device=self.device, **options)


def load_latent_sampler(cfg: DictConfig, loaded, device: torch.device) -> LatentSampler | None:
    """A `LatentSampler` for a run with a first stage or condition encoder; None for a pixel-space run
    (which must not be given prompts)."""
    parts = load_latent_parts(loaded.config, loaded.ckpt_path, cfg.use_ema, cfg.ema_index)
    if parts is None:
        if cfg.get("prompts"):
            raise RunError("prompts= needs a text-conditioned run (task.cond_encoder); "
                           "this run has none, use classes=.")
        return None
    return LatentSampler(cfg, loaded, parts, device)


__all__ = ["LatentSampler", "load_latent_sampler", "prompt_labels"]
