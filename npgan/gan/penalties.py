"""Gradient penalties on the discriminator: R1, R2 (Mescheder et al. 2018) and WGAN-GP (Gulrajani et al. 2017).

Each penalty is a function of the input gradient gᵢ = ∇ₓD(x)|ₓ₌ₓᵢ of the discriminator's (raw, logit) output
at a batch of points xᵢ, taken per sample (the norm runs over every axis but the first):

    R1       = (1/N) Σᵢ ‖∇ₓD(xᵢ)‖²            at the real samples xᵢ
    R2       = (1/N) Σᵢ ‖∇ₓD(x̃ᵢ)‖²            at the fake samples x̃ᵢ
    WGAN-GP  = (1/N) Σᵢ (‖∇ₓD(x̂ᵢ)‖ − c)²      at x̂ᵢ = εᵢxᵢ + (1 − εᵢ)x̃ᵢ, εᵢ ~ U(0, 1), c = 1

The value returned is the raw mean above, with no weight: the caller adds ``(γ/2)·R1`` to the
discriminator's loss for Mescheder's R1 (γ = 10 in their experiments; StyleGAN2 computes
``r1_penalty * (gamma / 2)`` the same way) and ``λ·WGAN-GP`` for Gulrajani's (λ = 10). Lazy regularisation
(StyleGAN2: every k discriminator steps) multiplies the weight by k on the steps where it is applied.

The gradient is recorded (``npgan.grad(D(x).sum(), x, create_graph=True)``: the batch's samples do not
interact in D, so the gradient of the sum is each sample's own gradient), so the penalty is a Tensor whose
``backward()`` reaches D's parameters through the double backward of every op D uses (docs/math.md §13): for
D's parameters w,

    ∂R1/∂w = (2/N) Σᵢ (∂²D/∂w∂x)(xᵢ) · gᵢ,
    ∂WGAN-GP/∂w = (2/N) Σᵢ (1 − c/‖gᵢ‖) (∂²D/∂w∂x)(x̂ᵢ) · gᵢ      (0 where gᵢ = 0, as torch.linalg.norm).

The points are detached: x is a fresh leaf holding the samples' values, so no gradient reaches G through a
penalty (the penalties are discriminator regularisers). D runs once more on them (a BatchNorm in training
mode updates its running statistics once more, as in PyTorch).

A critic with BatchNorm is refused under WGAN-GP: BatchNorm mixes the samples of a batch, so ∇ₓD(x̂ᵢ) is no
longer a per-sample gradient and the per-sample norm the penalty constrains is not defined (Gulrajani et al.
2017, §4, who drop batch normalisation from the critic). R1 and R2 allow it (as does PyTorch).

Example::

    D_loss = losses.discriminator_loss(D(x_real), D(G(z).detach())) + (gamma / 2) * gradient_penalty(D, x_real)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import backend, ops
from ..autograd import grad
from ..tensor import Tensor
from .config import PENALTY_KINDS

__all__ = ["PENALTY_KINDS", "check_penalty", "gradient_penalty", "per_sample_grad_norm2"]



def _points(x: Any, what: str) -> Tensor:
    """A fresh leaf with ``x``'s values (detached from whatever computed them)."""
    if isinstance(x, Tensor):
        data = x.data
    elif backend.is_array(x):
        data = x
    else:
        raise TypeError(f"gradient_penalty: {what} must be a Tensor or an array, got {type(x).__name__}")
    if data.ndim < 1 or data.shape[0] == 0:
        raise ValueError(f"gradient_penalty: {what} must be a batch (N, ...) with N >= 1, got shape {data.shape}")
    if data.dtype.kind != "f":
        raise TypeError(f"gradient_penalty: {what} must hold floats, got dtype {data.dtype}")
    return Tensor(data, requires_grad=True)


def _batch_norm_in(D: Any) -> str | None:
    """The name of a BatchNorm module inside D (an nn.Module), or None."""
    named_modules = getattr(D, "named_modules", None)
    if callable(named_modules):
        for name, m in named_modules():
            if getattr(m, "mixes_batch", False):  # BatchNorm in training mode or not: it mixes in training
                return f"{type(m).__name__} at {name!r}" if name else type(m).__name__
    return None


def check_penalty(D: Any, kind: str) -> None:
    """Refuse, in one line, a penalty D cannot take: WGAN-GP with a BatchNorm in the critic. A training loop
    calls it once, up front (the kind itself is validated with the configuration:
    :meth:`npgan.gan.config.TrainConfig.validate`); :func:`gradient_penalty` calls it for WGAN-GP, whose rule
    it is."""
    if kind == "wgan-gp":
        bn = _batch_norm_in(D)
        if bn is not None:
            raise ValueError(f"gradient_penalty: kind='wgan-gp' refuses a critic with BatchNorm ({bn}): BatchNorm "
                             "mixes the samples of a batch, so the per-sample gradient norm the penalty constrains "
                             "is not defined; use no normalisation in the critic (Gulrajani et al. 2017, §4)")


