"""Rebuild trained objects from run directories and checkpoints (shared by sample / eval / guidance)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from beatgans.nets.ema import ema_state_dict_from_checkpoint
from beatgans.utils.errors import UserError


class RunError(UserError):
    """A run directory or checkpoint that cannot be used; the message names the path and the problem."""


@dataclass
class LoadedModel:
    net: nn.Module
    diffusion: object
    config: DictConfig | None
    ckpt_path: Path
    num_classes: int | None
    global_step: int | None = None  # the training step the checkpoint was saved at (None: a raw state dict)


def load_run_config(run_dir: str | Path) -> DictConfig:
    """The resolved config of a training run's newest launch: `<run>/.hydra/resume-<k>/config.yaml` for the
    highest k (a resume may have applied changed settings), else `<run>/.hydra/config.yaml`."""
    hydra_dir = Path(run_dir) / ".hydra"
    resumes = sorted(hydra_dir.glob("resume-*/config.yaml"), key=lambda p: int(p.parent.name.split("-")[1]))
    path = resumes[-1] if resumes else hydra_dir / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a beatgans run directory (no {path}).")
    return OmegaConf.load(path)


def find_checkpoint(run_dir: str | Path) -> Path:
    path = Path(run_dir) / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise RunError(f"Run {run_dir} has no checkpoint at {path}.")
    return path


def read_state_dict(ckpt_path: str | Path, use_ema: bool = True, ema_index: int = 0, prefix: str = "net.") -> dict:
    """Network weights from a Lightning checkpoint (EMA shadow `ema_index` when asked and present) or a raw
    state dict file. Keys come back without the module prefix."""
    return state_dict_from(load_checkpoint_file(ckpt_path), Path(ckpt_path), use_ema, ema_index, prefix)


def state_dict_from(blob: object, ckpt_path: Path, use_ema: bool = True, ema_index: int = 0,
                    prefix: str = "net.") -> dict:
    """`read_state_dict` for a checkpoint already loaded (`blob`); `ckpt_path` names it in errors."""
    if isinstance(blob, dict) and "state_dict" in blob:
        sd = blob["state_dict"]
        if use_ema and any(k.startswith("ema.shadows.") for k in sd):
            return ema_state_dict_from_checkpoint(sd, ema_index)
        out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not out:
            raise RunError(f"Checkpoint {ckpt_path} has no '{prefix}*' weights.")
        return out
    if isinstance(blob, dict):
        return blob
    raise RunError(f"Checkpoint {ckpt_path} is neither a Lightning checkpoint nor a state dict.")


def load_checkpoint_file(ckpt_path: str | os.PathLike) -> object:
    """`torch.load` of a checkpoint we trust; a missing, truncated or foreign file is a `RunError` naming it."""
    if not Path(ckpt_path).is_file():
        raise RunError(f"Checkpoint {ckpt_path} does not exist.")
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - zip, pickle and EOF errors all mean "not a readable checkpoint"
        reason = " ".join(str(err).split())[:120] or type(err).__name__
        raise RunError(f"Checkpoint {ckpt_path} could not be read ({type(err).__name__}: {reason}); it is "
                       "truncated or not a PyTorch checkpoint, so pass another file (or rerun training).") from None


def load_weights(net: nn.Module, state_dict: dict, source: Path) -> None:
    """Strict loading; OpenAI-layout state dicts (guided/improved-diffusion) go through the converter."""
    if any(k.startswith("input_blocks.") for k in state_dict):
        from beatgans.nets.convert import load_openai_checkpoint

        load_openai_checkpoint(net, state_dict)
        return
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or shapes:
        raise RunError(f"Checkpoint {source} does not match the network architecture: "
                       f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
                       f"{unexpected[:5]}, {len(shapes)} shape mismatches {sorted(shapes)[:5]}.")
    net.load_state_dict(state_dict)


def load_model(run: str | None, ckpt: str | None, net_cfg: DictConfig | None, diffusion_cfg: DictConfig | None,
               use_ema: bool = True, ema_index: int = 0) -> LoadedModel:
    """Build net + diffusion from a run directory (its config and last.ckpt) or from explicit configs + ckpt.
    Explicit `net_cfg` / `diffusion_cfg` override the run's."""
    from hydra.utils import instantiate

    config = load_run_config(run) if run else None
    task = config.task if config is not None else None
    net_node = net_cfg if net_cfg is not None else (task.net if task is not None else None)
    diff_node = diffusion_cfg if diffusion_cfg is not None else (task.diffusion if task is not None else None)
    if net_node is None or diff_node is None:
        raise RunError("Pass run=<train run dir>, or ckpt=<file> together with net=<config> and diffusion=<config>.")
    ckpt_path = Path(ckpt) if ckpt else find_checkpoint(run)
    blob = load_checkpoint_file(ckpt_path)
    net = instantiate(net_node)
    load_weights(net, state_dict_from(blob, ckpt_path, use_ema, ema_index), ckpt_path)
    diffusion = instantiate(diff_node)
    num_classes = getattr(net, "num_classes", None)
    step = blob.get("global_step") if isinstance(blob, dict) else None
    return LoadedModel(net.eval(), diffusion, config, ckpt_path, num_classes,
                       int(step) if isinstance(step, int) else None)


