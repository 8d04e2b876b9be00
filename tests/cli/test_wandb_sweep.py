"""wandb in sweeps: run names from the overrides, groups from the sweep, the config logged once and flat;
debug=fdr writes only its config and log; a missing optimized_metric is one clear error."""

from __future__ import annotations

import subprocess
import sys

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader, TensorDataset

import beatgans.cli  # noqa: F401  registers the resolvers
from beatgans.cli.train import ConfigError, check_optimized_metric, log_config_once
from tests.conftest import CONF, REPO

GAN = ["experiment=toy/diffusion_gan_25gaussians", "data.num_points=128", "data.batch_size=32", "task.plot_every=0",
       "task.eval_samples=100", "print_config=false", "trainer.enable_progress_bar=false"]


def _wandb_node(overrides, mode, sweep_dir="/tmp/sweeps/ablation_r1"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", ["logger=wandb", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = mode
        cfg.hydra.sweep.dir = sweep_dir
    HydraConfig.instance().set_config(cfg)
    try:
        return OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    finally:
        HydraConfig.instance().cfg = None


def test_sweep_job_named_by_overrides_and_grouped_by_sweep():
    node = _wandb_node(["seed=1", "data.batch_size=8", "ckpt_path=last", "trainer.max_steps=9"], RunMode.MULTIRUN)
    # resumable settings (ckpt_path, the budget) stay out of the name, so a resumed job keeps it
    assert node["name"] == "data.batch_size=8,logger=wandb,seed=1"
    assert node["group"] == "ablation_r1"


def test_single_run_fallbacks():
    assert _wandb_node([], RunMode.RUN)["name"] == "logger=wandb"
    assert _wandb_node([], RunMode.RUN)["group"] is None
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # outside a Hydra app
        cfg = compose("train", ["logger=wandb", "task_name=mine"])
    assert cfg.logger.wandb.name == "mine" and cfg.logger.wandb.group is None


class _Recorder(Logger):
    """A logger that records every log_hyperparams call (stands in for WandbLogger)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    name = property(lambda self: "rec")
    version = property(lambda self: 0)

    def log_hyperparams(self, params, *args, **kwargs):
        self.calls.append(dict(params))

    def log_metrics(self, metrics, step=None):
        pass


class _Tiny(L.LightningModule):
    def __init__(self, width: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.lin = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        return self.lin(batch[0]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_config_logged_once_and_flat(tmp_path):
    cfg = OmegaConf.create({"task": {"r1_gamma": 0.1, "diffusion": {"sigma": 0.05}}, "seed": 3})
    rec, module = _Recorder(), _Tiny()
    datamodule = L.LightningDataModule()
    log_config_once([rec], cfg, tmp_path, module, datamodule)
    L.Trainer(max_steps=1, logger=rec, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=str(tmp_path)).fit(
        module, DataLoader(TensorDataset(torch.randn(4, 3)), batch_size=2))
    assert rec.calls == [{"task.r1_gamma": 0.1, "task.diffusion.sigma": 0.05, "seed": 3, "run_dir": str(tmp_path)}]


def test_missing_optimized_metric_names_the_available_keys():
    cfg = OmegaConf.create({"optimized_metric": "val/fid"})
    with pytest.raises(ConfigError, match=r"optimized_metric=val/fid .* one of: train/loss, val/loss\."):
        check_optimized_metric(cfg, {"val/loss": 0.5, "train/loss": 0.7})
    assert check_optimized_metric(cfg, {"val/fid": 9.0}) == 9.0
    assert check_optimized_metric(OmegaConf.create({}), {"val/loss": 0.5}) is None


def test_debug_fdr_writes_only_config_and_log(tmp_path):
    run = tmp_path / "run"
    subprocess.run([sys.executable, "-m", "beatgans.cli.train", *GAN, "debug=fdr", f"hydra.run.dir={run}"],
                   cwd=REPO, check=True, capture_output=True)
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == [".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "debug.log"]
