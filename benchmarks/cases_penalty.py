"""Gradient-penalty cases: one discriminator step with an R1 penalty, npgan against PyTorch.

The step, the same code on both APIs (:func:`r1_d_step`): x_real requires grad, g = ∇ₓ Σ D(x_real) recorded
(``npgan.grad`` / ``torch.autograd.grad`` with ``create_graph=True``), loss = BCE-with-logits on real and fake
+ γ/2 · mean_n ‖g_n‖², backward through the double backward, one Adam step. The fakes are a fixed batch (no G:
the case times D's step). Both sides start from the same weights (the torch twin via ``npgan.interop.to_torch``).
"""

from __future__ import annotations

from bench import Case

GAMMA = 10.0


def r1_d_step(F, grad, D, opt, real, fake, ones, zeros, gamma=GAMMA):
    """One D step with R1 for npgan or torch alike: ``grad`` is npgan.grad or torch.autograd.grad."""
    def step() -> None:
        opt.zero_grad()
        dr = D(real)
        g, = grad(dr.sum(), real, create_graph=True)
        penalty = (g * g).sum() / real.shape[0]
        loss = (F.binary_cross_entropy_with_logits(dr, ones) + F.binary_cross_entropy_with_logits(D(fake), zeros)
                + penalty * (gamma / 2))
        loss.backward()
        opt.step()
    return step


def _mlp_d():
    from npgan import nn
    return nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                         nn.Linear(128, 1))  # the ring8 preset's D


def _dcgan_d():
    from npgan.run import presets
    return presets.build_models(presets.make_config("mnist-dcgan"))[1]


def _data(shape):
    import npgan
    npgan.manual_seed(0)
    return (npgan.randn(*shape).numpy(), npgan.randn(*shape).numpy() + 0.5)


def _npgan_case(make_d, shape):
    def build(device):
        import npgan
        import npgan.functional as F
        from npgan import optim
        npgan.manual_seed(0)
        D = make_d()
        ra, fa = _data(shape)
        opt = optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real = npgan.tensor(ra, requires_grad=True)
        n = shape[0]
        return r1_d_step(F, npgan.grad, D, opt, real, npgan.tensor(fa), npgan.ones(n, 1), npgan.zeros(n, 1))
    return build


def _torch_case(make_d, shape):
    def build(device):
        import torch

        import npgan
        from npgan.interop import to_torch
        dev = "cuda" if device == "gpu" else "cpu"
        npgan.manual_seed(0)
        D = to_torch(make_d()).to(dev)
        ra, fa = _data(shape)
        opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        real = torch.from_numpy(ra).to(dev).requires_grad_(True)
        n = shape[0]
        ones, zeros = torch.ones(n, 1, device=dev), torch.zeros(n, 1, device=dev)
        return r1_d_step(torch.nn.functional, torch.autograd.grad, D, opt, real, torch.from_numpy(fa).to(dev),
                         ones, zeros)
    return build


CASES = [
    Case("MLP D step with R1, batch 256", _npgan_case(_mlp_d, (256, 2)), _torch_case(_mlp_d, (256, 2))),
    Case("DCGAN 28x28 D step with R1, batch 64", _npgan_case(_dcgan_d, (64, 1, 28, 28)),
         _torch_case(_dcgan_d, (64, 1, 28, 28))),
]
