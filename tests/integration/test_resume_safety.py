"""Nothing lost or misreported on resume: CSV history kept, launches recorded side by side, bad checkpoints
refused before anything is touched, changed settings refused unless applied for real, sweeps list failures."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from beatgans.cli.resume import ResumeError
from beatgans.cli.train import train
from tests.conftest import REPO, TINY_TRAIN, compose

BASE = TINY_TRAIN + ["callbacks.sample_grid.on_train_end=false", "callbacks.model_checkpoint.every_n_train_steps=2"]


def cli(run_dir, *overrides, multirun=False, check=True):
    cmd = [sys.executable, "-m", "beatgans.cli.train", *(["-m"] if multirun else []), *BASE, *overrides]
    cmd += [f"hydra.sweep.dir={run_dir}"] if multirun else [f"hydra.run.dir={run_dir}"]
    env = dict(os.environ, WANDB_MODE="offline", PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def csv_steps(run):
    with open(run / "csv" / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]


def test_resume_keeps_csv_history_and_every_launch_record(tmp_path):
    run = tmp_path / "run"
    cli(run, "logger=csv", "trainer.max_steps=3", "trainer.log_every_n_steps=1")
    original = (run / ".hydra" / "overrides.yaml").read_text()
    first_rows = csv_steps(run)
    assert first_rows == [0, 1, 2]
    cli(run, "logger=csv", "trainer.max_steps=5", "trainer.log_every_n_steps=1", "ckpt_path=last")
    assert csv_steps(run) == [0, 1, 2, 3, 4]                          # appended, nothing deleted
    assert (run / ".hydra" / "overrides.yaml").read_text() == original  # the first launch's record is kept
    assert "trainer.max_steps=3" in original
    resumed = yaml.safe_load((run / ".hydra" / "resume-1" / "overrides.yaml").read_text())
    assert "trainer.max_steps=5" in resumed and "ckpt_path=last" in resumed
    assert yaml.safe_load((run / ".hydra" / "resume-1" / "config.yaml").read_text())["trainer"]["max_steps"] == 5
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["trainer"]["max_steps"] == 3


def test_garbage_checkpoint_fails_in_one_sentence_before_touching_the_run(tmp_path):
    run = tmp_path / "run"
    cli(run, "logger=csv", "trainer.max_steps=2", "trainer.log_every_n_steps=1")
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"}
    proc = cli(run, "logger=csv", "trainer.max_steps=4", "ckpt_path=last", check=False)
    assert proc.returncode != 0
    assert f"checkpoint {last} cannot be read" in proc.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"}
    assert after == before
    with pytest.raises(ResumeError, match="not a checkpoint"):
        last.write_bytes(b"garbage")
        train(compose("train", BASE + ["ckpt_path=last"], output_dir=run))


def test_moved_run_and_interrupted_saves_leave_one_newest_last_ckpt(tmp_path):
    train(compose("train", BASE + ["trainer.max_steps=3"], output_dir=tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpts = tmp_path / "b" / "checkpoints"
    (ckpts / ".last.ckpt.tmp").write_bytes(b"half a checkpoint")  # a save killed mid-write
    (ckpts / "last.ckpt").unlink()                                   # no last.ckpt: the newest step*.ckpt is used
    train(compose("train", BASE + ["trainer.max_steps=5", "ckpt_path=last"], output_dir=tmp_path / "b"))
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["last.ckpt", "step0000002.ckpt", "step0000004.ckpt"]  # no -v1 copies, no .tmp
    assert torch.load(ckpts / "last.ckpt", weights_only=False)["global_step"] == 5


def test_changed_settings_are_refused_or_applied_for_real(tmp_path):
    run = tmp_path / "run"
    train(compose("train", BASE + ["trainer.max_steps=2"], output_dir=run))
    with pytest.raises(ResumeError, match=r"task.optimizer.lr: 0.0001 -> 0.005.*resume_overrides=apply"):
        train(compose("train", BASE + ["trainer.max_steps=3", "ckpt_path=last", "task.optimizer.lr=0.005"],
                      output_dir=run))
    assert not (run / ".hydra" / "resume-1").exists()
    train(compose("train", BASE + ["trainer.max_steps=3", "ckpt_path=last", "task.optimizer.lr=0.005",
                                   "resume_overrides=apply"], output_dir=run))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == 0.005  # really used, not the checkpoint's
    assert ckpt["beatgans_config"]["task.optimizer.lr"] == 0.005
    changes = yaml.safe_load((run / ".hydra" / "resume-1" / "applied_changes.yaml").read_text())
    assert changes == ["task.optimizer.lr: 0.0001 -> 0.005"]


def test_failed_sweep_job_is_listed(tmp_path):
    proc = cli(tmp_path, "logger=none", "trainer.max_steps=1", "diffusion.var_type=fixed_small,learned_range",
               multirun=True, check=False)
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "sweep_summary.json").read_text())
    assert summary["failed"] == [1]
    assert summary["jobs"][0]["status"] == "completed" and "output channels" in summary["jobs"][1]["error"]
    assert re.search(r"Sweep job 1 \(.*diffusion.var_type=learned_range\) failed: ConfigError",
                     proc.stdout + proc.stderr)


def test_a_failed_job_closes_its_wandb_run_as_failed(monkeypatch, tiny_train_cfg):
    import types

    import beatgans.cli.train as train_cli

    finished = []
    fake = types.SimpleNamespace(run=object(), finish=lambda exit_code=0: finished.append(exit_code))
    monkeypatch.setitem(sys.modules, "wandb", fake)

    def boom(cfg):
        raise RuntimeError("diverged")

    monkeypatch.setattr(train_cli, "train", boom)
    with pytest.raises(RuntimeError):
        train_cli.main.__wrapped__(tiny_train_cfg())
    assert finished == [1]
