"""`beatgans.diffusion.sampling`: the process each sampler uses, NFE accounting, option checks, per-sample seeds
with the ODE solvers, and `beatgans-sample sampler=dpm_solver` end to end on a tiny trained run."""

import json

import numpy as np
import pytest
import torch

from beatgans.diffusion import create_diffusion, respaced, sample_with, sampler_nfe
from beatgans.nets import UNet


def _net(**kw):
    torch.manual_seed(0)
    return UNet(image_size=8, in_channels=1, model_channels=32, num_res_blocks=1, attention_resolutions=[4],
                channel_mult=[1, 1], **kw).eval()


def test_respaced_reuses_the_ddim_stride_and_falls_back_to_sections():
    d = create_diffusion("linear", 1000)
    assert respaced(d, "ddim", 25).timestep_map.tolist()[:3] == [0, 40, 80]
    assert respaced(d, "ddim", 7).timestep_map.tolist()[:2] == [0, 143]  # stride 143 gives 7 steps
    # no integer stride gives 300 of 1000 steps: equal sections, as "300"
    assert respaced(d, "ddim", 300).timestep_map.tolist() == respaced(d, "ddpm", 300).timestep_map.tolist()
    assert respaced(d, "ddpm", "ddim50").num_timesteps == 50 and respaced(d, "ddim", 2000) is d


@pytest.mark.parametrize("sampler,steps,skip,nfe", [
    ("ddpm", 10, "time_uniform", 10), ("ddim", 25, "time_uniform", 25), ("dpm_solver", 12, "logsnr", 12),
    ("dpm_solver", 7, "time_uniform", 7), ("heun", 6, "logsnr", 11)])
def test_sampler_nfe_counts_the_network_calls(sampler, steps, skip, nfe):
    d = create_diffusion("linear", 100)
    net, calls = _net(), []
    net.register_forward_hook(lambda *_: calls.append(1))
    sample_with(net, d, 2, (1, 8, 8), sampler=sampler, steps=steps, skip=skip, order=3)
    assert sampler_nfe(d, sampler, steps, skip, order=3) == len(calls) == nfe


def test_bad_sampler_options_are_one_clear_error():
    d = create_diffusion("linear", 100)
    for kwargs, match in [({"sampler": "euler"}, "sampler must be one of ddpm, ddim, dpm_solver, heun"),
                          ({"sampler": "dpm_solver", "steps": None}, "needs an integer number of steps"),
                          ({"sampler": "dpm_solver", "steps": 1}, "between 2 and T=100"),
                          ({"sampler": "dpm_solver", "steps": 10, "order": 1}, "order must be 2 or 3"),
                          ({"sampler": "heun", "steps": 10, "skip": "karras"}, "skip must be one of")]:
        with pytest.raises(ValueError, match=match):
            sampler_nfe(d, kwargs.pop("sampler"), kwargs.pop("steps", 10), **kwargs)


@pytest.mark.parametrize("sampler,order", [("dpm_solver", 2), ("dpm_solver", 3), ("heun", 2)])
def test_ode_samples_do_not_depend_on_batch_composition(sampler, order):
    d = create_diffusion("cosine", 100)
    net = _net(num_classes=10)
    kw = {"sampler": sampler, "steps": 6, "order": order, "skip": "logsnr", "num_classes": 10}
    whole = sample_with(net, d, 5, (1, 8, 8), seed=3, **kw)
    ones = sample_with(net, d, 5, (1, 8, 8), seed=3, batch_size=1, **kw)
    tail = sample_with(net, d, 2, (1, 8, 8), seeds=[6, 7], labels=torch.tensor([3, 4]), **kw)
    torch.testing.assert_close(whole, ones, rtol=0, atol=1e-5)
    torch.testing.assert_close(whole[3:], tail, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- beatgans-sample end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"), steps=2)


def test_beatgans_sample_with_dpm_solver_records_nfe_and_options(tiny_run, tmp_path):
    from beatgans.cli.sample import generate, sample
    from tests.conftest import compose

    def cfg(out, *extra):
        return compose("sample", [f"run={tiny_run}", "sampler=dpm_solver", "num_samples=4", "batch_size=4",
                                  *extra], output_dir=out)

    metrics = sample(cfg(tmp_path, "sampler.steps=6", "sampler.order=3", "sampler.skip=time_uniform"))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["sampler"] == "dpm_solver" and saved["nfe"] == 6 and saved["order"] == 3
    assert saved["skip"] == "time_uniform" and saved["steps"] == 6 and "eta" not in saved
    assert np.load(metrics["samples_npz"])["arr_0"].shape == (4, 8, 8, 1)
    a, _, _ = generate(cfg(tmp_path, "sampler.steps=6"))
    b, _, info = generate(cfg(tmp_path, "sampler.steps=6", "batch_size=1"))
    assert np.array_equal(a, b) and info["nfe"] == 6 and info["order"] == 2
    _, _, heun = generate(cfg(tmp_path, "sampler=heun", "sampler.steps=4"))
    assert heun["sampler"] == "heun" and heun["nfe"] == 7
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        generate(cfg(tmp_path, "sampler.order=4"))
