"""torch.compile through `prepare_net`, the one helper training (`task.compile`) and sampling (`compile`) share."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from beatgans.diffusion import create_diffusion
from beatgans.lit.diffusion_module import DiffusionModule, sample_with
from beatgans.nets import UNet
from beatgans.nets.runtime import prepare_net


def _net() -> UNet:
    torch.manual_seed(0)
    net = UNet(8, 1, 32, 1, [4], channel_mult=[1, 1], num_classes=10).eval()
    torch.nn.init.normal_(net.out_conv.weight, std=0.05)
    return net


def test_compiled_module_keeps_its_state_dict_and_eager_ema():
    net = _net()
    keys = list(net.state_dict())
    module = DiffusionModule(net, create_diffusion("linear", 50), partial(torch.optim.AdamW, lr=1e-4),
                             num_classes=10, compile=True)
    assert module.net._compiled_call_impl is not None  # compiled in place (nn.Module.compile) ...
    assert list(module.net.state_dict()) == keys       # ... so checkpoints keep the eager key names
    assert module.ema.shadow(0)._compiled_call_impl is None
    assert prepare_net(_net())._compiled_call_impl is None  # off by default


@pytest.mark.slow  # inductor compiles C++ kernels: ~1-3 min on a loaded 2-core CPU
def test_compiled_net_matches_eager_in_forward_and_ddim_sampling():
    eager, compiled = _net(), prepare_net(_net(), compile=True)
    diffusion = create_diffusion("linear", 50)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1, 10, 25, 49]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        # inductor fuses and reorders float32 reductions: equal to float rounding, not bit for bit
        torch.testing.assert_close(compiled(x, t, y), eager(x, t, y), rtol=1e-4, atol=1e-5)
    kw = {"seed": 0, "sampler": "ddim", "steps": 5, "num_classes": 10}
    a = sample_with(eager, diffusion, 4, (1, 8, 8), **kw)
    b = sample_with(compiled, diffusion, 4, (1, 8, 8), **kw)
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
