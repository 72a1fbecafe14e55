"""The ``shapes-dcgan`` recipe written in PyTorch (CPU), scored by npgan's shapes classifier along the way.

    python benchmarks/shapes_torch_twin.py --out FILE [--seed 0] [--steps N] [--lr-final LR] [--gp-every K]
        [--d-width W] [--reuse-fake | --no-reuse-fake] [--threads 1] [--eval-every 500]

A reference for the question "is shapes-dcgan's class KL npgan's limit or the recipe's?": the preset's networks
(the 32×32 DCGAN, G at the preset's width, D at its own, z 64, no biases, DCGAN init: weights N(0, 0.02),
BatchNorm γ N(1, 0.02)) and its training, written with ``torch.nn`` and ``torch.autograd`` alone: Adam (β 0.5,
0.999), lr 5e-4 decayed linearly over the run to the preset's final lr (npgan's ``TrainConfig.schedule``), the
non-saturating loss, D first, lazy R1 (γ = 1 on every k-th D step with its weight times k, as ``gp_every``: a
separate D pass over the real batch with ``create_graph=True``). The steps, the final lr, k and D's width
default to the preset's, and so does ``reuse_fake`` (the G step on the D step's fake, as PyTorch's DCGAN
example); the options set them (docs/results.md's run of an earlier preset: ``--steps 4500 --lr-final 1e-5
--gp-every 4 --d-width 24 --no-reuse-fake``). The real batches are npgan's own (``presets.real_source``: the
same images in the same order as ``npgan train --preset shapes-dcgan --seed S``); the noise is torch's. Every
``--eval-every`` steps G (BatchNorm in batch-statistics mode, as npgan samples) draws 2,000 images from a fixed
noise and npgan's ``metrics.image_metrics`` scores them against 2,000 held-out shapes, as
``npgan.run.experiment.evaluate`` does; one JSON line goes to FILE.jsonl and stdout, with the CPU seconds of the
training steps (scoring excluded).
Its numbers are docs/results.md's PyTorch line for shapes-dcgan; nothing here is asserted by a test. Needs torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402 - after the path insert

from npgan import backend, data  # noqa: E402
from npgan.eval import metrics  # noqa: E402
from npgan.eval.classifiers import shapes_classifier  # noqa: E402
from npgan.run import presets  # noqa: E402
from npgan.tensor import Tensor  # noqa: E402


def networks(tnn, w: int, z: int, wd: int = 0):
    """G (width w) and D (width wd, 0 = w) of the preset's 32×32 DCGAN in torch.nn, DCGAN-initialised."""
    def up(i, o):
        return [tnn.ConvTranspose2d(i, o, 4, 2, 1, bias=False), tnn.BatchNorm2d(o), tnn.ReLU()]

    def down(i, o, bn=True):
        return [tnn.Conv2d(i, o, 4, 2, 1, bias=False)] + ([tnn.BatchNorm2d(o)] if bn else []) + [tnn.LeakyReLU(0.2)]

    G = tnn.Sequential(tnn.ConvTranspose2d(z, 4 * w, 4, 1, 0, bias=False), tnn.BatchNorm2d(4 * w), tnn.ReLU(),
                       *up(4 * w, 2 * w), *up(2 * w, w), tnn.ConvTranspose2d(w, 3, 4, 2, 1, bias=False), tnn.Tanh())
    v = wd or w
    D = tnn.Sequential(*down(3, v, bn=False), *down(v, 2 * v), *down(2 * v, 4 * v),
                       tnn.Conv2d(4 * v, 1, 4, 1, 0, bias=False), tnn.Flatten())
    for m in list(G.modules()) + list(D.modules()):
        if isinstance(m, (tnn.Conv2d, tnn.ConvTranspose2d)):
            tnn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, tnn.BatchNorm2d):
            tnn.init.normal_(m.weight, 1.0, 0.02)
            tnn.init.zeros_(m.bias)
    return G, D