def per_sample_grad_norm2(D: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """‖∇ₓD(xᵢ)‖² for each sample i, shape (N,), recorded (differentiable again).

    ``x`` is a leaf that requires grad; D maps (N, ...) to N outputs ((N,) or (N, 1)).
    """
    out = D(x)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradient_penalty: D returned a {type(out).__name__}, not a Tensor")
    n = x.shape[0]
    if out.size != n:
        raise ValueError(f"gradient_penalty: D must give one output per sample, got shape {tuple(out.shape)} "
                         f"for a batch of {n}")
    g, = grad(out.sum(), x, create_graph=True)
    return (g * g).reshape(n, -1).sum(axis=1)


def gradient_penalty(D: Callable[[Tensor], Tensor], real: Any = None, fake: Any = None, kind: str = "r1",
                     center: float = 1.0, part: tuple[int, int, int] | None = None) -> Tensor:
    """The gradient penalty ``kind`` of D, a scalar Tensor to add (weighted) to D's loss.

    Args:
        D: the discriminator (critic), any callable from a batch (N, ...) to N raw outputs, e.g. an nn.Module.
        real: the real batch (N, ...), a Tensor or an array; used by "r1" and "wgan-gp".
        fake: the generated batch, same shape; used by "r2" and "wgan-gp" (detached: G gets no gradient).
        kind: "r1" = (1/N) Σ‖∇ₓD(xᵢ)‖² at real data, "r2" the same at fake data, "wgan-gp" =
            (1/N) Σ(‖∇ₓD(x̂ᵢ)‖ − center)² at random interpolates x̂ᵢ = εᵢxᵢ + (1 − εᵢ)x̃ᵢ, εᵢ ~ U(0, 1) drawn
            per sample from npgan's seeded generator (``npgan.manual_seed``).
        center: the target gradient norm of WGAN-GP (Gulrajani's 1).
        part: (lo, hi, n) when the batch is rows lo:hi of a batch of n split over the ranks of a data-parallel
            run (:class:`npgan.gan.Trainer`): WGAN-GP's ε is then drawn for all n rows, as one process draws it,
            and rows lo:hi are used, so that every rank's random stream stays the one-process stream. The mean
            is over the rows given (the trainer weights it by (hi − lo)/n).

    Returns the unweighted mean; multiply by γ/2 (R1, R2: Mescheder's convention) or λ (WGAN-GP).
    """
    if kind == "r1":
        if real is None:
            raise ValueError("gradient_penalty: kind='r1' needs the real batch (real=...)")
        return per_sample_grad_norm2(D, _points(real, "real")).mean()
    if kind == "r2":
        if fake is None:
            raise ValueError("gradient_penalty: kind='r2' needs the generated batch (fake=...)")
        return per_sample_grad_norm2(D, _points(fake, "fake")).mean()
    if kind != "wgan-gp":
        raise ValueError(f"gradient_penalty: unknown kind {kind!r}; valid kinds are {PENALTY_KINDS}")
    check_penalty(D, kind)
    if real is None or fake is None:
        raise ValueError("gradient_penalty: kind='wgan-gp' needs both the real and the generated batch")
    if isinstance(center, bool) or not isinstance(center, (int, float)) or not math.isfinite(center) or center < 0:
        raise ValueError(f"gradient_penalty: center must be a finite number >= 0, got {center!r}")
    xr, xf = _points(real, "real").data, _points(fake, "fake").data
    if xr.shape != xf.shape:
        raise ValueError(f"gradient_penalty: real and fake batches differ in shape, {xr.shape} vs {xf.shape}")
    if backend.device_of(xr) != backend.device_of(xf):
        raise ValueError(f"gradient_penalty: real is on {backend.device_of(xr)}, fake on {backend.device_of(xf)}")
    n = xr.shape[0] if part is None else part[2]
    eps = backend.rng().random((n,) + (1,) * (xr.ndim - 1), dtype=xr.dtype)
    if part is not None:
        eps = eps[part[0]:part[1]]
    eps = backend.asarray(eps, device=backend.device_of(xr))  # the generator of the current device; the data's
    x_hat = Tensor(eps * xr + (1 - eps) * xf, requires_grad=True)
    s = per_sample_grad_norm2(D, x_hat)
    # ‖g‖ = √s, with the derivative 0 where g = 0 (torch.linalg.norm's choice) instead of 0·∞
    pos = s.data > 0
    norm = ops.where(pos, ops.where(pos, s, 1.0).sqrt(), 0.0)
    return ((norm - center) ** 2).mean()
