"""`beatgans-sample`: draw seeded samples (optionally guided) and write ADM-format `.npz`, a PNG grid and
`metrics.json`. Under torchrun each process takes indices r, r + world, ... and rank 0 merges the shards."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from beatgans.cli.attach import attach_results, check_wandb
from beatgans.cli.common import CONFIG_PATH
from beatgans.cli.errors import exit_on_user_error
from beatgans.cli.latent import load_latent_sampler
from beatgans.cli.loading import check_classifier_matches, load_classifier, load_model
from beatgans.diffusion.sampling import sample_with, sampler_nfe
from beatgans.nets.runtime import prepare_net, with_autocast
from beatgans.utils.errors import UserError
from beatgans.utils.images import save_grid_png, to_uint8
from beatgans.utils.io import save_samples_npz, write_json
from beatgans.utils.logging import get_logger
from beatgans.utils.progress import Progress

log = get_logger(__name__)


def check_request(cfg: DictConfig) -> None:
    """Refuse, before anything is loaded, sample counts and guidance scales that cannot work (`UserError`)."""
    for key in ("num_samples", "batch_size"):
        value = cfg.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"{key}={value} must be a positive integer; set {key}=<n >= 1>.")
    for key in ("scale", "cfg_scale"):
        value = cfg.guidance.get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise UserError(f"guidance.{key}={value} must be a finite number (0 disables guidance).")
    steps = cfg.sampler.get("steps")
    if steps is not None and isinstance(steps, int) and steps < 1:
        raise UserError(f"sampler.steps={steps} must be at least 1 (or null for all T steps).")
    check_wandb(cfg.get("wandb", "auto"), cfg.get("run"))


def check_against_model(cfg: DictConfig, num_timesteps: int, num_classes: int | None, what: str) -> None:
    """Refuse a step count above the model's T and target classes it does not have (`UserError`).

    `num_classes` is the model's (or, for an unconditional model under classifier guidance, the
    classifier's) number of classes; `what` names it in the message.
    """
    steps = cfg.sampler.get("steps")
    if isinstance(steps, int) and steps > num_timesteps:
        raise UserError(f"sampler.steps={steps} exceeds the model's T={num_timesteps} diffusion steps; set "
                        f"sampler.steps <= {num_timesteps} (or null for all of them).")
    if cfg.classes:
        if not num_classes:
            raise UserError(f"classes={list(cfg.classes)} needs a class-conditional model or classifier guidance, "
                            "but this model is unconditional; drop classes or add guidance=classifier.")
        bad = [c for c in cfg.classes if not isinstance(c, int) or not 0 <= c < num_classes]
        if bad:
            raise UserError(f"classes={list(cfg.classes)}: {bad} not in 0..{num_classes - 1} ({what} has "
                            f"{num_classes} classes).")


def check_output_dir(out_dir: Path) -> None:
    """Refuse a directory that already holds samples or metrics: a second run would replace them."""
    if not out_dir.exists():
        return
    taken = sorted(p.name for p in out_dir.iterdir() if p.name in ("metrics.json", "grid.png")
                   or (p.name.startswith("samples_") and p.suffix == ".npz"))
    if taken:
        raise UserError(f"Output directory {out_dir} already holds {', '.join(taken)} from an earlier run; sample "
                        "into a new directory (leave hydra.run.dir at its default).")


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
    check_request(cfg)
    loaded = load_model(cfg.run, cfg.ckpt, cfg.get("net"), cfg.get("diffusion"), cfg.use_ema, cfg.ema_index)
    net = prepare_net(loaded.net.to(device), compile=cfg.compile, channels_last=cfg.channels_last)
    net = with_autocast(net, cfg.precision)  # the net in bf16/fp16; sampler arithmetic and guidance in fp32
    latent = load_latent_sampler(cfg, loaded, device)  # latent diffusion / cross-attention runs; None otherwise
    wrapper, cond_fn, clf_classes = build_guidance(cfg, loaded, device) if latent is None else (None, None, None)
    model_classes = loaded.num_classes or (latent.num_classes if latent is not None else None)  # class tokens
    check_against_model(cfg, loaded.diffusion.num_timesteps, model_classes or clf_classes,
                        "the model" if model_classes else "the classifier")
    sampler = OmegaConf.to_container(cfg.sampler)  # every option the sampler uses, checked before sampling
    nfe = sampler_nfe(loaded.diffusion, sampler["name"], sampler.get("steps"), sampler.get("skip", "time_uniform"),
                      sampler.get("order", 2))
    # Target labels: the model's classes, else (unconditional + classifier guidance) the classifier's.
    labels_all = sample_labels(cfg.num_samples, model_classes or clf_classes,
                               cfg.classes, cfg.seed)
    labels_all = latent.set_conditions(cfg.num_samples, labels_all) if latent else labels_all  # prompts -> labels
    idx = np.arange(rank, cfg.num_samples, world)
    shape = (net.in_channels, net.image_size, net.image_size)
    images, start = [], time.time()
    with Progress(len(idx), "sampling", unit="img", enabled=cfg.get("progress", True) and rank == 0) as bar:
        for lo in range(0, len(idx), cfg.batch_size):
            chunk = idx[lo : lo + cfg.batch_size]
            labels = labels_all[chunk] if labels_all is not None else None
            x = latent.sample(chunk) if latent else _sample_indices(net, loaded, chunk, shape, cfg, labels, wrapper,
                                                                     cond_fn, device)
            images.append(to_uint8(x).cpu().numpy())
            bar.update(len(chunk))
    elapsed = time.time() - start
    arr = np.concatenate(images) if images else np.zeros((0, shape[1], shape[2], shape[0]), np.uint8)
    labs = labels_all[idx].numpy() if labels_all is not None else None
    info = {"num_samples": cfg.num_samples, "sampler": sampler.pop("name"), **sampler, "nfe": nfe, "seed": cfg.seed,
            "guidance": OmegaConf.to_container(cfg.guidance),
            "run": str(Path(cfg.run).absolute()) if cfg.run else None, "ckpt": str(loaded.ckpt_path),
            "ckpt_step": loaded.global_step, "use_ema": cfg.use_ema, "precision": cfg.precision,
            "compile": cfg.compile, "channels_last": cfg.channels_last,
            "sampling_seconds": round(elapsed, 3), "images_per_second": round(len(idx) / max(elapsed, 1e-9), 3)}
    if latent and latent.prompts:
        info["prompts"] = latent.prompts
    return arr, labs, info


def _sample_indices(net, loaded, chunk, shape, cfg, labels, wrapper, cond_fn, device) -> torch.Tensor:
    """Samples for the indices `chunk`; sample i always uses seed `cfg.seed + i`."""
    options = {k: v for k, v in OmegaConf.to_container(cfg.sampler).items() if k != "name"}
    return sample_with(net, loaded.diffusion, len(chunk), shape, seeds=[cfg.seed + int(i) for i in chunk],
                       sampler=cfg.sampler.name, labels=labels, num_classes=loaded.num_classes, device=device,
                       model_wrapper=wrapper, cond_fn=cond_fn, progress=True, **options)


def write_outputs(out_dir: Path, images: np.ndarray, labels: np.ndarray | None, info: dict, cfg: DictConfig) -> dict:
    """samples.npz (ADM format), grid.png and metrics.json (with target accuracy / metrics when asked)."""
    n = len(images)
    h, w, c = images.shape[1:]
    # overwrite=False: a file that appeared meanwhile (another process) is never replaced.
    try:
        npz = save_samples_npz(out_dir / f"samples_{n}x{h}x{w}x{c}.npz", images, labels, overwrite=False)
        metrics = dict(info, samples_npz=str(npz))
        if cfg.grid and n:
            m = min(n, cfg.grid_max)
            metrics["grid_png"] = str(save_grid_png(out_dir / "grid.png", images[:m], nrow=int(np.ceil(np.sqrt(m))),
                                                    scale=max(1, 128 // h), overwrite=False))
        metrics.update(judge_and_evaluate(images, labels, cfg))
        write_json(out_dir / "metrics.json", metrics, overwrite=False)
    except FileExistsError as err:
        raise UserError(f"{getattr(err, 'filename2', None) or err.filename} appeared while sampling "
                        f"(another run is writing into {out_dir}); "
                        "nothing was replaced, sample into a new directory.") from None
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
    """Run sampling in this process (or as one torchrun rank) and write the outputs. Returns metrics (rank 0).

    Rank 0 then logs the result into the training run's wandb run when it had one (`wandb=auto`,
    beatgans.cli.attach)."""
    from beatgans.cli.cascade import cascade_requested, sample_cascade

    check_request(cfg)
    metrics = sample_cascade(cfg) if cascade_requested(cfg) else _sample_one_stage(cfg)  # cascades: docs/cascades.md
    if metrics:
        grids = {k[: -len("grid_png")] + "grid": v for k, v in metrics.items() if k.endswith("grid_png")}
        attach_results("sample", metrics, cfg.run, cfg.paths.output_dir, cfg.get("wandb", "auto"), grids)
    return metrics


def _sample_one_stage(cfg: DictConfig) -> dict:
    out_dir = Path(cfg.paths.output_dir)
    check_output_dir(out_dir)
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


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    metrics = sample(cfg)
    return metrics.get("target_accuracy")


if __name__ == "__main__":
    main()
