"""hparams_search=digits_optuna end to end: the Optuna sweeper runs 2 tiny digits trials, each returns the
optimized metric from train(), and the sweep writes optimization_results.yaml with the best of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
ROOT = Path(__file__).resolve().parents[2]


def test_optuna_sweep_runs_trials_and_writes_results(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    cmd = [sys.executable, "-m", "beatgans.cli.train", "-m", "experiment=digits/ddpm", "hparams_search=digits_optuna",
           "optimized_metric=train/loss", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
           "trainer.max_steps=3", "++trainer.max_time=null", "logger=csv", "callbacks=none", "print_config=false",
           "trainer.enable_progress_bar=false", "data.image_size=8", "net.channel_mult=[1,2]",
           "net.attention_resolutions=[4]", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [json.loads((tmp_path / str(i) / "metrics.json").read_text())["train/loss"] for i in range(2)]
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and result["best_value"] == pytest.approx(min(losses))
    assert set(result["best_params"]) == {"task.optimizer.lr", "net.model_channels"}
    assert 1e-4 <= result["best_params"]["task.optimizer.lr"] <= 5e-3  # the search interval of the preset
    assert not (tmp_path / "2").exists()  # exactly the 2 trials asked for
