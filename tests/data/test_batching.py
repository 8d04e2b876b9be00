"""The global-batch split rule, its refusals, and the presets that state a paper's batch."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from beatgans.data.batching import (
    BatchSizeError,
    BatchSplit,
    apply_batch_split,
    split_global_batch,
    world_size_from_trainer,
)
from tests.conftest import compose


@pytest.mark.parametrize("global_batch,world,micro,expected", [
    (2048, 8, None, BatchSplit(256, 1, 8)),   # ADM ImageNet 64 on one 8-GPU node
    (2048, 16, 32, BatchSplit(32, 4, 16)),    # two nodes, 32 images per pass, 4 accumulated
    (256, 1, 64, BatchSplit(64, 4, 1)),       # ImageNet 128 on a single GPU
    (128, 2, 64, BatchSplit(64, 1, 2)),
    (7, 1, 7, BatchSplit(7, 1, 1)),
])
def test_split_rule(global_batch, world, micro, expected):
    split = split_global_batch(global_batch, world, micro)
    assert split == expected and split.global_batch_size == global_batch


@pytest.mark.parametrize("global_batch,world,micro,message", [
    (256, 3, None, "data.global_batch_size=256 does not split evenly over 3 processes"),
    (2048, 8, 48, "data.micro_batch_size=48 does not divide the 256 images"),
    (256, 8, 64, "data.micro_batch_size=64 does not divide the 32 images"),  # micro larger than the share
    (0, 1, None, "data.global_batch_size must be a positive integer"),
    (256, 1, 0, "data.micro_batch_size must be a positive integer"),
])
def test_split_refusals_are_one_sentence(global_batch, world, micro, message):
    with pytest.raises(BatchSizeError) as err:
        split_global_batch(global_batch, world, micro)
    text = str(err.value)
    assert text.startswith(message) and text.count(". ") == 0 and text.endswith(".")


@pytest.mark.parametrize("trainer,world", [
    ({"devices": 8, "num_nodes": 2, "accelerator": "gpu"}, 16), ({"devices": [0, 1], "accelerator": "gpu"}, 2),
    ({"devices": "0,1,2", "accelerator": "gpu"}, 3), ({"devices": "4"}, 4),
    ({"devices": "auto", "accelerator": "cpu"}, 1),
    ({"devices": 2, "accelerator": "cpu", "strategy": "ddp_spawn"}, 2),
])
def test_world_size_from_trainer_config(trainer, world):
    assert world_size_from_trainer(OmegaConf.create(trainer)) == world


def test_apply_sets_per_process_batch_and_accumulation():
    cfg = compose("train", ["experiment=imagenet64/adm", "trainer.devices=8", "trainer.num_nodes=2",
                            "data.micro_batch_size=64"])
    assert apply_batch_split(cfg) == BatchSplit(64, 2, 16)
    # the recorded config holds what the run uses: 64 per pass x 2 accumulated x 16 processes = 2048
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches, cfg.data.global_batch_size) == (64, 2, 2048)


@pytest.mark.parametrize("overrides,message", [
    (["experiment=imagenet128/adm", "trainer.devices=3"], "data.global_batch_size=256 does not split evenly over 3"),
    (["experiment=imagenet128/adm", "trainer.devices=1", "data.batch_size=64"], "data.batch_size=64 (per process) and"),
    (["experiment=imagenet128/adm", "trainer.devices=1", "trainer.accumulate_grad_batches=2"],
     "trainer.accumulate_grad_batches is derived"),
    (["experiment=digits/ddpm", "data.micro_batch_size=8"], "data.micro_batch_size needs data.global_batch_size"),
])
def test_apply_refuses_before_any_work(overrides, message):
    cfg = compose("train", overrides)
    with pytest.raises(BatchSizeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_batch_split(cfg)


def test_per_process_presets_are_unchanged():
    cfg = compose("train", ["experiment=digits/ddpm"])
    assert apply_batch_split(cfg) is None and cfg.data.batch_size == 64 and cfg.trainer.accumulate_grad_batches == 1


PAPER_BATCHES = {"imagenet64/adm": 2048, "imagenet128/adm": 256, "imagenet256/adm_cond": 256,
                 "imagenet256/adm_uncond": 256, "imagenet64/classifier": 256, "imagenet128/classifier": 256,
                 "imagenet256/classifier": 256, "cifar10/ddpm": 128, "cifar10/iddpm": 128,
                 "cifar10/diffusion_gan_dcgan": 64, "cifar10/diffusion_gan_sngan": 64, "cifar10/gan_dcgan": 64,
                 "cifar10/gan_sngan": 64}


@pytest.mark.parametrize("name", sorted(PAPER_BATCHES))
def test_presets_state_the_global_batch(name):
    """8 GPUs or 1: the step always sees the paper's batch."""
    for devices in (8, 1):
        cfg = compose("train", [f"experiment={name}", f"trainer.devices={devices}", "trainer.num_nodes=1"])
        assert cfg.data.batch_size is None and cfg.data.global_batch_size == PAPER_BATCHES[name]
        split = apply_batch_split(cfg)
        assert split.global_batch_size == PAPER_BATCHES[name] and split.world_size == devices
