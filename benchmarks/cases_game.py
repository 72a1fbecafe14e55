"""The game's Jacobian products on ring8's networks, npgan.game against PyTorch's double backward; the top-20
eigenvalues of ring8's game.

The networks are the ring8 preset's (G 16 → 128 → 128 → 2, ReLU; D 2 → 128 → 128 → 1, LeakyReLU 0.2; 35,971
parameters), at their seeded initialisation, on one fixed batch of 512 (z ~ N(0, I₁₆), ring8 data); the losses
are the non-saturating GAN's, BCE on logits (the preset's KDE entropy term is left out: PyTorch has no twin of
it here). The torch side is the same network (``npgan.interop.to_torch``) and the same algorithm on PyTorch's
autograd: v = (∇_θ L_G, ∇_φ L_D) with ``create_graph=True``, y = Jᵀ w = ``autograd.grad(v, params, w,
create_graph=True)`` for a zero w, and J u = ``autograd.grad(y, w, u)`` — what ``torch.autograd.functional.jvp``
does inside (its double-backward trick), written out so that both sides record and keep the same graphs.

Cases (``python benchmarks/bench.py --only "ring8 game"``), npgan by its default "Hessian rows" (two
Hessian-vector products, one per loss) and by the same double-vjp trick as the torch side ("double vjp"):
* "J u afresh": everything recorded for one product (``Game.jvp``) and one product; the npgan side notes its peak
  extra host memory (tracemalloc), as the train step does (memory: O(parameters + one step's graph));
* "J u kept graphs": one more product through kept graphs (``Linearization.jvp``), what the eigen-solver pays;
* "Jᵀ u, graph kept": one backward pass through v's graph (``Linearization.vjp``);
* "train step": one training step (D, then G, Adam; bench.gan_step) for scale: "one J u costs ≤ ~4 steps";
* "trainer: extragradient step" / "consensus step": the loop's simultaneous steps (npgan.gan.trainer, Extra-Adam;
  consensus with γ = 0.1) against the same algorithms written on PyTorch's autograd and torch.optim.Adam.

Run as a script for the eigenvalues: ``python benchmarks/cases_game.py [--k 20] [--which LM SR] [--threads 2]
[--hessians]`` prints the machine, the time and number of products of the top-k eigenvalues of J (and with
``--hessians`` each player's extreme Hessian eigenvalues), and the per-product and per-step times measured in
alternation (their ratio is what a loaded machine distorts least). ``--train-steps N`` analyses the networks after
N training steps instead of at their initialisation.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench import Case, gan_step, machine_line, peak_extra_bytes, time_pair_ms

BATCH = 512


def ring8_parts(seed: int = 0):
    """(G, D, z, real, game) of the ring8 preset at its initialisation, float32 on the current device."""
    import npgan
    import npgan.functional as F
    import npgan.game as game
    from npgan.data import ring8
    from npgan.run import presets
    npgan.manual_seed(seed)
    G, D = presets.build_models(presets.make_config("ring8"))
    z, real = npgan.randn(BATCH, 16), ring8(BATCH)

    def g_loss(d_fake, fake):
        return F.binary_cross_entropy_with_logits(d_fake, 1.0)

    def d_loss(d_real, d_fake):
        return F.binary_cross_entropy_with_logits(d_real, 1.0) + F.binary_cross_entropy_with_logits(d_fake, 0.0)
    return G, D, z, real, game.from_models(G, D, z, real, g_loss, d_loss)


def _u(n: int):
    import numpy as np
    u = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    return u / np.linalg.norm(u)


def npgan_case(kind: str, method: str = "hessian"):
    def build(device):
        G, D, z, real, gm = ring8_parts()
        u = gm.vector(_u(gm.n))
        if kind == "fresh":
            def step():
                gm.jvp(u, jvp_method=method)
            return step, {"peak_extra_MB": f"{peak_extra_bytes(step) / 2 ** 20:.1f}"}
        lin = gm.linearize(jvp_method=method)
        lin.jvp(u)  # with "double_vjp": records y's graph once
        return (lambda: lin.jvp(u)) if kind == "kept" else (lambda: lin.vjp(u))
    return build


def torch_case(kind: str):
    def build(device):
        import torch

        from npgan.interop import to_torch
        dev = "cuda" if device == "gpu" else "cpu"
        G, D, z, real, gm = ring8_parts()
        tG, tD = to_torch(G).to(dev), to_torch(D).to(dev)
        tz, treal = (torch.from_numpy(t.numpy()).to(dev) for t in (z, real))
        pg, pd = list(tG.parameters()), list(tD.parameters())
        params = pg + pd
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        u_flat = torch.from_numpy(_u(gm.n)).to(dev)
        us, o = [], 0
        for p in params:
            us.append(u_flat[o:o + p.numel()].reshape(p.shape))
            o += p.numel()

        def field():
            fake = tG(tz)
            df = tD(fake)
            lg = bce(df, torch.ones_like(df))
            ld = bce(tD(treal), torch.ones_like(df)) + bce(df, torch.zeros_like(df))
            return list(torch.autograd.grad(lg, pg, create_graph=True, retain_graph=True)) + \
                list(torch.autograd.grad(ld, pd, create_graph=True))

        def record_y(v):
            w = [torch.zeros_like(p, requires_grad=True) for p in params]
            return w, torch.autograd.grad(v, params, w, create_graph=True, retain_graph=True)

        if kind == "fresh":
            def step():
                w, y = record_y(field())
                torch.autograd.grad(y, w, us)
            return step
        v = field()
        w, y = record_y(v)
        if kind == "kept":
            return lambda: torch.autograd.grad(y, w, us, retain_graph=True)
        return lambda: torch.autograd.grad(v, params, us, retain_graph=True)
    return build


def _optimizers(G, D, optim):
    return (optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999)),
            optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999)))


def npgan_step(device):
    import npgan
    import npgan.functional as F
    from npgan import optim
    G, D, z, real, _ = ring8_parts()
    og, od = _optimizers(G, D, optim)
    step = gan_step(F, G, D, og, od, real, lambda: z, npgan.ones(BATCH, 1), npgan.zeros(BATCH, 1))
    return step, {"peak_extra_MB": f"{peak_extra_bytes(step) / 2 ** 20:.1f}"}


def torch_step(device):
    import torch

    from npgan.interop import to_torch
    dev = "cuda" if device == "gpu" else "cpu"
    G, D, z, real, _ = ring8_parts()
    tG, tD = to_torch(G).to(dev), to_torch(D).to(dev)
    og, od = _optimizers(tG, tD, torch.optim)
    tz, treal = (torch.from_numpy(t.numpy()).to(dev) for t in (z, real))
    return gan_step(torch.nn.functional, tG, tD, og, od, treal, lambda: tz, torch.ones(BATCH, 1, device=dev),
                    torch.zeros(BATCH, 1, device=dev))


def npgan_simultaneous(method: str):
    """A Trainer step of ``method`` ("extragradient": Extra-Adam; "consensus": γ = 0.1, Adam) on ring8's networks:
    the loop's own code (npgan.gan.trainer, simultaneous steps), fresh noise each step, the fixed real batch."""
    def build(device):
        from npgan import optim
        from npgan.gan import TrainConfig, Trainer
        G, D, z, real, _ = ring8_parts()
        og, od = _optimizers(G, D, optim)
        cfg = TrainConfig(steps=10 ** 6, batch_size=BATCH, z_dim=16, lr=1e-3, extragradient=method == "extragradient",
                          consensus=0.1 if method == "consensus" else 0.0)
        tr = Trainer(G, D, og, od, lambda step: real, cfg)
        return tr.step, {"peak_extra_MB": f"{peak_extra_bytes(tr.step) / 2 ** 20:.1f}"}
    return build


