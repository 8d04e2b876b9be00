"""SampleMetricsCallback: FID / IS / precision-recall / KID of EMA samples during training.

Contract with the LightningModule (DiffusionModule implements it):
    pl_module.sample_images(num_samples: int, seed: int, sampler="ddim", steps: int, labels=None)
        -> (B, C, H, W) float in [-1, 1]; sample i uses seed + i
    pl_module.ema_scope()   context manager holding EMA weights (optional: used when present)
    pl_module.num_classes   int or None (labels cycle over the classes, by global sample index)

Every process draws a contiguous shard of the M samples (global index i -> seed + i, label i % K),
so the numbers do not depend on the number of processes; the metric states sync across ranks.
The feature extractor lives on the callback, never on the module: it stays out of checkpoints.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch

from beatgans.metrics import ReferenceStats, compute_reference_stats, evaluate_samples, shard_bounds
from beatgans.metrics.evaluate import normalise_metric_names, resolve_extractor
from beatgans.metrics.extractors import DigitsExtractor, FeatureExtractor, quantize_uint8
from beatgans.utils.io import update_json
from beatgans.utils.logging import get_logger

log = get_logger(__name__)


class SampleMetricsCallback(L.Callback):
    """Every `every_n_steps` optimizer steps, sample `num_samples` images (DDIM, `steps` steps, seeded)
    and log `<prefix>/<metric>` for every configured metric.

    Args:
        metrics: metric names, or a `metrics` config node (names, extractor, reference,
            inception_weights, batch_size, num_reference), e.g. `${metrics}`.
        extractor: "auto" (digits for one channel, else inception), "inception", "digits", "random".
        reference: reference `.npz`; None: the digits default for the digits extractor, else the first
            `num_reference` images of the datamodule's `build()` dataset (computed once, in memory).
        on_train_end: also evaluate after training and write `<metric>` (canonical key: `fid`, `is`, ...)
            into the run's metrics.json.
    """

    def __init__(self, every_n_steps: int = 5000, num_samples: int = 1000, seed: int = 0, sampler: str = "ddim",
                 steps: int = 25, metrics: Sequence[str] | Mapping[str, Any] = ("fid",), extractor: str = "auto",
                 reference: str | None = None, inception_weights: str | None = None, batch_size: int = 100,
                 num_reference: int | None = 10000, prefix: str = "metrics", on_train_end: bool = False):
        if isinstance(metrics, Mapping):
            cfg = dict(metrics)
            metrics = list(cfg.get("names") or [])
            extractor = cfg.get("extractor") or extractor
            reference = cfg.get("reference", reference)
            inception_weights = cfg.get("inception_weights", inception_weights)
            batch_size = int(cfg.get("batch_size") or batch_size)
            num_reference = cfg.get("num_reference", num_reference)
        self.names = normalise_metric_names(list(metrics))
        self.every_n_steps, self.num_samples, self.seed = every_n_steps, num_samples, seed
        self.sampler, self.steps = sampler, steps
        self.extractor_name, self.reference_path = extractor, reference
        self.inception_weights, self.batch_size, self.num_reference = inception_weights, batch_size, num_reference
        self.prefix, self.at_end = prefix, on_train_end
        self._extractor: FeatureExtractor | None = None
        self._reference: ReferenceStats | None = None
        self._done_step: int | None = None
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ set-up (lazy, per process)
    def _setup(self, trainer: L.Trainer, images_u8_nhwc: torch.Tensor) -> None:
        if self._extractor is None:
            self._extractor = resolve_extractor(self.extractor_name, images_u8_nhwc, self.inception_weights,
                                                trainer.strategy.root_device)
        if self._reference is None:
            self._reference = self._make_reference(trainer, self._extractor, int(images_u8_nhwc.shape[1]))

    def _make_reference(self, trainer: L.Trainer, extractor: FeatureExtractor,
                        resolution: int) -> ReferenceStats | None:
        expected = {"extractor": extractor.name, "weights_hash": extractor.weights_hash, "resolution": resolution}
        if self.reference_path:
            return ReferenceStats.load(self.reference_path, expected)
        if isinstance(extractor, DigitsExtractor):
            return None  # evaluate_samples uses the cached statistics of the 1,797 clean digits
        dm = getattr(trainer, "datamodule", None)
        if dm is None or not hasattr(dm, "build"):
            raise ValueError("SampleMetricsCallback needs metrics.reference=<.npz> or a datamodule with build().")
        dataset = dm.build()
        n = len(dataset) if self.num_reference is None else min(int(self.num_reference), len(dataset))
        # Every rank computes the same (deterministic) statistics: no file, no barrier needed.
        images = torch.stack([dataset[i][0] for i in range(n)])
        u8 = quantize_uint8(images).permute(0, 2, 3, 1)
        return compute_reference_stats(u8, extractor, {"dataset": type(dm).__name__, "split": "train"},
                                       batch_size=self.batch_size)

    # ------------------------------------------------------------------ evaluation
    def _sample_shard(self, trainer: L.Trainer, pl_module: L.LightningModule) -> torch.Tensor:
        start, end = shard_bounds(self.num_samples, trainer.global_rank, trainer.world_size)
        k = getattr(pl_module, "num_classes", None)
        labels = torch.arange(start, end, device=pl_module.device) % k if k else None
        scope = pl_module.ema_scope() if hasattr(pl_module, "ema_scope") else contextlib.nullcontext()
        with scope:
            images = pl_module.sample_images(end - start, seed=self.seed + start, sampler=self.sampler,
                                             steps=self.steps, labels=labels)
        return quantize_uint8(images).permute(0, 2, 3, 1).cpu()

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Sample this rank's shard and compute the metrics (synced: identical on every rank)."""
        images = self._sample_shard(trainer, pl_module)
        self._setup(trainer, images)
        results = evaluate_samples(images, self._reference, self.names, self._extractor, batch_size=self.batch_size)
        self.last_metrics = {f"{self.prefix}/{k}": float(v) for k, v in results.items() if k != "num_samples"}
        return self.last_metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.names or not self.every_n_steps or step == 0 or step % self.every_n_steps:
            return
        if self._done_step == step:  # gradient accumulation repeats global_step
            return
        self._done_step = step
        metrics = self.evaluate(trainer, pl_module)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False)
        log.info("step %d: %s", step, metrics)

    def on_train_end(self, trainer, pl_module) -> None:
        if not (self.at_end and self.names):
            return
        # canonical keys (docs/metrics.md): the run's final `fid` reads like beatgans-sample's and -eval's
        final = {k.replace(f"{self.prefix}/", "", 1): v for k, v in self.evaluate(trainer, pl_module).items()}
        if trainer.global_rank == 0:
            for logger in trainer.loggers:
                logger.log_metrics(final, step=trainer.global_step)
            update_json(Path(trainer.default_root_dir) / "metrics.json", final)
            log.info("final metrics: %s", final)
