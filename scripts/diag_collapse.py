"""Diagnose the first steps of image training: KL per dim, distortion, per-layer gradient norms,
and how much the decoder output depends on z / mu on x. One thread; short runs.

    python scripts/diag_collapse.py --steps 300 --init default --lr 1e-3 [--warmup 0] [--decomposed]
"""

import argparse
import json
import time

import torch

from vaeiso_ext import metrics
from vaeiso_ext.data.images import skimage_crops, split
from vaeiso_ext.models import ConvVAE
from vaeiso_ext.train import Objective, kl_per_dim

torch.set_num_threads(1)

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=300)
p.add_argument("--init", default="default")
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--warmup", type=int, default=0)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--every", type=int, default=25)
p.add_argument("--decomposed", action="store_true")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--json", default=None)
a = p.parse_args()

x = skimage_crops(64)
xtr, xte = split(x, 0.1, 0)
torch.manual_seed(a.seed)
kw = {} if a.init == "default" else {"init": a.init}
model = ConvVAE(latent=32, **kw)
obj = Objective(model, metrics.SSIM(), 1000.0, a.decomposed)
opt = torch.optim.Adam(model.parameters(), lr=a.lr)
groups = {"enc_conv": [], "enc_fc": [], "mu": [], "logvar": [], "dec_fc": [], "dec_conv": [], "gdn": []}
for name, prm in model.named_parameters():
    if name.endswith(("beta", "gamma")):
        groups["gdn"].append(prm)
    elif name.startswith("encoder."):
        groups["enc_conv" if prm.dim() == 4 or int(name.split(".")[1]) < 8 else "enc_fc"].append(prm)
    elif name.startswith("mu."):
        groups["mu"].append(prm)
    elif name.startswith("logvar."):
        groups["logvar"].append(prm)
    else:
        groups["dec_conv" if prm.dim() == 4 or int(name.split(".")[1]) >= 5 else "dec_fc"].append(prm)
g = torch.Generator().manual_seed(1)
xe = xte[:64]


@torch.no_grad()
def probe():
    model.eval()
    mu, lv = model.encode(xe)
    out = model.decode(torch.randn(64, 32, generator=torch.Generator().manual_seed(2)))
    xh = model.decode(mu)
    h, zdep = torch.randn(64, 32, generator=torch.Generator().manual_seed(2)), []
    for layer in model.decoder:  # spread over z of each weighted layer's output (after its activation)
        h = layer(h)
        if not isinstance(layer, (torch.nn.Linear, torch.nn.ConvTranspose2d, torch.nn.Unflatten)):
            zdep.append(round(h.std(0).mean().item(), 4))
    kl = kl_per_dim(mu, lv).mean(0)
    model.train()
    return {
        "kl": kl.sum().item(),
        "active": int((kl >= 0.1).sum()),
        "kl_max": kl.max().item(),
        "dist_mu": metrics.SSIM().distance(xe, xh).mean().item(),
        "mu_std_x": mu.std(0).mean().item(),
        "sigma_mean": lv.mul(0.5).exp().mean().item(),
        "dec_std_z": out.std(0).mean().item(),
        "dec_mean": out.mean().item(),
        "dec_layers_std_z": zdep,
    }


rows = []
gnorm: dict = {}  # per-group gradient norms of the last step (none before the first)
t0 = time.time()
for step in range(a.steps + 1):
    if step % a.every == 0:
        r = {"step": step, **probe(), "sec": round(time.time() - t0, 1)}
        if step:
            r.update({f"g_{k}": v for k, v in gnorm.items()})
        rows.append(r)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    if step == a.steps:
        break
    idx = torch.randint(0, xtr.shape[0], (a.batch,), generator=g)
    noise = torch.randn(a.batch, 32, generator=g)
    rec, kl = obj(xtr[idx], noise)
    kl = kl.sum(1)  # Objective returns the KL per dimension
    loss = (rec + kl).mean()
    opt.zero_grad()
    loss.backward()
    gnorm = {k: torch.sqrt(sum((q.grad**2).sum() for q in v)).item() for k, v in groups.items() if v}
    if a.warmup:
        for pg in opt.param_groups:
            pg["lr"] = a.lr * min(1.0, (step + 1) / a.warmup)
    opt.step()
if a.json:
    json.dump({"args": vars(a), "rows": rows}, open(a.json, "w"), indent=1)
