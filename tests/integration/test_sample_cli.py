"""`beatgans-sample` end to end on a tiny trained run, and per-sample seeding across batch / world sizes."""

import json

import numpy as np
import pytest
import torch

from beatgans.cli.sample import generate, merge_shards, sample
from beatgans.cli.train import train
from tests.conftest import compose


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import TINY_TRAIN

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = compose("train", TINY_TRAIN + ["trainer.max_steps=2", "callbacks.sample_grid.on_train_end=false"],
                  output_dir=out)
    train(cfg)
    return out


def _sample_cfg(run, out, *extra):
    return compose("sample", [f"run={run}", "sampler.steps=4", "num_samples=6", "batch_size=4", *extra],
                   output_dir=out)


def test_sample_writes_adm_npz_grid_and_metrics(tiny_run, tmp_path):
    metrics = sample(_sample_cfg(tiny_run, tmp_path, "classes=[3]"))
    data = np.load(metrics["samples_npz"])
    assert data["arr_0"].shape == (6, 8, 8, 1) and data["arr_0"].dtype == np.uint8
    assert data["arr_1"].tolist() == [3] * 6
    assert (tmp_path / "grid.png").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["num_samples"] == 6 and saved["sampler"] == "ddim" and "target_accuracy" in saved


def test_samples_do_not_depend_on_batch_size_or_world(tiny_run, tmp_path):
    a, la, _ = generate(_sample_cfg(tiny_run, tmp_path, "batch_size=6"))
    b, lb, _ = generate(_sample_cfg(tiny_run, tmp_path, "batch_size=1"))
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    # Two "ranks" with strided indices, merged back in order, equal the single-process result.
    for r in range(2):
        img, lab, _ = generate(_sample_cfg(tiny_run, tmp_path, "batch_size=2"), rank=r, world=2)
        np.savez(tmp_path / f".shard_{r}.npz", images=img, labels=lab)
    merged, ml = merge_shards(tmp_path, 2, 6)
    assert np.array_equal(merged, a) and np.array_equal(ml, la)


def test_ddpm_sampler_and_raw_weights(tiny_run, tmp_path):
    img, _, info = generate(_sample_cfg(tiny_run, tmp_path, "sampler=ddpm", "sampler.steps=5", "use_ema=false"))
    assert img.shape == (6, 8, 8, 1) and info["sampler"] == "ddpm" and not info["use_ema"]
    ema, _, _ = generate(_sample_cfg(tiny_run, tmp_path, "sampler=ddpm", "sampler.steps=5"))
    assert not np.array_equal(img, ema)


def test_missing_run_is_a_clear_error(tmp_path):
    from beatgans.cli.loading import RunError

    with pytest.raises(RunError, match="is not a beatgans run directory"):
        generate(_sample_cfg(tmp_path / "nope", tmp_path))


def test_torchrun_two_processes_match_one_process(tiny_run, tmp_path):
    """Two gloo ranks (torchrun) take indices r, r + 2, ...; the merged npz equals one process's."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    args = [f"run={tiny_run}", "sampler.steps=4", "num_samples=5", "batch_size=2", "judge=false"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "beatgans.cli.sample", *args, f"hydra.run.dir={tmp_path / 'ddp'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, labels, _ = generate(_sample_cfg(tiny_run, tmp_path, "num_samples=5", "batch_size=5"))
    data = np.load(next((tmp_path / "ddp").glob("samples_*.npz")))
    assert np.array_equal(data["arr_0"], single) and np.array_equal(data["arr_1"], labels)
    assert not list((tmp_path / "ddp").glob(".shard_*"))
