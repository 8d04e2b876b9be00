"""Diffusion-GAN Figure 2: JS divergence between (0, z) and (theta, z), z ~ U[0, 1], under diffusion noise.

Both distributions are pushed through the Diffusion-GAN forward process
y = sqrt(abar_t) x + sqrt(1 - abar_t) * sigma * eps, with abar_t from the reference schedule
(linspace(1e-4, 0.02, T) with a leading 1, here T = 1000, via beatgans.gan.AdaptiveDiffusion).
The two noisy densities are evaluated in closed form on a 2-D grid (the z-coordinate is a uniform
convolved with a Gaussian) and JS(p_t || q_t) is integrated numerically on that grid.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python experiments/diffusion_gan_js/js_theta.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy.special import erf

from beatgans.gan import AdaptiveDiffusion

OUT = Path(__file__).parent / "results"


def noisy_density(grid_u, grid_v, theta, a, s):
    """Density of (a*theta + s*e1, a*z + s*e2), z ~ U[0, 1]; with s = 0 the first axis is a point mass."""
    px = np.exp(-0.5 * ((grid_u - a * theta) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    # a*z + s*e2 with z ~ U[0, 1]: (Phi((v) / s) - Phi((v - a) / s)) / a
    pz = 0.5 * (erf(grid_v / (s * math.sqrt(2))) - erf((grid_v - a) / (s * math.sqrt(2)))) / a
    return px[:, None] * pz[None, :]


def js_divergence_2d(theta, a, s, n=1201):
    """JS(p || q) in nats, p = noisy (0, z), q = noisy (theta, z), by 2-D grid quadrature (s not too small)."""
    half = a * abs(theta) + 8 * s
    u = np.linspace(-half, half, n)
    v = np.linspace(-8 * s, a + 8 * s, n)
    du, dv = u[1] - u[0], v[1] - v[0]
    p, q = noisy_density(u, v, 0.0, a, s), noisy_density(u, v, theta, a, s)
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 1e-300, p * np.log(p / m), 0.0).sum() * du * dv
        kl_qm = np.where(q > 1e-300, q * np.log(q / m), 0.0).sum() * du * dv
    return float(0.5 * (kl_pm + kl_qm))


def js_divergence(theta, a, s, n_per_std=20):
    """JS(p || q) in nats. The z-axis is shared and independent of the first axis, so the joint JS equals
    the 1-D JS of N(0, s^2) vs N(a theta, s^2) (checked against the 2-D quadrature in main); computed in
    the log domain on a grid with ``n_per_std`` points per std so tiny s stays accurate."""
    if s == 0:
        return 0.0 if theta == 0 else math.log(2)
    mu = a * theta
    lo, hi = min(0.0, mu) - 12 * s, max(0.0, mu) + 12 * s
    x = np.linspace(lo, hi, int((hi - lo) / s * n_per_std) + 1)
    logp = -0.5 * (x / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
    logq = -0.5 * ((x - mu) / s) ** 2 - math.log(s * math.sqrt(2 * math.pi))
    # log(p / m) = log 2 - log(1 + q / p)
    kl_pm = np.exp(logp) * (math.log(2) - np.logaddexp(0.0, logq - logp))
    kl_qm = np.exp(logq) * (math.log(2) - np.logaddexp(0.0, logp - logq))
    return float(0.5 * (kl_pm.sum() + kl_qm.sum()) * (x[1] - x[0]))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ad = AdaptiveDiffusion(t_min=1000, t_max=1000)
    abar = ad.alphas_cumprod.numpy()
    thetas = np.linspace(-1.0, 1.0, 81)
    steps = [0, 10, 50, 200, 500, 1000]
    results = {}
    for sigma in (1.0, 0.05):
        for t in steps:
            a, s = math.sqrt(abar[t]), math.sqrt(1 - abar[t]) * sigma
            results[f"sigma={sigma},t={t}"] = [js_divergence(th, a, s) for th in thetas]
    # the 1-D reduction against a direct 2-D quadrature of the joint densities
    check = {}
    for t in (50, 200, 500):
        a, s = math.sqrt(abar[t]), math.sqrt(1 - abar[t])
        check[f"t={t},theta=0.5"] = {"js_1d": js_divergence(0.5, a, s), "js_2d": js_divergence_2d(0.5, a, s)}
    (OUT / "js_theta.json").write_text(json.dumps({"thetas": thetas.tolist(), "js": results, "check": check}, indent=1))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    for i, sigma in enumerate((1.0, 0.05)):
        ax = fig.add_subplot(1, 2, i + 1)
        for t in steps:
            ax.plot(thetas, results[f"sigma={sigma},t={t}"], label=f"t={t}")
        ax.axhline(math.log(2), color="gray", lw=0.5, ls="--")
        ax.set_xlabel("theta")
        ax.set_ylabel("JS(p_t || q_t) [nats]")
        ax.set_title(f"(0,z) vs (theta,z), sigma={sigma}, T=1000 schedule", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "js_theta.png", dpi=100)
    print(json.dumps(check))
    for sigma in (1.0, 0.05):
        row = {t: round(results[f"sigma={sigma},t={t}"][60], 4) for t in steps}  # theta = 0.5
        print(f"sigma={sigma} JS at theta=0.5:", row)


if __name__ == "__main__":
    main()
