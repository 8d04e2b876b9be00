"""DiffusionGANModule: gradients through the noise, plain-GAN switch, short toy run, exact resume."""

from __future__ import annotations

import functools
import json

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid
from beatgans.gan import AdaptiveDiffusion
from beatgans.lit.diffusion_gan import DiffusionGANModule
from beatgans.nets.toy import ToyDiscriminator, ToyGenerator


def _module(noise_enabled=True, **kwargs):
    torch.manual_seed(0)
    opt = functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.5, 0.999))
    return DiffusionGANModule(
        ToyGenerator(z_dim=2, hidden=32), ToyDiscriminator(hidden=32),
        AdaptiveDiffusion(sigma=0.5, ada_kimg=0.5, noise_enabled=noise_enabled), opt, opt,
        r1_gamma=0.1, r1_interval=4, log_every=5, **kwargs)


def _loader(n=512, batch=32):
    pts, _ = sample_gaussian_grid(n, generator=torch.Generator().manual_seed(0))
    return DataLoader(TensorDataset(pts, torch.full((n,), -1)), batch_size=batch, shuffle=False)


def _trainer(tmp_path, steps):
    # manual optimization: global_step counts both optimizers, 2 per iteration
    return L.Trainer(max_steps=2 * steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))


def test_generator_gradient_flows_through_noise():
    m = _module()
    m.diffusion.p, m.diffusion.T = 1.0, 1000
    m.diffusion._build(1000)
    z = torch.randn(64, 2)
    logits = m.run_discriminator(m.generator(z), None)
    torch.nn.functional.softplus(-logits).mean().backward()
    grads = [p.grad for p in m.generator.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_plain_gan_switch_removes_noise():
    x = torch.randn(8, 2)
    for enabled in (False, True):
        m = _module(noise_enabled=enabled)
        seen = []
        m.discriminator.register_forward_pre_hook(lambda mod, args, seen=seen: seen.append(args))
        m.run_discriminator(x, None)
        d_in, t = seen[0][0], seen[0][1]
        if enabled:
            assert not torch.equal(d_in, x) and int((t > 0).sum()) > 0
        else:
            assert d_in is x and int(t.abs().sum()) == 0


def test_short_toy_run_trains_and_reports(tmp_path):
    m = _module(eval_modes=gaussian_grid_modes(), eval_samples=200, plot_every=0)
    g0 = [p.detach().clone() for p in m.generator.parameters()]
    _trainer(tmp_path, 12).fit(m, _loader())
    assert m.iteration == 12 and m.diffusion.num_steps == 12
    assert m.diffusion.T > 10  # D beats the fresh G quickly: r_d > 0.6 pushes T up
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.generator.parameters()))
    metrics = m.final_metrics()
    assert metrics["gan/iterations"] == 12 and 0 <= metrics["toy/hq_share"] <= 1
    assert metrics["gan/T"] == m.diffusion.T and "toy/ema_modes_covered" in metrics
    assert (tmp_path / "gan_history.json").exists()


def test_resume_restores_p_and_T_exactly(tmp_path):
    m = _module()
    trainer = L.Trainer(max_steps=16, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path), enable_checkpointing=False)
    trainer.fit(m, _loader())
    # put the controller mid-range (a fresh module starts at p = 0, T = t_min)
    m.diffusion.p, m.diffusion.T = 0.3711, m.diffusion._T_from_p(0.3711)
    m.diffusion._build(m.diffusion.T)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    m2 = _module()
    assert (m2.diffusion.p, m2.diffusion.T) != (m.diffusion.p, m.diffusion.T)
    state = torch.load(ckpt, weights_only=False)
    m2.load_state_dict(state["state_dict"])
    m2.on_load_checkpoint(state)
    assert m2.diffusion.p == m.diffusion.p and m2.diffusion.T == m.diffusion.T
    assert torch.equal(m2.diffusion.t_list, m.diffusion.t_list) and m2.iteration == m.iteration == 8
    # and through Lightning's ckpt_path resume the controller continues from the saved state
    m3 = _module()
    L.Trainer(max_steps=18, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=str(tmp_path), enable_checkpointing=False).fit(m3, _loader(), ckpt_path=str(ckpt),
                                                                              weights_only=False)
    assert m3.iteration == 9 and m3.diffusion.num_steps == 9
    # iteration 9 is not an update step (every 4): p, T and the slot list are exactly the saved ones
    assert (m3.diffusion.p, m3.diffusion.T) == (0.3711, m.diffusion.T)
    assert torch.equal(m3.diffusion.t_list, m.diffusion.t_list)


def test_sample_images_per_sample_seeds():
    m = _module()
    a = m.sample_images(6, seed=10)
    b = m.sample_images(3, seed=13)
    torch.testing.assert_close(a[3:], b)


def test_augment_hook_runs_before_the_diffusion():
    m = _module(augment=lambda x: x + 100.0)
    seen = []
    m.discriminator.register_forward_pre_hook(lambda mod, args, seen=seen: seen.append(args))
    m.diffusion.noise_enabled = False
    x = torch.zeros(4, 2)
    m.run_discriminator(x, None)
    assert torch.equal(seen[0][0], x + 100.0)
    m.diffusion.noise_enabled = True
    m.diffusion.p, m.diffusion.T = 1.0, 1000
    m.diffusion._build(1000)
    m.run_discriminator(x, None)
    d_in, t = seen[1][0], seen[1][1]
    abar = m.diffusion.alphas_cumprod[t].float()
    # noised AFTER the augmentation: the mean is sqrt(abar_t) * 100, noise std is tiny (sigma 0.5)
    torch.testing.assert_close(d_in.mean(1), 100.0 * abar.sqrt(), atol=2.0, rtol=0)


