"""Tiny trained runs shared by the guidance tests: models and noisy classifiers on 8 px digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_TRAIN, compose

# TINY_TRAIN minus the DiffusionModule-only keys, for the classifier task.
TINY_CLASSIFIER = [o for o in TINY_TRAIN if not o.startswith("task.")] + ["experiment=digits/classifier"]


def train_run(out: Path, *overrides: str, classifier: bool = False) -> Path:
    """Train a tiny run into `out` (2 steps, no grid) and return its directory."""
    from beatgans.cli.train import train

    base = TINY_CLASSIFIER if classifier else TINY_TRAIN
    train(compose("train", base + ["trainer.max_steps=2", "callbacks.sample_grid.on_train_end=false", *overrides],
                  output_dir=out))
    return out


@pytest.fixture(scope="session")
def guidance_runs(tmp_path_factory) -> dict[str, Path]:
    """cond: class-conditional, learned variances, trained for CFG (null label); uncond: unconditional;
    clf: a noisy classifier on the same process (linear, T = 50, 8 px); clf_t40: one with T = 40."""
    root = tmp_path_factory.mktemp("guidance_runs")
    return {
        "cond": train_run(root / "cond", "net.null_class=true", "task.p_uncond=0.2", "net.learn_sigma=true",
                          "diffusion.var_type=learned_range", "diffusion.loss_type=hybrid",
                          # a few large steps (and a short EMA) so the zero-initialised output layer sees the labels
                          "trainer.max_steps=4", "task.optimizer.lr=1e-2", "task.ema_rates=[0.5]"),
        "uncond": train_run(root / "uncond", "data.num_classes=null"),
        "clf": train_run(root / "clf", classifier=True),
        "clf_t40": train_run(root / "clf_t40", "diffusion.num_timesteps=40", "trainer.max_steps=1", classifier=True),
    }
