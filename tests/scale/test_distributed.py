"""beatgans-sample and beatgans-eval under `torchrun` (torch.distributed.run, 2 gloo processes on CPU) give the
single-process results: a byte-identical .npz when num_samples is not divisible by the world size, and the
same metrics to 1e-9."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, train_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"), steps=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(entry: str, procs: int, out: Path, *overrides: str) -> None:
    """`python -m beatgans.cli.<entry>` in one process, or under `python -m torch.distributed.run`."""
    launcher = ([] if procs == 1 else ["-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                                       "--master_port", str(_free_port())])
    cmd = [sys.executable, *launcher, "-m", f"beatgans.cli.{entry}", f"hydra.run.dir={out}", *overrides]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", WANDB_MODE="offline",
               HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, check=False, cwd=out.parent, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_process_sampling_writes_the_single_process_npz(tiny_run, tmp_path):
    args = [f"run={tiny_run}", "sampler.steps=3", "num_samples=7", "batch_size=2", "seed=5", "device=cpu"]
    _launch("sample", 1, tmp_path / "one", *args)
    _launch("sample", 2, tmp_path / "two", *args)  # 7 = 4 + 3: rank 0 holds 0, 2, 4, 6; rank 1 holds 1, 3, 5
    one, two = (tmp_path / d / "samples_7x8x8x1.npz" for d in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
    data = np.load(two)
    assert data["arr_0"].shape == (7, 8, 8, 1) and len(data["arr_1"]) == 7
    assert len({a.tobytes() for a in data["arr_0"]}) == 7  # per-sample seeds: no duplicates, none missing
    assert not list((tmp_path / "two").glob(".shard_*"))
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    timing = {"sampling_seconds", "images_per_second", "samples_npz", "grid_png"}
    assert {k: v for k, v in m1.items() if k not in timing} == {k: v for k, v in m2.items() if k not in timing}
    assert "target_accuracy" in m1


def test_two_process_evaluation_gives_the_single_process_metrics(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (101, 8, 8, 1), dtype=np.uint8)  # 5 batches of <= 25: ranks get 75 and 26
    names = "metrics.names=[fid,is,precision,recall,kid]"
    results = []
    for procs in (1, 2):
        run = tmp_path / f"p{procs}"
        run.mkdir()
        np.savez(run / "samples.npz", arr_0=images, arr_1=np.zeros(101, np.int64))
        _launch("evaluate", procs, tmp_path / f"eval{procs}", f"samples={run / 'samples.npz'}", names,
                "metrics.extractor=digits", "metrics.batch_size=25", "progress=false", "device=cpu")
        results.append(json.loads((run / "metrics.json").read_text()))
    single, multi = results
    for key in ("fid", "is", "is_std", "precision", "recall", "kid", "kid_std", "num_samples"):
        assert multi[key] == pytest.approx(single[key], rel=1e-9, abs=1e-12), key
