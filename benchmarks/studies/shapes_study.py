"""Recipes for ``shapes-dcgan``, scored along the way: the shapes classifier's metrics every ``--eval-every`` steps.

    python benchmarks/studies/shapes_study.py --out FILE [--seed 0] [--width 24] [--steps 4500] [--batch 64]
        [--lr 5e-4] [--lr-final 1e-5] [--lr-d LR] [--gp r1] [--gp-weight 1] [--gp-every 4]
        [--ema 0.99 0.999] [--background noisy|plain] [--d-no-bn] [--d-mbstd] [--g-upsample]
        [--beta1 0.5] [--beta2 0.999] [--d-width W] [--g-width W]
        [--entropy-weight λ] [--entropy-final λ] [--bandwidth median] [--threads 1] [--eval-every 500]

The ``shapes-dcgan`` preset with the options changed, trained by :class:`npgan.gan.Trainer` outside a run
directory, so that things the CLI does not offer can be tried: an exponential moving average of G's weights
(``--ema β ...``: θ̄ ← β·θ̄ + (1 − β)·θ after every step, scored beside G), a D learning rate of its own
(``--lr-d``, scaled by the same schedule), shapes on a plain background for training and scoring
(``--background plain``), D without its BatchNorm layers (``--d-no-bn``), and G with each stride-2 transposed
convolution replaced by a nearest-neighbour 2× upsampling and a 3×3 convolution (``--g-upsample``; no
checkerboard from overlapping kernels, 2.25× the multiply-adds of those layers), D with ProGAN's minibatch
standard deviation as one more channel before its last convolution (``--d-mbstd``), Adam's betas, D or G
built at a width of its own (``--d-width``, ``--g-width``), and G's KDE entropy term (``--entropy-weight``,
annealed to ``--entropy-final``, leave-one-out, ``--bandwidth`` a rule or a float). Every ``--eval-every`` steps,
``npgan.run.experiment.evaluate`` (the run's own end-of-run metrics: 2,000 samples, class KL, classes covered,
classifier score, PRDC) scores G and each average; one JSON line per network goes to FILE.jsonl and stdout, with
the CPU seconds spent in training steps so far (scoring excluded) and the wall seconds. A study tool: its numbers
are docs/results.md's "What else was tried" for shapes-dcgan; nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout


import npgan.data.images  # noqa: E402 - after the path insert
from npgan import backend, nn, ops, optim, parallel  # noqa: E402
from npgan.run import experiment, presets  # noqa: E402


class Upsample2x(nn.Module):
    """Nearest-neighbour 2× upsampling of (B, C, H, W): a broadcast product, differentiable as it stands."""

    def forward(self, x):
        b, c, h, w = x.shape
        one = npgan.Tensor(backend.get_array_module(x.data).ones((1, 1, 1, 2, 1, 2), dtype=x.data.dtype))
        return (x.reshape(b, c, h, 1, w, 1) * one).reshape(b, c, 2 * h, 2 * w)


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation: one more channel holding s = mean over (C, H, W) of the
    standard deviation over the batch of each feature, the same s at every pixel of every sample."""

    def forward(self, x):
        b, c, h, w = x.shape
        s = ops.mean(ops.sqrt(ops.var(x, axis=0) + 1e-8))
        return ops.concatenate([x, ops.broadcast_to(s.reshape(1, 1, 1, 1), (b, 1, h, w))], axis=1)


def _mbstd_last(m):
    if not (isinstance(m, nn.Conv2d) and m.out_channels == 1):
        return None
    conv = nn.Conv2d(m.in_channels + 1, 1, m.kernel_size, m.stride, m.padding, bias=False)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    return nn.Sequential(MinibatchStd(), conv)


def _swap(net, replace) -> None:
    """Put ``replace(module)`` in place of each top-level module for which it returns one (not None)."""
    for name, m in list(net._modules.items()):
        new = replace(m)
        if new is not None:
            net._modules[name] = new


