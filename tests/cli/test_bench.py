"""beatgans-bench on a tiny config writes JSON with timings, memory, FLOPs and the oracle ratio."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from beatgans.cli.bench import run_bench
from beatgans.cli.common import CONFIG_DIR

TINY = ["net.image_size=16", "net.model_channels=32", "net.channel_mult=[1,2]", "net.num_res_blocks=1",
        "net.attention_resolutions=[8]", "net.num_head_channels=32", "net.num_classes=5", "batch_size=2",
        "warmup=1", "repeats=2"]


def _cfg(tmp_path, extra=()):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(config_name="bench", overrides=[*TINY, f"output={tmp_path}/bench.json", *extra])


def test_bench_writes_json(tmp_path):
    pytest.importorskip("guided_diffusion")
    result = run_bench(_cfg(tmp_path))
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert on_disk["oracle_available"] is True and set(on_disk["models"]) == {"ours", "oracle"}
    for entry in on_disk["models"].values():
        for kind in ("train", "inference"):
            assert entry[kind]["wall_s_median"] > 0 and entry[kind]["cpu_s_median"] > 0
            assert entry[kind]["images_per_s"] == pytest.approx(2 / entry[kind]["wall_s_median"])
            assert entry[kind]["mfu"] is None  # no known peak for a CPU
        assert entry["memory"]["peak_bytes"] > 0
        assert entry["flops"]["train_step"] > 2 * entry["flops"]["forward"] > 0
    # same architecture; ours runs 2x-upsample + 3x3 conv as a 2x2 sub-pixel conv (16 vs 36 MACs per
    # input pixel), so it executes a bit fewer FLOPs
    ours, theirs = (on_disk["models"][k]["flops"]["forward"] for k in ("ours", "oracle"))
    assert 0.8 * theirs < ours < theirs
    assert set(on_disk["ratio_ours_over_oracle"]) == {"train_wall", "train_cpu", "inference_wall", "inference_cpu"}
    assert result["parameters"] == on_disk["parameters"]
    for kind in ("train", "inference"):
        spread = on_disk["paired_ratios"][f"{kind}_wall"]
        assert len(spread["ratios"]) == 2 and spread["min"] <= spread["median"] <= spread["max"]


def test_paired_ratio_spread():
    from beatgans.cli.bench import paired_ratio_spread

    ours = [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0), (10.0, 0.0)]
    theirs = [(2.0, 0.0), (2.0, 0.0), (2.0, 0.0), (2.0, 0.0), (2.0, 0.0)]
    s = paired_ratio_spread(ours, theirs)
    assert s["ratios"] == [0.5, 1.0, 1.5, 2.0, 5.0]
    assert (s["min"], s["q1"], s["median"], s["q3"], s["max"]) == (0.5, 1.0, 1.5, 2.0, 5.0)


def test_bench_without_oracle_bf16_channels_last(tmp_path):
    result = run_bench(_cfg(tmp_path, ["oracle=false", "precision=bf16", "channels_last=true", "peak_flops=1e12"]))
    assert set(result["models"]) == {"ours"} and "ratio_ours_over_oracle" not in result
    train = result["models"]["ours"]["train"]
    assert train["mfu"] == pytest.approx(train["flops_per_s"] / 1e12)
