"""Results of a training run land next to it and reach its wandb run: beatgans-sample / -nll write under
`<run>/results/<task>/`, never into the run's own metrics.json, and each result adds a history row to the training
run's (offline) wandb run, resumed by id; beatgans-eval of those samples does the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beatgans.cli.attach import history_row, training_wandb_run, wants_wandb
from beatgans.cli.rundirs import output_root
from beatgans.report import find_jobs, select_tasks
from beatgans.utils.errors import UserError
from tests.conftest import REPO, TINY_TRAIN
from tests.wandb_records import read_run

pytest.importorskip("wandb")

ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
       "PYTHONPATH": str(REPO / "src")}


def _cli(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"beatgans.cli.{module}", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _rows(result_dir: Path) -> tuple[dict, list[dict]]:
    files = sorted(Path(result_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"one offline wandb run expected in {result_dir}, found {files}"
    return read_run(files[0])


def test_output_root_puts_results_of_a_run_beside_it():
    assert output_root("runs", "sample", "/r/run1", "logs") == "/r/run1/results/sample"
    assert output_root("multiruns", "nll", "/r/run1", "logs") == "/r/run1/results/nll/multiruns"
    assert output_root("runs", "sample", None, "logs") == "logs/sample/runs"  # a bare checkpoint
    assert output_root("multiruns", "sample", "None", "logs") == "logs/sample/multiruns"  # run swept: the sweep root
    assert output_root("runs", "train", "/r/run1", "logs") == "logs/train/runs"
    assert output_root("runs", "evaluate", "/r/run1", "logs") == "logs/evaluate/runs"


def test_history_row_keeps_numbers_only():
    row = history_row("sample", {"fid": 3.5, "nfe": 10, "use_ema": True, "sampler": "ddim", "bad": float("nan"),
                                 "guidance": {"name": "cfg", "scale": 2.0}})
    assert row == {"sample/fid": 3.5, "sample/nfe": 10, "sample/guidance.scale": 2.0}


def test_wandb_setting_is_checked():
    assert wants_wandb("auto") is None and wants_wandb(True) is True and wants_wandb("false") is False
    with pytest.raises(UserError, match=r"wandb='maybe': use auto"):
        wants_wandb("maybe")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A 3-step digits run tracked by (offline) wandb."""
    run = tmp_path_factory.mktemp("attach") / "run"
    args = [a for a in TINY_TRAIN if not a.startswith("logger=")]
    _cli("train", *args, "logger=wandb", f"hydra.run.dir={run}")
    return run


def test_sample_nll_and_eval_land_beside_the_run_and_in_its_wandb_run(tracked_run):
    run = tracked_run
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    assert training_wandb_run(run) == {"id": run_id, "project": "beatgans", "entity": None}
    train_metrics = (run / "metrics.json").read_bytes()

    _cli("sample", f"run={run}", "num_samples=8", "batch_size=8", "sampler.steps=4", "progress=false")
    [sample_dir] = (run / "results" / "sample").iterdir()
    sample = json.loads((sample_dir / "metrics.json").read_text())
    assert sample["wandb_run_id"] == run_id and sample["run"] == str(run)
    assert sample["ckpt_step"] == 3  # read from the checkpoint the sampler loaded
    wrun, rows = _rows(sample_dir)
    assert wrun["run_id"] == run_id and wrun["project"] == "beatgans"
    [row] = rows
    assert row["sample/num_samples"] == 8 and row["sample/nfe"] == 4 and row["trainer/global_step"] == 3
    assert row["sample/target_accuracy"] == pytest.approx(sample["target_accuracy"])
    assert row["sample/grid/_type"] == "image-file" and row["sample/grid/format"] == "png"

    # two bits/dim evaluations: each keeps its own record, neither touches the training run's metrics.json
    for seed in (0, 1):
        _cli("nll", f"run={run}", "data.image_size=8", "num_batches=1", "batch_size=4", f"seed={seed}",
             "progress=false")
    nll_dirs = sorted((run / "results" / "nll").iterdir())
    assert len(nll_dirs) == 2
    bpds = []
    for d in nll_dirs:
        record = json.loads((d / "metrics.json").read_text())
        [row] = _rows(d)[1]
        assert row["nll/bpd"] == pytest.approx(record["bpd"]) and row["trainer/global_step"] == 3
        assert record["ckpt_step"] == 3
        bpds.append(record["bpd"])
    assert bpds[0] != bpds[1]  # different noise seeds, two different numbers, both kept
    assert (run / "metrics.json").read_bytes() == train_metrics

    eval_dir = run.parent / "eval"
    _cli("evaluate", f"samples={sample_dir}", "metrics=fid", "progress=false", f"hydra.run.dir={eval_dir}")
    evaluated = json.loads((sample_dir / "metrics.json").read_text())
    wrun, [row] = _rows(eval_dir)
    assert wrun["run_id"] == run_id
    assert row["eval/fid"] == pytest.approx(evaluated["fid"]) and row["eval/num_samples"] == 8

    # the report over the run directory finds the training job and its results; --tasks picks one kind
    jobs = find_jobs([str(run)])
    assert sorted(j.task for j in jobs) == ["nll", "nll", "sample", "train"]
    assert sorted(j.metrics["bpd"] for j in select_tasks(jobs, ["nll"])) == pytest.approx(sorted(bpds))
    with pytest.raises(ValueError, match=r"no job of \['evaluate'\] among the 4 found"):
        select_tasks(jobs, ["evaluate"])


