"""`beatgans-sample`: draw seeded samples (optionally guided) and write ADM-format `.npz`, a PNG grid and
`metrics.json`. Under torchrun each process takes indices r, r + world, ... and rank 0 merges the shards."""

from __future__ import annotations

import os
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from beatgans.cli.common import CONFIG_DIR
from beatgans.cli.loading import check_classifier_matches, load_classifier, load_model
from beatgans.nets.runtime import prepare_net, with_autocast
from beatgans.utils.images import save_grid_png, to_uint8
from beatgans.utils.io import save_samples_npz, update_json
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def sample_labels(num_samples: int, num_classes: int | None, classes, seed: int) -> torch.Tensor | None:
    """Labels for all samples: cycled `classes`, else uniform random from a generator seeded by `seed`."""
    if not num_classes:
        return None
    if classes:
        return torch.as_tensor(list(classes), dtype=torch.int64).repeat(num_samples // len(classes) + 1)[:num_samples]
    return torch.randint(num_classes, (num_samples,), generator=torch.Generator().manual_seed(seed))


def build_guidance(cfg: DictConfig, loaded, device) -> tuple[object | None, object | None, int | None]:
    """(model_wrapper, cond_fn, classifier classes) for `cfg.guidance.name`: none | classifier | cfg | classifier+cfg.

    Classifier guidance loads the classifier run, refuses one whose schedule, T, resolution or classes differ
    from the model's, and builds `cond_fn(x_t, t_original, y) = scale * grad log p(y | x_t)`; an unconditional
    model is wrapped so the target labels reach only the classifier. CFG wraps the net in one batched
    cond/uncond forward with weight `scale` (`cfg_scale` when combined with classifier guidance).
    """
    from beatgans.diffusion.guidance import ClassifierFreeGuidance, IgnoreLabels, classifier_cond_fn

    g = cfg.guidance
    if g.name not in ("none", "cfg", "classifier", "classifier+cfg"):
        raise ValueError(f"guidance.name must be none, classifier, cfg or classifier+cfg, got {g.name!r}.")
    wrapper = cond_fn = clf_classes = None
    if g.name in ("cfg", "classifier+cfg"):
        if not getattr(loaded.net, "null_class", False):
            raise ValueError("Classifier-free guidance needs a net trained with a null class (net.null_class=true, "
                             "task.p_uncond > 0).")
        w = g.scale if g.name == "cfg" else g.cfg_scale
        wrapper = lambda net: ClassifierFreeGuidance(net, w, loaded.num_classes)  # noqa: E731
    if g.name in ("classifier", "classifier+cfg"):
        clf, clf_cfg = load_classifier(g.get("classifier_run"), g.get("classifier_ckpt"), g.get("classifier_net"))
        check_classifier_matches(loaded.diffusion, loaded.net, clf_cfg, clf, loaded.config)
        clf = clf.to(device).requires_grad_(False)
        cond_fn = classifier_cond_fn(clf, g.scale)
        clf_classes = getattr(clf, "num_classes", None)
        if not loaded.num_classes:
            wrapper = IgnoreLabels
    return wrapper, cond_fn, clf_classes


def generate(cfg: DictConfig, rank: int = 0, world: int = 1) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Samples for this process's indices (rank, rank + world, ...). Returns uint8 NHWC, labels, info."""
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    loaded = load_model(cfg.run, cfg.ckpt, cfg.get("net"), cfg.get("diffusion"), cfg.use_ema, cfg.ema_index)
    net = prepare_net(loaded.net.to(device), compile=cfg.compile, channels_last=cfg.channels_last)
    net = with_autocast(net, cfg.precision)  # the net in bf16/fp16; sampler arithmetic and guidance in fp32
    wrapper, cond_fn, clf_classes = build_guidance(cfg, loaded, device)
    # Target labels: the model's classes, else (unconditional + classifier guidance) the classifier's.
    labels_all = sample_labels(cfg.num_samples, loaded.num_classes or clf_classes, cfg.classes, cfg.seed)
    idx = np.arange(rank, cfg.num_samples, world)
    shape = (net.in_channels, net.image_size, net.image_size)
    images, start = [], time.time()
    for lo in range(0, len(idx), cfg.batch_size):
        chunk = idx[lo : lo + cfg.batch_size]
        labels = labels_all[chunk] if labels_all is not None else None
        x = _sample_indices(net, loaded, chunk, shape, cfg, labels, wrapper, cond_fn, device)
        images.append(to_uint8(x).cpu().numpy())
    elapsed = time.time() - start
    arr = np.concatenate(images) if images else np.zeros((0, shape[1], shape[2], shape[0]), np.uint8)
    labs = labels_all[idx].numpy() if labels_all is not None else None
    info = {"num_samples": cfg.num_samples, "sampler": cfg.sampler.name, "steps": cfg.sampler.steps,
            "eta": cfg.sampler.eta, "seed": cfg.seed, "guidance": OmegaConf.to_container(cfg.guidance),
            "run": cfg.run, "ckpt": str(loaded.ckpt_path), "use_ema": cfg.use_ema, "precision": cfg.precision,
            "compile": cfg.compile, "channels_last": cfg.channels_last,
            "sampling_seconds": round(elapsed, 3), "images_per_second": round(len(idx) / max(elapsed, 1e-9), 3)}
    return arr, labs, info


def _sample_indices(net, loaded, chunk, shape, cfg, labels, wrapper, cond_fn, device) -> torch.Tensor:
    """Samples for the indices `chunk`; sample i always uses seed `cfg.seed + i`."""
    from beatgans.lit.diffusion_module import sample_with

    return sample_with(net, loaded.diffusion, len(chunk), shape, seeds=[cfg.seed + int(i) for i in chunk],
                       sampler=cfg.sampler.name, steps=cfg.sampler.steps, labels=labels,
                       num_classes=loaded.num_classes, eta=cfg.sampler.eta, device=device,
                       model_wrapper=wrapper, cond_fn=cond_fn)


def write_outputs(out_dir: Path, images: np.ndarray, labels: np.ndarray | None, info: dict, cfg: DictConfig) -> dict:
    """samples.npz (ADM format), grid.png and metrics.json (with target accuracy / metrics when asked)."""
    n = len(images)
    h, w, c = images.shape[1:]
    npz = save_samples_npz(out_dir / f"samples_{n}x{h}x{w}x{c}.npz", images, labels)
    metrics = dict(info, samples_npz=str(npz))
    if cfg.grid and n:
        m = min(n, cfg.grid_max)
        metrics["grid_png"] = str(save_grid_png(out_dir / "grid.png", images[:m], nrow=int(np.ceil(np.sqrt(m))),
                                                scale=max(1, 128 // h)))
    metrics.update(judge_and_evaluate(images, labels, cfg))
    update_json(out_dir / "metrics.json", metrics)
    return metrics


def judge_and_evaluate(images: np.ndarray, labels: np.ndarray | None, cfg: DictConfig) -> dict:
    """Target-class accuracy with the digits classifier (1-channel digits samples) and configured metrics."""
    out: dict = {}
    if cfg.judge and labels is not None and images.shape[-1] == 1:
        from beatgans.metrics.digits import target_accuracy

        out["target_accuracy"] = target_accuracy(images, labels)
    names = list(cfg.metrics.get("names", [])) if cfg.get("metrics") else []
    if names:
        from beatgans.metrics.evaluate import evaluate_samples

        out.update(evaluate_samples(images, reference=cfg.metrics.get("reference"), metrics=names,
                                    extractor=cfg.metrics.get("extractor", "auto"),
                                    batch_size=int(cfg.metrics.get("batch_size") or 100),
                                    inception_weights=cfg.metrics.get("inception_weights")))
    return out


def sample(cfg: DictConfig) -> dict:
    """Run sampling in this process (or as one torchrun rank) and write the outputs. Returns metrics (rank 0)."""
    out_dir = Path(cfg.paths.output_dir)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        images, labels, info = generate(cfg, rank, world)
        shard = out_dir / f".shard_{rank}.npz"
        np.savez(shard, images=images, labels=labels if labels is not None else np.zeros(0))
        dist.barrier()
        if rank != 0:
            dist.destroy_process_group()
            return {}
        images, labels = merge_shards(out_dir, world, cfg.num_samples)
        dist.destroy_process_group()
    else:
        images, labels, info = generate(cfg)
    metrics = write_outputs(out_dir, images, labels, info, cfg)
    log.info("Wrote %d samples to %s", len(images), metrics["samples_npz"])
    return metrics


def merge_shards(out_dir: Path, world: int, num_samples: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Interleave rank shards back into index order (rank r holds r, r + world, ...)."""
    parts = [np.load(out_dir / f".shard_{r}.npz") for r in range(world)]
    images = np.zeros((num_samples, *parts[0]["images"].shape[1:]), np.uint8)
    has_labels = parts[0]["labels"].size > 0
    labels = np.zeros(num_samples, np.int64) if has_labels else None
    for r, p in enumerate(parts):
        images[r::world] = p["images"]
        if has_labels:
            labels[r::world] = p["labels"]
    for r in range(world):
        (out_dir / f".shard_{r}.npz").unlink()
    return images, labels


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="sample")
def main(cfg: DictConfig) -> float | None:
    metrics = sample(cfg)
    return metrics.get("target_accuracy")


if __name__ == "__main__":
    main()
