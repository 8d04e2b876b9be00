"""A 2-process DDP run on CPU (ddp_spawn, gloo) and a Hydra multirun of two tiny jobs through the real CLI."""

import json
import os
import subprocess
import sys

import torch

from beatgans.cli.train import train
from tests.conftest import REPO


def test_ddp_spawn_two_cpu_processes(tiny_train_cfg, tmp_path):
    cfg = tiny_train_cfg("trainer=ddp_cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=2",
                         "callbacks.sample_grid.on_train_end=false", out=tmp_path / "ddp")
    train(cfg)
    ckpt = torch.load(tmp_path / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["global_step"] == 2


def test_multirun_gives_each_job_its_own_run(tmp_path):
    from tests.conftest import TINY_TRAIN

    overrides = [o for o in TINY_TRAIN if not o.startswith("net.model_channels")]
    cmd = [sys.executable, "-m", "beatgans.cli.train", "-m", "net.model_channels=32,64", "trainer.max_steps=1",
           "logger=wandb", f"hydra.sweep.dir={tmp_path}", "callbacks.sample_grid.on_train_end=false",
           *[o for o in overrides if not o.startswith(("logger=", "trainer.max_steps"))]]
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, width in (("0", 32), ("1", 64)):
        run = tmp_path / job
        assert json.loads((run / "metrics.json").read_text())["global_step"] == 1
        assert f"model_channels: {width}" in (run / ".hydra" / "config.yaml").read_text()
        assert list((run / "wandb").glob("offline-run-*")), "each job has its own offline wandb run"