def torch_simultaneous(method: str):
    """The same step written on PyTorch: v = (∇_θ L_G, ∇_φ L_D) on one batch (fake not detached in L_D); consensus
    adds 0.1·∇½‖v‖² (v recorded with create_graph); extragradient: Adam step, field at the look-ahead, parameters
    back, Adam step (torch.optim.Adam's moments updated twice, as npgan's Extra-Adam)."""
    def build(device):
        import torch

        from npgan.interop import to_torch
        dev = "cuda" if device == "gpu" else "cpu"
        G, D, z, real, _ = ring8_parts()
        tG, tD = to_torch(G).to(dev), to_torch(D).to(dev)
        og, od = _optimizers(tG, tD, torch.optim)
        treal = torch.from_numpy(real.numpy()).to(dev)
        pg, pd = list(tG.parameters()), list(tD.parameters())
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        gamma = 0.1 if method == "consensus" else 0.0

        def grads(tz):
            fake = tG(tz)
            dr, df = tD(treal), tD(fake)
            lg = bce(df, torch.ones_like(df))
            ld = bce(dr, torch.ones_like(dr)) + bce(df, torch.zeros_like(df))
            vg = torch.autograd.grad(lg, pg, retain_graph=True, create_graph=gamma > 0)
            vd = torch.autograd.grad(ld, pd, create_graph=gamma > 0)
            g = list(vg) + list(vd)
            if gamma > 0:
                jtv = torch.autograd.grad(0.5 * sum((x * x).sum() for x in g), pg + pd)
                g = [a.detach() + gamma * b for a, b in zip(g, jtv)]
            for p, a in zip(pg + pd, g):
                p.grad = a.detach()

        def step():
            tz = torch.randn(BATCH, 16, device=dev)
            grads(tz)
            if method == "extragradient":
                saved = [p.detach().clone() for p in pg + pd]
                od.step()
                og.step()
                grads(tz)
                with torch.no_grad():
                    for p, a in zip(pg + pd, saved):
                        p.copy_(a)
            od.step()
            og.step()
        return step
    return build


