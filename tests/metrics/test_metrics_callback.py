"""SampleMetricsCallback on a stand-in module whose 'samples' are real digits chosen by seed."""

from __future__ import annotations

import contextlib

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from beatgans.lit.metrics_callback import SampleMetricsCallback


class DigitsStandIn(L.LightningModule):
    """sample_images returns the clean digit number `seed + i` (mod 1797) and records the calls."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        from beatgans.data.digits import load_digits

        self.layer = torch.nn.Linear(1, 1)
        self.digits = load_digits(8)[0]
        self.calls: list[tuple] = []
        self.ema_entered = 0

    @contextlib.contextmanager
    def ema_scope(self):
        self.ema_entered += 1
        yield self

    def sample_images(self, num_samples, seed, sampler="ddim", steps=10, labels=None):
        self.calls.append((num_samples, seed, sampler, steps, None if labels is None else labels.tolist()))
        return self.digits[(seed + torch.arange(num_samples)) % len(self.digits)]

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_callback_samples_with_ema_seeds_and_logs_metrics(tmp_path):
    module = DigitsStandIn()
    cb = SampleMetricsCallback(every_n_steps=2, num_samples=300, seed=5, steps=7,
                               metrics={"names": ["fid", "precision", "recall"], "extractor": "digits"},
                               on_train_end=True)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb],
                        default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=1))
    # Steps 2 and 4, then the end of training: three evaluations, each inside ema_scope.
    assert len(module.calls) == 3 and module.ema_entered == 3
    n, seed, sampler, steps, labels = module.calls[0]
    assert (n, seed, sampler, steps) == (300, 5, "ddim", 7) and labels[:12] == [i % 10 for i in range(12)]
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # 300 real digits against all 1,797: every sample on the real manifold and a small FID
    # (measured 14 here; uniform noise scores about 470 in the same 8px digits feature space).
    assert logged["metrics/precision"] == 1.0 and 0.0 < logged["metrics/recall"] < 1.0
    assert logged["metrics/fid"] < 30.0
    import json

    final = json.loads((tmp_path / "metrics.json").read_text())
    assert final["fid"] == pytest.approx(logged["metrics/fid"]) and "final/fid" not in final  # canonical key


def test_callback_rejects_unknown_metric():
    with pytest.raises(ValueError, match="Unknown metric"):
        SampleMetricsCallback(metrics=["fidd"])
