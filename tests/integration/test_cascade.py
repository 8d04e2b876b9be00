"""Cascade sampling end to end: a tiny 8 px base and a tiny 8 -> 16 upsampler trained through `train`, then
`beatgans-sample run=<base> upsampler.run=<upsampler>` writing both stages' npz and per-stage metrics."""

import json

import numpy as np
import pytest
import torch

from beatgans.cli.cascade import load_upsampler, sample_cascade
from beatgans.cli.loading import RunError
from beatgans.cli.sample import sample
from beatgans.cli.train import ConfigError, train
from beatgans.diffusion.cascade import (
    UPSAMPLER_SEED_OFFSET,
    low_res_from_uint8,
    quantize_low_res,
    upsampler_seeds,
)
from beatgans.utils.images import to_uint8
from tests.conftest import TINY_TRAIN, compose

# a large learning rate so two steps move the zero-initialised output layer and low_res visibly matters
UPSAMPLER = ["net=digits_upsampler", "data.image_size=16", "+data.low_res_size=8", "task.optimizer.lr=0.01",
             "net.attention_resolutions=[8]"]  # TINY_TRAIN's [4] names no level of a 16 px two-level net


def _train(out, *extra):
    cfg = compose("train", TINY_TRAIN + ["trainer.max_steps=2", "callbacks.sample_grid.on_train_end=false", *extra],
                  output_dir=out)
    return train(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base, up = tmp_path_factory.mktemp("base8"), tmp_path_factory.mktemp("up16")
    _train(base)
    # the upsampler run also draws its end-of-training grid from validation digits' low-res versions
    metrics = _train(up, *UPSAMPLER, "callbacks.sample_grid.on_train_end=true")
    assert metrics["global_step"] == 2 and np.isfinite(metrics["train/loss"])
    assert (up / "samples" / "final_grid.png").is_file()
    return base, up


def _cfg(runs, out, *extra):
    base, up = runs
    return compose("sample", [f"run={base}", f"upsampler.run={up}", "sampler.steps=3", "upsampler.sampler.steps=2",
                              "num_samples=5", "batch_size=5", *extra], output_dir=out)


def test_cascade_writes_both_stages_and_per_stage_metrics(runs, tmp_path):
    metrics = sample(_cfg(runs, tmp_path, "classes=[2,7]"))
    base = np.load(tmp_path / "base_samples_5x8x8x1.npz")
    final = np.load(tmp_path / "samples_5x16x16x1.npz")
    assert base["arr_0"].dtype == final["arr_0"].dtype == np.uint8
    assert base["arr_1"].tolist() == final["arr_1"].tolist() == [2, 7, 2, 7, 2]
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics and saved["cascade"] is True
    assert saved["base/steps"] == 3 and saved["upsampler/steps"] == 2 and saved["upsampler/sampler"] == "ddim"
    assert {"base/target_accuracy", "upsampler/target_accuracy", "target_accuracy"} <= set(saved)
    assert saved["samples_npz"] == saved["upsampler/samples_npz"] and saved["base/samples_npz"].endswith("8x8x1.npz")
    assert (tmp_path / "base_grid.png").is_file() and (tmp_path / "grid.png").is_file()


def test_cascade_samples_do_not_depend_on_batch_size(runs, tmp_path):
    sample_cascade(_cfg(runs, tmp_path / "a", "batch_size=5"))
    sample_cascade(_cfg(runs, tmp_path / "b", "batch_size=2", "upsampler.batch_size=1"))
    for name in ("base_samples_5x8x8x1.npz", "samples_5x16x16x1.npz"):
        a, b = np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
        assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    # the first 3 of a 5-sample run are the samples of a 3-sample run: sample i depends only on (seed, i)
    sample_cascade(_cfg(runs, tmp_path / "c", "num_samples=3"))
    a, c = np.load(tmp_path / "a" / "samples_5x16x16x1.npz"), np.load(tmp_path / "c" / "samples_3x16x16x1.npz")
    assert np.array_equal(a["arr_0"][:3], c["arr_0"])


def test_cascade_ranks_merge_to_the_one_process_result(runs, tmp_path):
    """Ranks take indices r, r + world, ... through both stages; interleaved back they equal one process."""
    from beatgans.cli.cascade import generate_cascade
    from beatgans.cli.sample import merge_shards

    cfg = _cfg(runs, tmp_path, "batch_size=2")
    up = load_upsampler(cfg)
    base, final, labels, _, _ = generate_cascade(cfg, up)
    ranks = [generate_cascade(cfg, up, rank=r, world=2) for r in range(2)]
    for k, (stage, want) in enumerate((("base", base), ("final", final))):
        (tmp_path / stage).mkdir()
        for r, parts in enumerate(ranks):
            np.savez(tmp_path / stage / f".shard_{r}.npz", images=parts[k], labels=parts[2])
        merged, merged_labels = merge_shards(tmp_path / stage, 2, 5)
        assert np.array_equal(merged, want) and np.array_equal(merged_labels, labels)


def test_upsampler_sees_the_quantised_base_and_its_own_sampler(runs, tmp_path):
    """Upsampling the base's npz by hand (uint8 -> [-1, 1], seeds seed + i + offset) reproduces the cascade."""
    from beatgans.cli.cascade import upsample

    cfg = _cfg(runs, tmp_path, "upsampler.sampler.name=ddpm", "upsampler.sampler.steps=3")
    sample_cascade(cfg)
    base = np.load(tmp_path / "base_samples_5x8x8x1.npz")
    final = np.load(tmp_path / "samples_5x16x16x1.npz")["arr_0"]
    up = load_upsampler(cfg)
    again, info = upsample(up, low_res_from_uint8(base["arr_0"]), base["arr_1"], np.arange(5), cfg, torch.device("cpu"))
    assert np.array_equal(again, final) and info["sampler"] == "ddpm"
    # a different low-res input changes the upsampled samples
    other, _ = upsample(up, low_res_from_uint8(255 - base["arr_0"]), base["arr_1"], np.arange(5), cfg,
                        torch.device("cpu"))
    assert not np.array_equal(other, final)


def test_quantisation_and_seed_streams():
    x = torch.linspace(-1.2, 1.2, 2 * 1 * 3 * 4).reshape(2, 1, 3, 4)
    q = quantize_low_res(x)
    assert torch.equal(q, low_res_from_uint8(to_uint8(x)))
    assert torch.equal(q, ((x + 1) * 127.5).clamp(0, 255).floor() / 127.5 - 1)  # truncation, as ADM
    assert upsampler_seeds(3, [0, 4]) == [3 + UPSAMPLER_SEED_OFFSET, 7 + UPSAMPLER_SEED_OFFSET]
    with pytest.raises(ValueError, match="uint8"):
        low_res_from_uint8(np.zeros((2, 3, 3, 1), np.float32))


def test_bad_pairings_are_refused_before_sampling(runs, tmp_path):
    base, up = runs
    with pytest.raises(RunError, match="not an upsampling model"):
        load_upsampler(_cfg(runs, tmp_path, f"upsampler.run={base}"))
    with pytest.raises(RunError, match="samples 16px images but the upsampler takes 8px"):
        load_upsampler(_cfg(runs, tmp_path, f"run={up}"))
    assert not list(tmp_path.glob("*.npz"))


def test_train_refuses_upsampler_without_pairs_and_pairs_without_upsampler(tmp_path):
    with pytest.raises(ConfigError, match="data.low_res_size"):
        _train(tmp_path / "a", "net=digits_upsampler", "data.image_size=16", "net.attention_resolutions=[8]")
    with pytest.raises(ConfigError, match="data.low_res_size"):
        _train(tmp_path / "b", "+data.low_res_size=4")


def test_cascade_with_an_openai_layout_upsampler_checkpoint(runs, tmp_path):
    """upsampler.ckpt=<guided-diffusion SuperResModel .pt> with +net@upsampler.net / +diffusion@upsampler.diffusion."""
    gd_unet = pytest.importorskip("guided_diffusion.unet")
    torch.manual_seed(0)
    oracle = gd_unet.SuperResModel(image_size=16, in_channels=1, model_channels=32, out_channels=1, num_res_blocks=1,
                                   attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_classes=10,
                                   num_head_channels=32, use_scale_shift_norm=True, resblock_updown=True)
    torch.save(oracle.state_dict(), tmp_path / "up.pt")
    base, _ = runs
    cfg = compose("sample", [f"run={base}", f"upsampler.ckpt={tmp_path / 'up.pt'}",
                             "+net@upsampler.net=digits_upsampler", "upsampler.net.num_classes=10",
                             "+diffusion@upsampler.diffusion=linear", "upsampler.diffusion.num_timesteps=50",
                             "sampler.steps=2", "upsampler.sampler.steps=2", "num_samples=2", "batch_size=2"],
                  output_dir=tmp_path / "out")
    metrics = sample(cfg)
    assert metrics["upsampler/ckpt"].endswith("up.pt")
    assert np.load(metrics["samples_npz"])["arr_0"].shape == (2, 16, 16, 1)


def test_guidance_applies_at_the_base_only(runs, tmp_path):
    """With guidance=cfg the base stage is exactly a guided `beatgans-sample` run; the upsampler runs unguided."""
    from beatgans.cli.cascade import upsample
    from beatgans.cli.sample import generate

    base_run = tmp_path / "cfg_base"
    _train(base_run, "net.null_class=true", "task.p_uncond=0.2", "task.optimizer.lr=0.01")
    guided = [f"run={base_run}", "use_ema=false", "guidance=cfg", "guidance.scale=3", "sampler.steps=3",
              "num_samples=4", "batch_size=4", "classes=[1,4]"]
    cfg = compose("sample", [*guided, f"upsampler.run={runs[1]}", "upsampler.sampler.steps=2"],
                  output_dir=tmp_path / "out")
    metrics = sample_cascade(cfg)
    assert metrics["guidance"] == {"name": "cfg", "scale": 3} == metrics["base/guidance"]
    base = np.load(tmp_path / "out" / "base_samples_4x8x8x1.npz")
    plain, labels, _ = generate(compose("sample", guided, output_dir=tmp_path / "plain"))
    unguided, _, _ = generate(compose("sample", [*guided, "guidance.scale=0"], output_dir=tmp_path / "plain"))
    assert np.array_equal(base["arr_0"], plain) and not np.array_equal(plain, unguided)
    final = np.load(metrics["samples_npz"])["arr_0"]
    again, _ = upsample(load_upsampler(cfg), low_res_from_uint8(base["arr_0"]), labels, np.arange(4), cfg,
                        torch.device("cpu"))
    assert np.array_equal(again, final)
