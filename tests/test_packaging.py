"""beatgans works as an installed package: the wheel carries the config tree, every entry point composes its
config from the installed copy alone (outside the repository, without src/ on the path), and users stack their
own config directories on ours with --config-dir or hydra.searchpath.

One wheel build and one `pip install --target` (offline, no dependencies) are shared by the tests; each test
then runs a subprocess from a directory outside the checkout whose only beatgans is the installed one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONF, REPO

ENTRY_POINTS = {"beatgans-train": "train", "beatgans-sample": "sample", "beatgans-eval": "evaluate",
                "beatgans-nll": "nll", "beatgans-bench": "bench", "beatgans-report": "report"}

# A user's own config directory: a dataset and a net that extend ours, and an experiment that uses them plus
# our diffusion and trainer groups.
USER_CONFIGS = {
    "data/my_digits.yaml": "defaults:\n  - digits\n  - _self_\nimage_size: 12\nbatch_size: 8\n",
    "net/my_net.yaml": "defaults:\n  - digits_unet\n  - _self_\nmodel_channels: 24\nchannel_mult: [1, 2]\n",
    "experiment/my_exp.yaml": ("# @package _global_\ndefaults:\n  - override /data: my_digits\n"
                               "  - override /net: my_net\n  - override /diffusion: cosine\n"
                               "  - override /trainer: cpu\ntask_name: my_exp\ntrainer:\n  max_steps: 7\n"),
}


def _clean_env(site: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BEATGANS_CONFIG_DIR")}
    return dict(env, PYTHONPATH=str(site), OMP_NUM_THREADS="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="1")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a clean copy of the sources (no stale build/ or local configs can leak in)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "checkout"
    (src / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "src" / "beatgans", src / "src" / "beatgans",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    local = src / "src" / "beatgans" / "conf" / "local"
    (local / "default.yaml").write_text("marker: a machine's own settings, never shipped\n")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
           "-w", str(tmp / "dist"), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("beatgans-*.whl")
    return whl


@pytest.fixture(scope="module")
def site(wheel) -> Path:
    target = wheel.parent.parent / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("my_configs")
    for rel, text in USER_CONFIGS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.slow
def test_wheel_ships_the_config_tree_py_typed_and_the_entry_points(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    ours = {f"beatgans/conf/{p.relative_to(CONF).as_posix()}" for p in CONF.rglob("*.yaml")
            if p.relative_to(CONF).parts[0] != "local"}
    assert len(ours) > 100 and "beatgans/conf/train.yaml" in ours
    assert ours <= names, sorted(ours - names)[:5]
    assert "beatgans/conf/__init__.py" in names and "beatgans/py.typed" in names
    assert not [n for n in names if n.startswith("beatgans/conf/local/")]
    for script in ENTRY_POINTS:
        assert f"{script} = beatgans.cli." in entry_points


# Runs in a fresh interpreter outside the repository: each job calls an entry point's main() (a module) or runs an
# installed console script (a path) with `--cfg job`, so Hydra composes and prints the config, then returns;
# stdout is captured per job. Last, BEATGANS_CONFIG_DIR, which replaces our tree.
COMPOSE_ALL = r"""
import contextlib, importlib, io, json, os, runpy, sys
import beatgans
jobs, replacement = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {"beatgans_file": beatgans.__file__}
for key, target, args in jobs + [["env_dir", "beatgans.cli.train", ["--cfg", "job"]]]:
    if key == "env_dir":
        os.environ["BEATGANS_CONFIG_DIR"] = replacement
        importlib.reload(importlib.import_module("beatgans.cli.common"))
        importlib.reload(importlib.import_module(target))
    buf = io.StringIO()
    sys.argv = [key] + args
    with contextlib.redirect_stdout(buf):
        try:
            if os.path.isfile(target):
                runpy.run_path(target, run_name="__main__")
            else:
                importlib.import_module(target).main()
        except SystemExit as err:
            out[key + ":exit"] = err.code
    out[key] = buf.getvalue()
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
def test_every_entry_point_composes_from_the_installed_package(site, user_dir, tmp_path):
    """Every entry point from the installed wheel alone; a user's experiment, dataset and net on top of ours,
    through the console script with --config-dir and through hydra.searchpath; BEATGANS_CONFIG_DIR."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    replacement = tmp_path / "replacement"
    replacement.mkdir()
    (replacement / "train.yaml").write_text("task_name: from_env\nmarker: 1\n")
    jobs = [
        ("train", "beatgans.cli.train", ["--cfg", "job", "experiment=digits/ddpm"]),
        ("sample", "beatgans.cli.sample", ["--cfg", "job", "net=digits_unet", "diffusion=linear", "sampler=ddim"]),
        ("evaluate", "beatgans.cli.evaluate", ["--cfg", "job", "samples=x.npz"]),
        ("nll", "beatgans.cli.nll", ["--cfg", "job"]),
        ("bench", "beatgans.cli.bench", ["--cfg", "job"]),
        ("report", "beatgans.cli.report", ["--help"]),
        # What a user types after installing: beatgans-train --config-dir ~/my_configs experiment=my_exp
        ("config_dir", str(site / "bin" / "beatgans-train"),
         ["--config-dir", str(user_dir), "experiment=my_exp", "--cfg", "job"]),
        ("searchpath", "beatgans.cli.train", ["--cfg", "job", "experiment=my_exp",
                                               f"hydra.searchpath=[file://{user_dir}]"]),
    ]
    proc = subprocess.run([sys.executable, "-c", COMPOSE_ALL, json.dumps(jobs), json.dumps(str(replacement))],
                          cwd=elsewhere, env=_clean_env(site), capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert Path(out["beatgans_file"]).resolve().is_relative_to(site.resolve())
    assert not list(elsewhere.iterdir())  # composing writes nothing
    cfg = {key: yaml.safe_load(out[key]) for key, _, _ in jobs if key != "report"}

    assert cfg["train"]["task_name"] == "digits_ddpm" and cfg["train"]["trainer"]["max_steps"] == 3000
    assert cfg["train"]["net"]["_target_"] == "beatgans.nets.UNet"
    assert cfg["sample"]["task_name"] == "sample" and cfg["sample"]["net"]["model_channels"] == 32
    assert cfg["sample"]["sampler"] and cfg["sample"]["diffusion"]["schedule"] == "linear"
    assert cfg["evaluate"]["task_name"] == "evaluate" and cfg["evaluate"]["samples"] == "x.npz"
    assert cfg["nll"]["task_name"] == "nll"
    assert cfg["bench"]["net"]["model_channels"] == 64
    assert out["report:exit"] == 0 and "beatgans-report" in out["report"]
    assert out["config_dir:exit"] in (0, None)
    for key in ("config_dir", "searchpath"):
        mine = cfg[key]
        assert mine["task_name"] == "my_exp" and mine["trainer"]["max_steps"] == 7, key
        assert mine["data"]["image_size"] == 12 and mine["data"]["_target_"].endswith("DigitsDataModule"), key
        assert mine["net"]["model_channels"] == 24 and mine["net"]["channel_mult"] == [1, 2], key
        assert mine["diffusion"]["schedule"] == "cosine" and mine["trainer"]["accelerator"] == "cpu", key
    assert yaml.safe_load(out["env_dir"]) == {"task_name": "from_env", "marker": 1}


def test_bench_baseline_file_is_found_from_the_working_directory_or_the_checkout(tmp_path, monkeypatch):
    """conf/bench.yaml's relative `baseline_file` no longer depends on where the config tree lives."""
    from beatgans.cli.bench import relative_root

    name = "benchmarks/guided_diffusion_baseline.py"
    monkeypatch.chdir(tmp_path)
    assert relative_root(name) == REPO  # a clone: found beside src/ from any directory
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / name).write_text("")
    assert relative_root(name) == tmp_path  # the working directory's copy comes first
    assert relative_root("benchmarks/missing.py") == tmp_path