def test_sample_sweep_of_one_run_lands_beside_it_and_logs_each_job(tracked_run):
    run = tracked_run
    before = {p for p in (run / "results").rglob("run-*.wandb")} if (run / "results").exists() else set()
    _cli("sample", "-m", f"run={run}", "seed=0,1", "num_samples=4", "batch_size=4", "sampler.steps=2",
         "progress=false", "grid=false")
    [sweep] = (run / "results" / "sample" / "multiruns").iterdir()
    assert (sweep / "multirun.yaml").is_file()
    seeds = []
    for job in ("0", "1"):
        wrun, [row] = _rows(sweep / job)
        assert wrun["run_id"] == (run / "wandb_run_id.txt").read_text().strip()
        seeds.append(row["sample/seed"])
    assert seeds == [0, 1]
    assert len({p for p in (run / "results").rglob("run-*.wandb")} - before) == 2


def test_wandb_false_attaches_nothing_and_true_needs_a_tracked_run(tracked_run, tmp_path):
    out = tmp_path / "s"
    _cli("sample", f"run={tracked_run}", "num_samples=2", "batch_size=2", "sampler.steps=2", "progress=false",
         "wandb=false", f"hydra.run.dir={out}")
    assert (out / "metrics.json").is_file() and not (out / "wandb").exists()
    assert "wandb_run_id" not in json.loads((out / "metrics.json").read_text())

    untracked = tmp_path / "untracked"  # the check reads only <run>/wandb_run_id.txt, before anything loads
    untracked.mkdir()
    proc = _cli("sample", f"run={untracked}", "num_samples=2", "batch_size=2", "sampler.steps=2", "progress=false",
                "wandb=true", check=False)
    assert proc.returncode == 2
    assert "wandb=true but the training run" in proc.stderr + proc.stdout
    assert not list(untracked.rglob("samples_*.npz"))  # refused before anything was sampled
    proc = _cli("sample", f"run={untracked}", "num_samples=2", "batch_size=2", "sampler.steps=2", "progress=false",
                "wandb=maybe", check=False)
    assert proc.returncode == 2 and "wandb='maybe': use auto" in proc.stderr + proc.stdout


def test_a_wandb_failure_under_auto_keeps_the_results_and_warns(tmp_path, monkeypatch, caplog):
    import wandb

    from beatgans.cli.attach import attach_results

    run = tmp_path / "run"
    run.mkdir()
    (run / "wandb_run_id.txt").write_text("abc123\n")
    (tmp_path / "out").mkdir()

    def unreachable(**kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    assert attach_results("sample", {"fid": 1.0}, run, tmp_path / "out", "auto") is None
    assert "could not log the sample results to run abc123 (ConnectionError" in caplog.text
    with pytest.raises(ConnectionError):
        attach_results("sample", {"fid": 1.0}, run, tmp_path / "out", True)
