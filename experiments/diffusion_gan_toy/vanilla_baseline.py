"""Sanity baseline: a vanilla GAN (plain MLP D, no t, no diffusion) on the 25 Gaussians with the toy G.

    OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/diffusion_gan_toy/vanilla_baseline.py --d plain|toy --lr 1e-4 --iters 5000 --seed 0
"""
import argparse, json, time
import torch, torch.nn as nn, torch.nn.functional as F
from beatgans.data.toy2d import gaussian_grid_modes, sample_gaussian_grid
from beatgans.gan import mode_coverage
from beatgans.nets.toy import ToyDiscriminator, ToyGenerator

ap = argparse.ArgumentParser()
ap.add_argument("--d", default="plain")  # plain | toy
ap.add_argument("--g", default="toy")    # toy | plain
ap.add_argument("--z", type=int, default=2)
ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--b1", type=float, default=0.5)
ap.add_argument("--b2", type=float, default=0.9)
ap.add_argument("--iters", type=int, default=5000)
ap.add_argument("--batch", type=int, default=512)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--slope", type=float, default=0.2)
ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--act", default="lrelu")
ap.add_argument("--loss", default="ns")
a = ap.parse_args()
torch.manual_seed(a.seed)
dg = torch.Generator().manual_seed(10000 + a.seed)
act = lambda: nn.LeakyReLU(a.slope) if a.act == "lrelu" else nn.ReLU()
def mlp(i, o):
    return nn.Sequential(nn.Linear(i, a.hidden), act(), nn.Linear(a.hidden, a.hidden), act(), nn.Linear(a.hidden, o))
G = ToyGenerator(z_dim=a.z, hidden=a.hidden, slope=a.slope) if a.g == "toy" else mlp(a.z, 2)
if a.d == "plain":
    Dn = mlp(2, 1); D = lambda x: Dn(x).squeeze(1)
else:
    Dn = ToyDiscriminator(hidden=a.hidden, slope=a.slope); D = lambda x: Dn(x, torch.zeros(x.shape[0], dtype=torch.long))
og = torch.optim.Adam(G.parameters(), lr=a.lr, betas=(a.b1, a.b2))
od = torch.optim.Adam(Dn.parameters(), lr=a.lr, betas=(a.b1, a.b2))
t0 = time.time(); res = {}
for it in range(1, a.iters + 1):
    lg = F.softplus(-D(G(torch.randn(a.batch, a.z)))).mean()
    og.zero_grad(); lg.backward(); og.step()
    with torch.no_grad(): fake = G(torch.randn(a.batch, a.z))
    real, _ = sample_gaussian_grid(a.batch, std=0.05, generator=dg)
    ld = F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()
    od.zero_grad(); ld.backward(); od.step()
    if it % (a.iters // 4) == 0:
        with torch.no_grad():
            pts = G(torch.randn(2500, a.z, generator=torch.Generator().manual_seed(12345)))
        m = mode_coverage(pts, gaussian_grid_modes(), 0.05)
        res[it] = (m["modes_covered"], round(m["hq_share"], 3))
print(json.dumps({"args": vars(a), "res": res, "s": round(time.time() - t0)}))
torch.save(pts, f"/tmp/i6/pts_{a.d}_{a.g}_z{a.z}_lr{a.lr}_s{a.seed}_{a.act}.pt")
