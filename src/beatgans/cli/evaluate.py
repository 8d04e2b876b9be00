"""beatgans-eval: FID / sFID / IS / precision-recall / KID of generated samples.

    beatgans-eval samples=<npz | image folder | run dir | sweep dir> metrics=fid_is_pr data=cifar10
    beatgans-eval samples=<npz> metrics=full metrics.reference=VIRTUAL_imagenet64_labeled.npz
    torchrun --nproc_per_node 8 -m beatgans.cli.evaluate samples=... data=...   # disjoint shards

Reference statistics come from `metrics.reference` (ours or ADM's `.npz`), else from `data=` (computed
once on rank 0 and cached, keyed by dataset, split, resolution, count, extractor and its weights),
else, for the digits extractor, from the bundled digits. metrics.json lands next to the samples; a sweep
directory (`beatgans-sample -m ...`) is evaluated job by job, each job's metrics.json beside its samples.
Only ADM `.npz` files are read from run and sweep directories, never their PNG grids. Samples of a training
run that used wandb send their evaluation to that wandb run (`wandb=auto`, beatgans.cli.attach).
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from beatgans.cli.attach import attach_results, check_wandb
from beatgans.cli.common import CONFIG_PATH
from beatgans.cli.errors import exit_on_user_error
from beatgans.metrics import (
    ReferenceStats,
    compute_reference_stats,
    evaluate_samples,
    load_samples,
    shard_bounds,
)
from beatgans.metrics.digits import cache_dir
from beatgans.metrics.evaluate import (
    find_sample_sets,
    normalise_metric_names,
    resolve_extractor,
)
from beatgans.metrics.extractors import quantize_uint8
from beatgans.utils.errors import UserError
from beatgans.utils.io import update_json
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


def _dataset_name(cfg: DictConfig) -> str:
    """A name for the reference cache: data.name, else the image-folder root's name, else the module's."""
    data = cfg.data
    if data.get("name"):
        return str(data.name)
    if data.get("root"):
        return Path(str(data.root)).name
    return str(data.get("_target_", "data")).rsplit(".", 1)[-1].replace("DataModule", "").lower()


def dataset_images(cfg: DictConfig, limit: int | None) -> tuple[np.ndarray, str]:
    """Real images of `cfg.data` as uint8 NHWC (ADM-quantised) and the split they come from."""
    if cfg.data.get("_target_", "").endswith("DigitsDataModule"):
        from beatgans.data.digits import load_digits

        images, split = load_digits(int(cfg.data.image_size))[0], "all"
    else:
        from hydra.utils import instantiate

        dataset = instantiate(cfg.data).build()
        n = len(dataset) if limit is None else min(limit, len(dataset))
        images, split = torch.stack([dataset[i][0] for i in range(n)]), "train"
    images = images[:limit] if limit is not None else images
    return quantize_uint8(images).permute(0, 2, 3, 1).numpy(), split


def reference_for(cfg: DictConfig, extractor, resolution: int, rank: int, world: int) -> ReferenceStats | None:
    """Reference statistics for this evaluation (see module docstring); None lets digits use its default."""
    expected = {"extractor": extractor.name, "weights_hash": extractor.weights_hash, "resolution": resolution}
    if cfg.metrics.get("reference"):
        return ReferenceStats.load(cfg.metrics.reference, expected)
    if cfg.get("data") is None:
        return None
    name, limit = _dataset_name(cfg), cfg.metrics.get("num_reference")
    path = cache_dir() / "reference" / (f"{name}_{resolution}px_{extractor.name}_{extractor.weights_hash}"
                                        f"_n{limit or 'all'}.npz")
    if not path.is_file() and rank == 0:
        images, split = dataset_images(cfg, limit)
        if images.shape[1] != resolution:
            raise UserError(f"data={name} has {images.shape[1]}px images but the samples are {resolution}px; "
                             "set data.image_size to the samples' resolution.")
        log.info("Computing reference statistics of %d %s images -> %s", len(images), name, path)
        compute_reference_stats(images, extractor, {"dataset": name, "split": split},
                                batch_size=int(cfg.metrics.batch_size), progress=cfg.progress).save(path)
    if world > 1:
        torch.distributed.barrier()
    return ReferenceStats.load(path, {**expected, "dataset": name})


def evaluate(cfg: DictConfig) -> dict:
    """Evaluate `cfg.samples`; every rank returns the metrics, rank 0 writes them to metrics.json.

    A sweep directory is evaluated job by job (each job's metrics.json beside its samples); the return
    value is then {job directory: metrics}.
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    check_wandb(cfg.get("wandb", "auto"), needs_run=False)
    names = normalise_metric_names(cfg.metrics.get("names") or [])
    if not names:
        raise UserError("No metrics requested: choose metrics=fid, fid_is_pr or full.")
    sets = find_sample_sets(cfg.samples)
    if world > 1 and not torch.distributed.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank() if world > 1 else 0
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if cuda else "cpu")
    if len(sets) == 1:
        return _evaluate_set(cfg, *sets[0], names, rank, world, device)
    log.info("Sweep %s: evaluating %d jobs", cfg.samples, len(sets))
    return {str(out_dir): _evaluate_set(cfg, source, out_dir, names, rank, world, device) for source, out_dir in sets}


def _evaluate_set(cfg: DictConfig, source: Path, out_dir: Path, names: list[str], rank: int, world: int,
                  device: torch.device) -> dict:
    """Metrics of one sample set (`source`: an .npz or an image folder); rank 0 merges them into
    `out_dir/metrics.json`."""
    images, _, _ = load_samples(source)
    extractor = resolve_extractor(cfg.metrics.extractor, images, cfg.metrics.get("inception_weights"), device)
    reference = reference_for(cfg, extractor, int(images.shape[1]), rank, world)
    # Whole extractor batches per rank: each image meets the extractor in the same batch as in one process (its
    # float32 features can depend on the batch's size), so only the order of the float64 sums differs.
    bs = int(cfg.metrics.batch_size)
    first, last = shard_bounds(-(-len(images) // bs), rank, world)
    start, end = first * bs, min(last * bs, len(images))
    results = evaluate_samples(images[start:end], reference, names, extractor,
                               batch_size=int(cfg.metrics.batch_size), progress=cfg.progress and rank == 0)
    results.update(eval_extractor=extractor.name, eval_samples=str(source),
                   eval_reference=str(cfg.metrics.get("reference") or (_dataset_name(cfg) if cfg.get("data")
                                                                      else "digits")))
    if rank == 0:
        record = update_json(Path(out_dir) / "metrics.json", results)
        log.info("Metrics: %s (written to %s)", {k: v for k, v in results.items() if not k.startswith("eval_")},
                 Path(out_dir) / "metrics.json")
        # samples written by beatgans-sample name their training run: the evaluation joins its wandb run
        attach_results("eval", record, record.get("run"), out_dir, cfg.get("wandb", "auto"),
                       wandb_dir=OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False))
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    results = evaluate(cfg)
    return results.get("fid") if isinstance(results.get("fid"), float) else None


if __name__ == "__main__":
    main()
