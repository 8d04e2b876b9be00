"""Every config composes, and every experiment / net / data node instantiates (lightning-hydra-template style)."""

import pytest
from hydra.utils import instantiate

from tests.conftest import CONF, compose

EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml"))
HEAVY = ("imagenet", "lsun", "cifar10", "celeba")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes(name, tmp_path):
    cfg = compose("train", [f"experiment={name}"], output_dir=tmp_path)
    assert cfg.task._target_ and cfg.data._target_ and cfg.trainer._target_


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if not any(h in e for h in HEAVY)])
def test_light_experiment_instantiates(name, tmp_path):
    cfg = compose("train", [f"experiment={name}"], output_dir=tmp_path)
    module = instantiate(cfg.task)
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("name", ["sample", "train"])
def test_entry_configs_compose(name, tmp_path):
    cfg = compose(name, [], output_dir=tmp_path)
    assert cfg.task_name


def test_debug_and_logger_groups_compose(tmp_path):
    for override in ["debug=default", "logger=csv", "logger=none", "logger=wandb", "trainer=ddp_cpu"]:
        compose("train", [override], output_dir=tmp_path)


def test_slurm_launcher_composes(tmp_path):
    """`hydra/launcher=submitit_slurm` composes (hydra-submitit-launcher comes with the slurm / dev extras)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("train", ["hydra/launcher=submitit_slurm", "experiment=digits/ddpm"],
                            return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_.lower()