def test_metrics_logged_only_on_logging_steps(tmp_path):
    """self.log is skipped on steps Lightning would not write; the logged rows and history are intact."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    m = _module(plot_every=0)
    calls = []
    orig = m.log_dict
    m.log_dict = lambda *a, **k: (calls.append(m.iteration), orig(*a, **k))[1]
    L.Trainer(max_steps=2 * 12, accelerator="cpu", logger=CSVLogger(tmp_path, name="csv"), log_every_n_steps=4,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              default_root_dir=str(tmp_path)).fit(m, _loader())
    # log_dict runs twice per logging iteration; Lightning writes every 4th batch (batches 4, 8, 12)
    assert sorted(set(calls)) == [4, 8, 12] and len(calls) == 6
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged = [r for r in rows if r.get("train/loss_d")]
    assert len(logged) == 3 and all(float(r["gan/T"]) >= 10 for r in logged)
    assert all(0 < float(r["train/d_real_prob"]) < 1 for r in logged)
    assert [h["iteration"] for h in m.history] == [1, 5, 10]  # log_every=5 history is independent of the logger


def test_state_dict_carries_controller_state_and_loads_older_checkpoints():
    m = _module()
    m.iteration, m.diffusion.p = 40, 0.25
    m.diffusion._build(m.diffusion.T)
    m.history.append({"iteration": 40})
    sd = m.state_dict()
    fresh = _module()
    fresh.load_state_dict(sd)
    assert fresh.iteration == 40 and fresh.diffusion.p == 0.25 and fresh.history == [{"iteration": 40}]
    older = {k: v for k, v in sd.items() if k != "_extra_state"}  # a checkpoint from before the extra state
    other = _module()
    other.load_state_dict(older)  # strict load still works; the controller keeps its own state
    assert other.iteration == 0 and torch.equal(other.generator.out.weight, m.generator.out.weight)
    # such checkpoints kept the controller under top-level keys, which on_load_checkpoint restores
    legacy = _module()
    legacy.on_load_checkpoint({"adaptive_diffusion": m.diffusion.state_dict(), "gan_iteration": 40,
                               "gan_history": [{"iteration": 40}]})
    legacy.load_state_dict(older)
    assert legacy.iteration == 40 and legacy.diffusion.p == 0.25 and legacy.history == [{"iteration": 40}]


def test_discriminator_field_and_landscape_plot(tmp_path):
    """discriminator_field is D at t = 0 on clean points; scatter_png draws it under the samples."""
    from matplotlib.image import imread

    from beatgans.gan.plots import scatter_png

    module = _module()
    pts = torch.randn(20_000, 2)
    D = module.discriminator
    assert D.training
    field = module.discriminator_field(pts)
    assert D.training and field.shape == (20_000,) and not field.requires_grad
    torch.testing.assert_close(field, D(pts, torch.zeros(20_000, dtype=torch.long), None).detach())
    samples = {"G": module.sample_images(300, use_ema=False)}
    plain = imread(scatter_png(tmp_path / "plain.png", samples, module.eval_modes))
    with_field = imread(scatter_png(tmp_path / "field.png", samples, module.eval_modes,
                                    field=lambda p: torch.full((len(p),), 3.0)))
    # a uniform sigmoid(3) = 0.95 grey background under the axes: far fewer pure-white pixels
    white = lambda im: (im[..., :3] > 0.99).all(-1).mean()  # noqa: E731
    assert white(with_field) < 0.7 * white(plain)


def test_nonsaturating_loss_golden_values():
    """One loss for G, D and the force analysis: -log sigmoid(D) on reals, -log(1 - sigmoid(D)) on fakes."""
    import math

    from beatgans.gan import discriminator_loss, generator_loss, nonsaturating_loss

    logits = torch.tensor([0.0, math.log(3.0)])
    torch.testing.assert_close(nonsaturating_loss(logits, real=True), torch.tensor([math.log(2), math.log(4 / 3)]))
    torch.testing.assert_close(nonsaturating_loss(logits, real=False), torch.tensor([math.log(2), math.log(4)]))
    assert generator_loss(logits).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    assert discriminator_loss(logits, logits).item() == pytest.approx(
        (math.log(2) + math.log(4)) / 2 + (math.log(2) + math.log(4 / 3)) / 2)


def test_analysis_is_a_callback_the_module_attaches(tmp_path):
    """Scatter plots and the history file come from GANAnalysis, which the trainer runs as a callback."""
    from beatgans.lit.gan_analysis import GANAnalysis

    m = _module(eval_modes=gaussian_grid_modes(), eval_samples=200, plot_every=3)
    trainer = _trainer(tmp_path, 6)
    trainer.fit(m, _loader())
    assert any(isinstance(cb, GANAnalysis) for cb in trainer.callbacks)
    names = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert names == ["scatter_final.png", "scatter_it0000003.png", "scatter_it0000006.png"]
    assert [r["iteration"] for r in json.loads((tmp_path / "gan_history.json").read_text())] == [1, 5]