def _upsample_conv(m):
    if not (isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2)):
        return None
    conv = nn.Conv2d(m.in_channels, m.out_channels, 3, padding=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, 0.02)
    return nn.Sequential(Upsample2x(), conv)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="results go to OUT.jsonl (appended)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--z", type=int, default=64)
    p.add_argument("--loss", default="non_saturating")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-final", type=float, default=None, help="linear decay to this (default: constant lr)")
    p.add_argument("--lr-d", type=float, default=None, help="D's learning rate (default: --lr)")
    p.add_argument("--gp", default="", help="r1, r2 or wgan-gp (default: none)")
    p.add_argument("--gp-weight", type=float, default=1.0)
    p.add_argument("--gp-every", type=int, default=4)
    p.add_argument("--ema", type=float, nargs="*", default=[], help="β of each average of G's weights")
    p.add_argument("--background", default="noisy", choices=("noisy", "plain"))
    p.add_argument("--d-no-bn", action="store_true", help="D without its BatchNorm layers")
    p.add_argument("--d-mbstd", action="store_true", help="D: a minibatch-std channel before its last conv")
    p.add_argument("--g-upsample", action="store_true", help="G: upsample 2x + conv 3x3 for each stride-2 ConvT")
    p.add_argument("--beta1", type=float, default=None, help="Adam's β₁ (default: the preset's 0.5)")
    p.add_argument("--beta2", type=float, default=None, help="Adam's β₂ (default: the preset's 0.999)")
    p.add_argument("--d-width", type=int, default=None, help="D's width alone (default: --width)")
    p.add_argument("--g-width", type=int, default=None, help="G's width alone (default: --width)")
    p.add_argument("--entropy-weight", type=float, default=0.0, help="λ of G's KDE entropy term")
    p.add_argument("--entropy-final", type=float, default=None, help="λ decays linearly to this")
    p.add_argument("--bandwidth", default="median", help="the entropy term's bandwidth: a rule or a float")
    p.add_argument("--reuse-fake", action="store_true", help="one G forward a step (TrainConfig.reuse_fake)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=500)
    a = p.parse_args(argv)

    parallel.set_num_threads(a.threads)
    if a.background != "noisy":
        made = npgan.data.images.shapes_uint8
        npgan.data.images.shapes_uint8 = lambda n, s, seed=0: made(n, s, seed, a.background)
    cfg = presets.make_config("shapes-dcgan")
    cfg.seed, cfg.hidden, cfg.d_hidden = a.seed, a.width, 0  # --width: G's and D's (--d-width: D's alone)
    t = cfg.train
    t.steps, t.batch_size, t.z_dim, t.loss, t.lr, t.lr_final = a.steps, a.batch, a.z, a.loss, a.lr, a.lr_final
    t.gp, t.gp_weight, t.gp_every = a.gp, a.gp_weight, (a.gp_every if a.gp else 1)
    t.entropy_weight, t.entropy_weight_final, t.leave_one_out = a.entropy_weight, a.entropy_final, True
    t.reuse_fake = a.reuse_fake
    t.bandwidth = a.bandwidth if a.bandwidth in ("scott", "silverman", "median") else float(a.bandwidth)
    cfg.beta1 = cfg.beta1 if a.beta1 is None else a.beta1
    cfg.beta2 = cfg.beta2 if a.beta2 is None else a.beta2
    backend.set_default_dtype(cfg.dtype)
    backend.manual_seed(cfg.seed)
    built = presets.build(cfg)
    tr = built.trainer
    if a.d_width is not None:  # (G, D) built as this config builds them, at another width: keep one
        tr.D = presets.build_models(dataclasses.replace(cfg, hidden=a.d_width))[1]
    if a.g_width is not None:
        tr.G = presets.build_models(dataclasses.replace(cfg, hidden=a.g_width))[0]
    if a.d_no_bn:
        _swap(tr.D, lambda m: nn.Identity() if isinstance(m, nn.BatchNorm2d) else None)
    if a.g_upsample:
        _swap(tr.G, _upsample_conv)
    if a.d_mbstd:
        _swap(tr.D, _mbstd_last)
    if a.d_no_bn or a.g_upsample or a.d_mbstd or (a.d_width, a.g_width) != (None, None):  # new parameters
        tr.opt_g, tr.opt_d = (optim.Adam(net.parameters(), lr=a.lr, betas=(cfg.beta1, cfg.beta2))
                              for net in (tr.G, tr.D))  # (the same as the preset's before step 0)
        tr._g_params, tr._d_params = list(tr.G.parameters()), list(tr.D.parameters())
    if a.lr_d is not None:
        ratio = a.lr_d / a.lr

        def set_lr(lr: float) -> None:
            for g in tr.opt_g.param_groups:
                g["lr"] = lr
            for g in tr.opt_d.param_groups:
                g["lr"] = lr * ratio
        tr._set_lr = set_lr
    params = list(tr.G.parameters())
    averages = {beta: [q.data.copy() for q in params] for beta in a.ema}

    def score(tag: str) -> dict:
        m = experiment.evaluate(cfg, tr)
        c = m["class_counts"]
        return dict(tag=tag, class_kl=round(m["class_kl"], 4), coverage=round(m["coverage"], 3),
                    precision=round(m["precision"], 3), recall=round(m["recall"], 3),
                    classes_covered=m["classes_covered"], score=round(m["classifier_score"], 2),
                    discs_squares_triangles=[sum(c[4 * i:4 * i + 4]) for i in range(3)])

    wall0, cpu = time.time(), 0.0
    with open(a.out + ".jsonl", "a") as log:
        for s in range(1, a.steps + 1):
            c0 = time.process_time()
            tr.step()
            for beta, avg in averages.items():
                for x, q in zip(avg, params):
                    x *= beta
                    x += (1 - beta) * q.data
            cpu += time.process_time() - c0
            if s % 50 == 0:
                tr.flush()
            if s % a.eval_every and s != a.steps:
                continue
            rows = [score("G")]
            current = [q.data.copy() for q in params]
            for beta, avg in averages.items():
                for x, q in zip(avg, params):
                    q.data[...] = x
                rows.append(score(f"ema {beta}"))
            for x, q in zip(current, params):
                q.data[...] = x
            for r in rows:
                r.update(step=s, cpu_s=round(cpu, 1), wall_s=round(time.time() - wall0, 1))
                print(json.dumps(r), file=log, flush=True)
                print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