CASES = [
    Case("ring8 game: J u afresh, Hessian rows / torch dvjp", npgan_case("fresh"), torch_case("fresh")),
    Case("ring8 game: J u afresh, double vjp / torch dvjp", npgan_case("fresh", "double_vjp"), torch_case("fresh")),
    Case("ring8 game: J u kept graphs, Hessian rows / torch dvjp", npgan_case("kept"), torch_case("kept")),
    Case("ring8 game: J u kept graphs, double vjp / torch dvjp", npgan_case("kept", "double_vjp"),
         torch_case("kept")),
    Case("ring8 game: J^T u, graph kept, batch 512", npgan_case("vjp"), torch_case("vjp")),
    Case("ring8 game: train step (D+G, Adam), batch 512", npgan_step, torch_step),
    Case("ring8 trainer: extragradient step (Extra-Adam), batch 512", npgan_simultaneous("extragradient"),
         torch_simultaneous("extragradient")),
    Case("ring8 trainer: consensus step (gamma 0.1, Adam), batch 512", npgan_simultaneous("consensus"),
         torch_simultaneous("consensus")),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Top-k eigenvalues of ring8's game: time, products, residuals.")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--which", nargs="+", default=["LM", "SR"])
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--hessians", action="store_true", help="also each player's extreme Hessian eigenvalues")
    ap.add_argument("--repeat", type=int, default=9, help="rounds of the product/step timing")
    ap.add_argument("--train-steps", type=int, default=0,
                    help="first train G and D this many steps (Adam, fresh noise each step, the game's real batch)")
    args = ap.parse_args(argv)
    import npgan
    import npgan.functional as F
    from npgan import optim
    npgan.set_num_threads(args.threads)
    print(f"npgan {npgan.__version__} | threads {args.threads} | {machine_line()}")
    G, D, z, real, gm = ring8_parts()
    if args.train_steps:
        og, od = _optimizers(G, D, optim)
        train = gan_step(F, G, D, og, od, real, lambda: npgan.randn(BATCH, 16), npgan.ones(BATCH, 1),
                         npgan.zeros(BATCH, 1))
        for _ in range(args.train_steps):
            train()
    print(f"ring8 game: n = {gm.n} ({gm.n_g} for G, {gm.n_d} for D), batch {BATCH}, float32, after "
          f"{args.train_steps} training steps")
    with gm.linearize() as lin:
        u = gm.vector(_u(gm.n))
        lin.jvp(u)
        step = npgan_step("cpu")[0]
        ju_ms, step_ms, ratio = time_pair_ms(lambda: lin.jvp(u), step, args.repeat, "cpu")
        print(f"J u through kept graphs {ju_ms:.2f} ms, training step {step_ms:.2f} ms: J u = {ratio:.2f} steps "
              f"(median of per-round ratios)")
        for which in args.which:
            t0 = time.perf_counter()
            spec = lin.eigs(args.k, which)
            wall = time.perf_counter() - t0
            print(f"\ntop-{args.k} eigenvalues of J by {which}: {wall:.1f} s wall, {spec.matvecs} products "
                  f"({wall / spec.matvecs * 1e3:.1f} ms each with the solver's share), {spec.restarts} restarts, "
                  f"all converged: {spec.all_converged}")
            print(spec.report())
        if args.hessians:
            t0 = time.perf_counter()
            ext = lin.hessian_extremes()
            print(f"\nHessian extremes ({time.perf_counter() - t0:.1f} s): {ext}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
