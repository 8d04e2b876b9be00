"""Cascaded sampling for `beatgans-sample`: base model -> upsampler in one invocation (ADM-G + ADM-U).

`beatgans.cli.sample` hands over here when the config's ``upsampler`` node names a model:

    beatgans-sample run=<base run> guidance=classifier guidance.classifier_run=<clf run> guidance.scale=2 \
        upsampler.run=<upsampler run> upsampler.sampler.name=ddim upsampler.sampler.steps=25

The base stage is exactly a plain `beatgans-sample` run (its sampler, steps and guidance); its uint8
samples, mapped back to [-1, 1], are the upsampler's ``low_res`` (`beatgans.diffusion.cascade`), with the
base's labels when the upsampler is class-conditional. Each stage has its own sampler and step count and
writes its own ``.npz`` and grid; ``metrics.json`` holds ``base/<key>`` and ``upsampler/<key>`` for every
stage key, and the unprefixed keys of the final (upsampled) samples.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from beatgans.cli.loading import RunError, load_model, load_run_config
from beatgans.cli.sample import generate, judge_and_evaluate
from beatgans.diffusion.cascade import low_res_from_uint8, upsampler_seeds
from beatgans.utils.images import save_grid_png, to_uint8
from beatgans.utils.io import save_samples_npz, update_json
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def cascade_requested(cfg: DictConfig) -> bool:
    """True when ``upsampler.run`` or ``upsampler.ckpt`` is set."""
    up = cfg.get("upsampler")
    return bool(up) and bool(up.get("run") or up.get("ckpt"))


def _base_net_node(cfg: DictConfig):
    if cfg.get("net") is not None:
        return cfg.net
    return load_run_config(cfg.run).task.net if cfg.get("run") else None


def load_upsampler(cfg: DictConfig):
    """Load the upsampler and check, before any sampling, that it can follow the base. Raises `RunError`."""
    up = cfg.upsampler
    loaded = load_model(up.get("run"), up.get("ckpt"), up.get("net"), up.get("diffusion"), up.use_ema, up.ema_index)
    size = getattr(loaded.net, "low_res_size", "absent")
    if size == "absent":
        raise RunError(f"upsampler {up.get('run') or up.get('ckpt')} is not an upsampling model (a SuperResUNet, "
                       "trained with data.low_res_size): point upsampler.run at an upsampler run.")
    base = _base_net_node(cfg)
    if base is not None:
        base_size, base_ch = int(base.image_size), int(base.in_channels)
        if size is not None and base_size != size:
            raise RunError(f"the base model samples {base_size}px images but the upsampler takes {size}px low-res "
                           "inputs; pair models whose sizes match.")
        if base_ch != loaded.net.in_channels:
            raise RunError(f"the base model has {base_ch} channels but the upsampler {loaded.net.in_channels}.")
        guided = cfg.guidance.name in ("classifier", "classifier+cfg")
        if loaded.num_classes and base.get("num_classes") is None and not guided:
            raise RunError("the upsampler is class-conditional but the unconditional base gives no labels; use a "
                           "class-conditional base, classifier guidance, or an unconditional upsampler.")
    return loaded


def upsample(up, low_res: torch.Tensor, labels: np.ndarray | None, indices: np.ndarray, cfg: DictConfig,
             device: torch.device) -> tuple[np.ndarray, dict]:
    """The upsampling stage: (N, H, W, C) uint8 samples of ``up`` given ``low_res`` (N, C, h, w) in [-1, 1];
    sample i draws from its own seed stream (`upsampler_seeds`), so it does not depend on the batch size."""
    from beatgans.diffusion.sampling import sample_with

    s = cfg.upsampler.sampler
    net = up.net.to(device)
    shape = (net.in_channels, net.image_size, net.image_size)
    y = torch.as_tensor(labels) if labels is not None and up.num_classes else None
    start = time.time()
    x = sample_with(net, up.diffusion, len(indices), shape, seeds=upsampler_seeds(cfg.seed, indices),
                    sampler=s.name, steps=s.steps, labels=y, num_classes=up.num_classes, eta=s.eta, device=device,
                    batch_size=cfg.upsampler.get("batch_size") or cfg.batch_size, model_kwargs={"low_res": low_res})
    elapsed = time.time() - start
    info = {"sampler": s.name, "steps": s.steps, "eta": s.eta, "run": cfg.upsampler.get("run"),
            "ckpt": str(up.ckpt_path), "use_ema": cfg.upsampler.use_ema, "sampling_seconds": round(elapsed, 3),
            "images_per_second": round(len(indices) / max(elapsed, 1e-9), 3)}
    return to_uint8(x).cpu().numpy(), info


def write_stage(out_dir: Path, stage: str, images: np.ndarray, labels: np.ndarray | None, info: dict,
                cfg: DictConfig) -> dict:
    """One stage's ``.npz`` (ADM format; sizes differ between stages, so names never collide) and grid, and its
    judged metrics, returned (and merged into metrics.json) under ``<stage>/<key>``."""
    n, h, w, c = images.shape
    prefix = "base_" if stage == "base" else ""
    metrics = dict(info, samples_npz=str(save_samples_npz(out_dir / f"{prefix}samples_{n}x{h}x{w}x{c}.npz",
                                                          images, labels)))
    if cfg.grid and n:
        m = min(n, cfg.grid_max)
        metrics["grid_png"] = str(save_grid_png(out_dir / f"{prefix}grid.png", images[:m],
                                                nrow=int(np.ceil(np.sqrt(m))), scale=max(1, 128 // h)))
    metrics.update(judge_and_evaluate(images, labels, cfg))
    staged = {f"{stage}/{k}": v for k, v in metrics.items()}
    update_json(out_dir / "metrics.json", staged)
    return metrics


def generate_cascade(cfg: DictConfig, up, rank: int = 0, world: int = 1):
    """Both stages for this process's indices (rank, rank + world, ...): (base uint8, upsampled uint8, labels,
    base info, upsampler info)."""
    images, labels, info = generate(cfg, rank, world)
    indices = np.arange(rank, cfg.num_samples, world)
    final, up_info = upsample(up, low_res_from_uint8(images), labels, indices, cfg, _device(cfg))
    return images, final, labels, info, up_info


def _device(cfg: DictConfig) -> torch.device:
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(auto if cfg.device == "auto" else cfg.device)  # as the base stage resolves it


def _gather(out_dir: Path, rank: int, world: int, num: int, stages: dict, labels) -> dict | None:
    """torchrun: every rank writes its shards, rank 0 merges them in index order (None on other ranks)."""
    import torch.distributed as dist

    from beatgans.cli.sample import merge_shards

    for name, images in stages.items():
        folder = out_dir / f".cascade_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f".shard_{rank}.npz", images=images, labels=labels if labels is not None else np.zeros(0))
    dist.barrier()
    if rank != 0:
        return None
    merged = {}
    for name in stages:
        merged[name] = merge_shards(out_dir / f".cascade_{name}", world, num)
        (out_dir / f".cascade_{name}").rmdir()
    return merged


def sample_cascade(cfg: DictConfig) -> dict:
    """Base samples, then their upsampled versions; both written. Returns the metrics.json contents (rank 0).

    Under torchrun each process takes indices r, r + world, ... through both stages and rank 0 merges them;
    the per-sample seeds make the result identical to one process's.
    """
    out_dir = Path(cfg.paths.output_dir)
    up = load_upsampler(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        images, final, labels, info, up_info = generate_cascade(cfg, up, rank, world)
        merged = _gather(out_dir, rank, world, cfg.num_samples, {"base": images, "final": final}, labels)
        dist.destroy_process_group()
        if merged is None:
            return {}
        (images, labels), (final, _) = merged["base"], merged["final"]
        write_stage(out_dir, "base", images, labels, info, cfg)
    else:  # the base stage is on disk before the upsampler starts
        images, labels, info = generate(cfg)
        base = write_stage(out_dir, "base", images, labels, info, cfg)
        log.info("Base stage: %d samples in %s", len(images), base["samples_npz"])
        final, up_info = upsample(up, low_res_from_uint8(images), labels, np.arange(len(images)), cfg, _device(cfg))
    last = write_stage(out_dir, "upsampler", final, labels, up_info, cfg)
    log.info("Upsampler stage: %d samples in %s", len(final), last["samples_npz"])
    seconds = info["sampling_seconds"] + up_info["sampling_seconds"]
    summary = {"cascade": True, "num_samples": cfg.num_samples, "seed": cfg.seed,
               "guidance": OmegaConf.to_container(cfg.guidance), "sampling_seconds": round(seconds, 3),
               "seconds_per_image": round(seconds / max(len(final), 1), 4),
               **{k: v for k, v in last.items() if k not in ("sampler", "steps", "eta", "run", "ckpt", "use_ema",
                                                            "sampling_seconds", "images_per_second")}}
    return update_json(out_dir / "metrics.json", summary)
