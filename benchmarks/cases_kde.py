"""KDE entropy forward + backward: npgan's closed-form Function against the same formula in PyTorch autograd.

Both sides: float32, Silverman bandwidth computed from the batch without gradient, leave-one-out,
squared distances as ‖a‖² + ‖b‖² − 2a·b (torch: clamp, masked diagonal, torch.logsumexp).
The n = 2048 case also notes npgan's peak extra memory (tracemalloc; target under 150 MB).
"""

from __future__ import annotations

import math

from bench import Case, peak_extra_bytes


def _data(n, d):
    import numpy as np
    return np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)


def _npgan_builder(n, d, note_memory=False):
    def build(device):
        import npgan
        from npgan.gan.losses import kde_entropy
        x = npgan.Tensor(npgan.backend.asarray(_data(n, d)), requires_grad=True)

        def step():
            x.grad = None
            kde_entropy(x, "silverman", leave_one_out=True).backward()
        if not note_memory:
            return step
        peak = peak_extra_bytes(step)
        return step, {"peak_extra_MB": f"{peak / 2 ** 20:.1f}", "target_MB": 150}
    return build


def _torch_builder(n, d):
    def build(device):
        import torch
        dev = "cuda" if device == "gpu" else "cpu"
        x = torch.tensor(_data(n, d), device=dev, requires_grad=True)
        eye = torch.eye(n, dtype=torch.bool, device=dev)

        def entropy(x):
            with torch.no_grad():
                s = x.std(dim=0).mean().item()
                sigma = s * (4 / (d + 2)) ** (1 / (d + 4)) * n ** (-1 / (d + 4))
            sq = (x * x).sum(1)
            D = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
            L = (-D / (2 * sigma ** 2)).masked_fill(eye, -math.inf)
            return -torch.logsumexp(L, dim=1).mean() + math.log(n - 1) + \
                0.5 * d * math.log(2 * math.pi * sigma ** 2)

        def step():
            x.grad = None
            entropy(x).backward()
        return step
    return build


CASES = [
    Case("kde_entropy fwd+bwd n=1024 d=784 (silverman, LOO)", _npgan_builder(1024, 784),
         _torch_builder(1024, 784)),
    Case("kde_entropy fwd+bwd n=512 d=2 (silverman, LOO)", _npgan_builder(512, 2), _torch_builder(512, 2)),
    Case("kde_entropy fwd+bwd n=2048 d=784 (silverman, LOO)", _npgan_builder(2048, 784, note_memory=True),
         _torch_builder(2048, 784)),
]
