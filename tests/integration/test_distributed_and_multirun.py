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


def test_diffusion_gan_ddp_spawn_two_cpu_processes(tmp_path):
    """Diffusion-GAN under DDP (2 gloo ranks, find_unused_parameters): it trains, the controller counts the
    global batch and rank 0's checkpoint carries its state."""
    from tests.conftest import compose

    # ddp_spawn pickles the module (and AdaptiveDiffusion's torch.Generator) to the ranks with
    # torch.multiprocessing's default file-descriptor sharing

    cfg = compose("train", ["experiment=toy/diffusion_gan_25gaussians", "trainer=ddp_cpu",
                            "trainer.strategy=ddp_spawn_find_unused_parameters_true", "trainer.max_steps=16",
                            "data.num_points=2048", "data.batch_size=64", "task.plot_every=0",
                            "task.eval_samples=200", "task.diffusion.ada_kimg=1", "logger=none",
                            "trainer.enable_progress_bar=false", "print_config=false",
                            "net.generator.hidden=16", "net.discriminator.hidden=16"], output_dir=tmp_path)
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    extra = ckpt["state_dict"]["_extra_state"]
    assert extra["gan_iteration"] == 8  # 16 optimizer steps = 8 iterations on every rank
    state = extra["adaptive_diffusion"]
    # two updates (every 4 iterations), each moving p by at most 2 ranks x 64 x 4 / 1000
    assert 0.0 <= state["p"] <= 2 * 2 * 64 * 4 / 1000 + 1e-9
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["gan/iterations"] == 8 and 10 <= metrics["gan/T"] <= 1000