def make_step(torch, t, G, D, opt_g, opt_d, batches):
    """``step(s)``: training step s of the recipe (``t``: the preset's TrainConfig) on torch's G and D, with npgan's
    real batch ``batches(s)`` and torch's noise. Also timed beside npgan's step by ``shapes_steps.py --torch``."""
    F = torch.nn.functional

    def noise():
        return torch.randn(t.batch_size, t.z_dim, 1, 1)

    def step(s: int) -> None:
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = t.schedule(t.lr, t.lr_final, s)
        real = torch.from_numpy(np.ascontiguousarray(backend.to_numpy(batches(s).data), dtype=np.float32))
        if t.reuse_fake:  # the G step below reuses this fake (PyTorch's DCGAN example)
            made = G(noise())
            fake = made.detach()
        else:
            with torch.no_grad():
                fake = G(noise())
        loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        if s % t.gp_every == 0:  # lazy R1: (γ/2)·k·E‖∇ₓD(x)‖² on every k-th D step
            x = real.clone().requires_grad_(True)
            g, = torch.autograd.grad(D(x).sum(), x, create_graph=True)
            loss_d = loss_d + 0.5 * t.gp_weight * t.gp_every * g.pow(2).flatten(1).sum(1).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        for q in D.parameters():
            q.requires_grad_(False)
        loss_g = F.softplus(-D(made if t.reuse_fake else G(noise()))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        for q in D.parameters():
            q.requires_grad_(True)

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results go to OUT.jsonl (appended)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="default: the preset's")
    p.add_argument("--lr-final", type=float, default=None, help="the last step's lr (default: the preset's)")
    p.add_argument("--gp-every", type=int, default=None, help="R1 on every k-th D step (default: the preset's)")
    p.add_argument("--d-width", type=int, default=None, help="D's width (default: the preset's)")
    p.add_argument("--reuse-fake", action=argparse.BooleanOptionalAction, default=None,
                   help="G's step on the D step's fake (default: the preset's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=500)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = presets.make_config("shapes-dcgan")
    cfg.seed = a.seed
    t = cfg.train
    for name, value in (("steps", a.steps), ("lr_final", a.lr_final), ("gp_every", a.gp_every),
                        ("reuse_fake", a.reuse_fake)):
        if value is not None:
            setattr(t, name, value)
    cfg.d_hidden = cfg.d_hidden if a.d_width is None else a.d_width
    G, D = networks(torch.nn, cfg.hidden, t.z_dim, cfg.d_hidden)
    opt_g, opt_d = (torch.optim.Adam(net.parameters(), t.lr, betas=(cfg.beta1, cfg.beta2)) for net in (G, D))
    batches = presets.real_source(cfg)
    store = data.load_images("shapes", "test", "", cfg.image_size, cfg.channels, seed=a.seed, progress=False)
    held_out = store.batch(store.epoch_order(0)[:cfg.eval_samples])
    clf = shapes_classifier()
    z_fixed = torch.randn(cfg.eval_samples, t.z_dim, 1, 1)

    step = make_step(torch, t, G, D, opt_g, opt_d, batches)
    cpu = 0.0
    with open(a.out + ".jsonl", "a") as log:
        for s in range(t.steps):
            c0 = time.process_time()
            step(s)
            cpu += time.process_time() - c0
            if (s + 1) % a.eval_every and s + 1 != t.steps:
                continue
            with torch.no_grad():
                fake = G(z_fixed).numpy()
            m = metrics.image_metrics(Tensor(fake), held_out, clf)
            c = m["class_counts"]
            row = dict(tag="torch", step=s + 1, class_kl=round(m["class_kl"], 4), coverage=round(m["coverage"], 3),
                       precision=round(m["precision"], 3), recall=round(m["recall"], 3),
                       classes_covered=m["classes_covered"], score=round(m["classifier_score"], 2),
                       discs_squares_triangles=[sum(c[4 * i:4 * i + 4]) for i in range(3)], cpu_s=round(cpu, 1))
            print(json.dumps(row), file=log, flush=True)
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
