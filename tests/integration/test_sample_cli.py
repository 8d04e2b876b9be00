"""`beatgans-sample` end to end on a tiny trained run, and per-sample seeding across batch / world sizes."""

import json
from pathlib import Path

import numpy as np
import pytest

from beatgans.cli.sample import generate, merge_shards, sample
from tests.conftest import compose, train_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"), steps=2)


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


# --- Issue 21: outputs never overwritten, bad input refused in one sentence, progress -------------------


@pytest.mark.parametrize("extra, message", [
    ("num_samples=0", r"num_samples=0 must be a positive integer"),
    ("batch_size=0", r"batch_size=0 must be a positive integer"),
    ("sampler.steps=51", r"sampler.steps=51 exceeds the model's T=50"),
    ("guidance=cfg guidance.scale=nan", r"guidance.scale=nan must be a finite number"),
    ("classes=[12]", r"classes=\[12\]: \[12\] not in 0..9 \(the model has 10 classes\)"),
])
def test_bad_sample_requests_are_refused_before_any_work(tiny_run, tmp_path, extra, message):
    from beatgans.utils.errors import UserError

    with pytest.raises(UserError, match=message):
        sample(_sample_cfg(tiny_run, tmp_path / "out", *extra.split()))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_sampling_twice_into_one_directory_refuses_and_keeps_the_first(tiny_run, tmp_path):
    from beatgans.utils.errors import UserError

    first = sample(_sample_cfg(tiny_run, tmp_path, "seed=0"))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(UserError, match="already holds grid.png, metrics.json, samples_6x8x8x1.npz"):
        sample(_sample_cfg(tiny_run, tmp_path, "seed=1"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert json.loads((tmp_path / "metrics.json").read_text())["seed"] == 0 == first["seed"]


def test_a_file_appearing_meanwhile_is_never_replaced(tmp_path):
    from beatgans.utils.io import save_samples_npz

    path = save_samples_npz(tmp_path / "s.npz", np.zeros((1, 2, 2, 1), np.uint8), None, overwrite=False)
    with pytest.raises(FileExistsError):
        save_samples_npz(path, np.ones((1, 2, 2, 1), np.uint8), None, overwrite=False)
    assert np.load(path)["arr_0"].max() == 0 and [p.name for p in tmp_path.iterdir()] == ["s.npz"]


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "truncate"])
def test_unreadable_checkpoint_is_named(tiny_run, tmp_path, content):
    from beatgans.cli.loading import RunError

    bad = tmp_path / "bad.ckpt"
    good = (tiny_run / "checkpoints" / "last.ckpt").read_bytes()
    bad.write_bytes(good[: len(good) // 2] if content == "truncate" else content)
    with pytest.raises(RunError, match=f"Checkpoint {bad} could not be read .*truncated or not a PyTorch"):
        generate(_sample_cfg(tiny_run, tmp_path, f"ckpt={bad}"))


def test_sampling_progress_logs_plain_lines_without_a_terminal(tiny_run, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="beatgans"):
        generate(_sample_cfg(tiny_run, tmp_path, "num_samples=5", "batch_size=2"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sampling:")]
    assert lines and lines[-1].startswith("sampling: 5/5 img (100%)")


def test_nll_progress_advances_along_the_chain(tiny_run, tmp_path, caplog):
    import logging

    from beatgans.cli.nll import evaluate_nll

    cfg = compose("nll", [f"run={tiny_run}", "data.image_size=8", "batch_size=2", "num_batches=1"],
                  output_dir=tmp_path / "nll")
    with caplog.at_level(logging.INFO, logger="beatgans"):
        evaluate_nll(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bits/dim:")]
    assert lines[-1].startswith("bits/dim: 50/50 step (100%)")  # T = 50 network calls, one per step


def _cli(args, cwd, timeout=240):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.Popen([sys.executable, "-m", "beatgans.cli.sample", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_cli_same_second_launches_get_separate_dirs_and_a_used_dir_is_refused(tiny_run, tmp_path):
    args = [f"run={tiny_run}", "sampler.steps=2", "num_samples=2", "judge=false", f"paths.log_dir={tmp_path}"]
    results = Path(tiny_run) / "results" / "sample"  # the default for run=<dir>: beside the training run
    before = set(results.iterdir()) if results.is_dir() else set()
    procs = [_cli(args + [f"seed={i}"], tmp_path) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = sorted(set(results.iterdir()) - before)
    assert len(runs) == 2 and all(len(list(r.glob("samples_*.npz"))) == 1 for r in runs)
    assert sorted(json.loads((r / "metrics.json").read_text())["seed"] for r in runs) == [0, 1]
    # Sampling again into a used directory: one line, exit 2, the first run's metadata untouched.
    overrides = (runs[0] / ".hydra" / "overrides.yaml").read_text()
    proc = _cli(args + ["seed=7", f"hydra.run.dir={runs[0]}"], tmp_path)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2 and "Traceback" not in err
    assert f"The output directory {runs[0]} is not empty" in err
    assert (runs[0] / ".hydra" / "overrides.yaml").read_text() == overrides
    # Bad input exits 2 with one sentence and no traceback.
    proc = _cli(args + ["num_samples=0"], tmp_path)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2 and "Traceback" not in err and "num_samples=0 must be a positive integer" in err
