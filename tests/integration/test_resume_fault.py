"""Fault test: SIGKILL a tiny training run at random moments, resume each time, and require the final state to
be bit-identical to an uninterrupted run, ending with a stop by max_steps off the checkpoint grid."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY_TRAIN
from tests.integration.test_resume import assert_same_state, load

# every 3 steps: kills land between checkpoints, and the final stop (max_steps=10) is off that grid
OVERRIDES = TINY_TRAIN + ["callbacks.sample_grid.on_train_end=false",
                          "callbacks.model_checkpoint.every_n_train_steps=3", "task.ema_rates=[0.9]",
                          "data.random_flip=true", "trainer.max_steps=10"]


def launch(run_dir, *extra):
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "beatgans.cli.train", *OVERRIDES, *extra, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow  # 28 s with one of 2 cores busy; minutes on a loaded box (each launch is a fresh interpreter)
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    straight = launch(tmp_path / "straight")  # runs beside the killed sequence (2 cores), compared at the end
    rng = random.Random(0)
    run = tmp_path / "killed"
    ckpts = run / "checkpoints"
    kills = 0
    for _attempt in range(8):
        proc = launch(run, *(["ckpt_path=last"] if (ckpts / "last.ckpt").exists() else []))
        if kills < 3:
            deadline = time.monotonic() + 120
            start_step = load(ckpts / "last.ckpt")["global_step"] if (ckpts / "last.ckpt").exists() else 0
            while proc.poll() is None and time.monotonic() < deadline:  # wait until training is under way
                if (ckpts / "last.ckpt").exists() and load(ckpts / "last.ckpt")["global_step"] > start_step:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))  # a random moment: mid-step, mid-save or between checkpoints
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
        if load(ckpts / "last.ckpt")["global_step"] == 10:
            break
    assert kills >= 1
    assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    assert_same_state(load(tmp_path / "straight" / "checkpoints" / "last.ckpt"), load(ckpts / "last.ckpt"))
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["last.ckpt", "step0000003.ckpt", "step0000006.ckpt", "step0000009.ckpt"], names