def load_classifier(
    run: str | None, ckpt: str | None, net_cfg: DictConfig | None
) -> tuple[nn.Module, DictConfig | None]:
    """A noisy classifier from its training run (or ckpt + net config). Returns (net, its run config)."""
    from hydra.utils import instantiate

    config = load_run_config(run) if run else None
    node = net_cfg if net_cfg is not None else (config.task.net if config is not None else None)
    if node is None:
        raise RunError("Classifier guidance needs guidance.classifier_run=<dir> (or classifier_ckpt + classifier_net).")
    ckpt_path = Path(ckpt) if ckpt else find_checkpoint(run)
    net = instantiate(node)
    sd = read_state_dict(ckpt_path, use_ema=False)
    load_weights(net, sd, ckpt_path)
    return net.eval(), config


def _schedule_name(config: DictConfig | None, node: str = "diffusion") -> str:
    # The schedule's name for error messages ("linear", "cosine"), when the run config says it.
    task = config.get("task", {}) if config is not None else {}
    return str(task.get(node, {}).get("schedule", "?")) if task else "?"


def check_classifier_matches(model_diffusion, model_net, clf_config: DictConfig | None, clf_net,
                             model_config: DictConfig | None = None) -> None:
    """Refuse, with one sentence, a classifier that cannot guide this model.

    `model_diffusion` is the model's process (respaced or not); the classifier's process comes from its run
    config (`task.diffusion`). They must share T (before respacing) and abar at every step the model uses,
    the classifier must work at the model's resolution, and a class-conditional model and its classifier
    must have the same number of classes. Raises `RunError`.
    """
    if clf_config is not None and "diffusion" in clf_config.get("task", {}):
        from hydra.utils import instantiate

        clf_diff = instantiate(clf_config.task.diffusion)
        t_clf, t_model = clf_diff.base_num_timesteps, model_diffusion.base_num_timesteps
        if t_clf != t_model:
            raise RunError(f"The classifier was trained with T={t_clf} diffusion steps but the diffusion model has "
                           f"T={t_model}; train the classifier with the model's diffusion config.")
        # abar at the original timesteps both processes share; a respaced model keeps abar at its kept steps.
        clf_abar = dict(zip(clf_diff.timestep_map.tolist(), torch.as_tensor(clf_diff.alphas_cumprod).tolist()))
        model_abar = zip(model_diffusion.timestep_map.tolist(),
                         torch.as_tensor(model_diffusion.alphas_cumprod).tolist())
        if any(t not in clf_abar or abs(clf_abar[t] - a) > 1e-6 * max(a, 1e-12) + 1e-9 for t, a in model_abar):
            raise RunError(f"The classifier was trained with a different noise schedule "
                           f"({_schedule_name(clf_config)}) than the diffusion model "
                           f"({_schedule_name(model_config)}); train the classifier with the model's diffusion "
                           "config.")
    res_c, res_m = getattr(clf_net, "image_size", None), getattr(model_net, "image_size", None)
    if res_c is not None and res_m is not None and res_c != res_m:
        raise RunError(f"The classifier works at {res_c}px but the diffusion model at {res_m}px; train the "
                       "classifier at the model's resolution.")
    k_c, k_m = getattr(clf_net, "num_classes", None), getattr(model_net, "num_classes", None)
    if k_c is not None and k_m is not None and k_c != k_m:
        raise RunError(f"The classifier has {k_c} classes but the class-conditional diffusion model {k_m}.")


def adopt_data_classes(cfg: DictConfig, datamodule) -> list[str]:
    """Make the config describe the classes the data really has, before the task is built.

    An image tree labelled by sub-folder infers its classes: `data.num_classes` (which the task and net
    configs interpolate) is set to the inferred count. A net configured with a different number of classes
    is refused. Returns the class names (empty for unlabelled data); the train CLI writes them to
    `<run>/class_index.json` once the launch is accepted, and the recorded config carries the count.
    """
    from omegaconf import open_dict

    classes = list(getattr(datamodule, "classes", None) or [])
    k = getattr(datamodule, "num_classes", None)
    if not classes or not k:
        return []
    if cfg.data.get("num_classes") is None:
        with open_dict(cfg):
            cfg.data.num_classes = k
    k_net = OmegaConf.select(cfg, "task.net.num_classes", default=None)
    if k_net is not None and int(k_net) != k:
        raise RunError(f"The data has {k} classes (sub-folders of {cfg.data.get('root')}) but net.num_classes="
                       f"{k_net}; set net.num_classes={k} or leave it to follow data.num_classes.")
    return classes
