"""The GAN objectives: the discriminator's and the generator's losses on raw outputs (logits).

:func:`discriminator_loss` and :func:`generator_loss` implement the usual kinds
(:data:`LOSS_KINDS`: "minimax", "non_saturating", "lsgan", "hinge", "wasserstein"); the
generator's loss optionally subtracts λ·H(G(z)), the KDE entropy of the generated batch
(:mod:`npgan.kde`):

      L_G = L_adv − λ · H(G(z)).

A larger entropy of the generated batch means its samples are spread out, so
rewarding it pushes against mode collapse. The objectives are compositions of the ops in
:mod:`npgan.functional` and :mod:`npgan.kde`; they add no Function of their own.
"""

from __future__ import annotations

import math
from typing import Any

from .. import functional as F
from ..kde import BANDWIDTH_RULES, KDEEntropy, kde_bandwidth, kde_entropy
from ..tensor import Tensor
from .config import LOSS_KINDS

__all__ = ["LOSS_KINDS", "discriminator_loss", "generator_loss",
           # the KDE entropy lives in npgan.kde; its names stay importable from here
           "kde_entropy", "kde_bandwidth", "KDEEntropy", "BANDWIDTH_RULES"]



def _check_kind(kind: str, name: str) -> None:
    if kind not in LOSS_KINDS:
        raise ValueError(f"{name}: unknown loss kind {kind!r}; valid kinds are {LOSS_KINDS}")


def _check_out(t: Any, what: str, name: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor (the discriminator's raw outputs), "
                        f"got {type(t).__name__}")
    if t.size == 0:
        raise ValueError(f"{name}: {what} is empty (shape {t.shape})")
    return t


def discriminator_loss(d_real: Tensor, d_fake: Tensor, kind: str = "non_saturating") -> Tensor:
    """The discriminator's loss on its raw outputs (logits) for real data and for fakes.

    E is the mean over all elements; d_real and d_fake may have different shapes (any).

        "minimax", "non_saturating": BCE(d_real, 1) + BCE(d_fake, 0)
                     = E[−log σ(D(x))] + E[−log(1 − σ(D(G(z))))]   (summed, as the PyTorch DCGAN
                     example does; the fused F.binary_cross_entropy_with_logits)
        "lsgan":       ½ E[(D(x) − 1)²] + ½ E[D(G(z))²]
        "hinge":       E[relu(1 − D(x))] + E[relu(1 + D(G(z)))]
        "wasserstein": E[D(G(z))] − E[D(x)]    (the critic; Lipschitz control is the caller's)

    Returns a 0-d tensor; unknown ``kind`` raises ValueError listing :data:`LOSS_KINDS`.
    """
    name = "discriminator_loss"
    _check_kind(kind, name)
    d_real, d_fake = _check_out(d_real, "d_real", name), _check_out(d_fake, "d_fake", name)
    if kind in ("minimax", "non_saturating"):
        bce = F.binary_cross_entropy_with_logits
        return bce(d_real, 1.0) + bce(d_fake, 0.0)
    if kind == "lsgan":
        return ((d_real - 1.0) ** 2).mean() * 0.5 + (d_fake ** 2).mean() * 0.5
    if kind == "hinge":
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
    return d_fake.mean() - d_real.mean()  # wasserstein


def generator_loss(d_fake_logits: Tensor, kind: str = "non_saturating", fake: Tensor | None = None,
                   entropy_weight: float = 0.0, bandwidth: float | str = "silverman",
                   leave_one_out: bool = False) -> tuple[Tensor, Tensor | None]:
    """The generator's loss on the discriminator's raw outputs for fakes, minus λ·H(G(z)).

        "minimax":        L_adv = E[log(1 − σ(D(G(z))))] = −BCE(D(G(z)), 0)
                          (∂/∂logit = −σ(logit): vanishes when D rejects the fakes, logit ≪ 0)
        "non_saturating": L_adv = E[−log σ(D(G(z)))] = BCE(D(G(z)), 1)      (the default)
                          (∂/∂logit = σ(logit) − 1 → −1 for logit ≪ 0: keeps learning)
        "lsgan":          L_adv = ½ E[(D(G(z)) − 1)²]
        "hinge", "wasserstein": L_adv = −E[D(G(z))]

        loss = L_adv − λ · H,   H = kde_entropy(fake, bandwidth, leave_one_out)   (λ = entropy_weight)

    Args:
        d_fake_logits: D's raw outputs on the fakes, any shape (E is the mean over all elements).
        kind: one of :data:`LOSS_KINDS`.
        fake: the generated batch G(z), (n, ...) — needed when entropy_weight > 0.
        entropy_weight: λ ≥ 0.
        bandwidth, leave_one_out: passed to :func:`kde_entropy`.

    Returns (loss, entropy): entropy is the KDE entropy tensor of ``fake`` when entropy_weight > 0
    (part of the loss's graph, e.g. for logging with ``.item()``), else None.
    """
    name = "generator_loss"
    _check_kind(kind, name)
    d_fake = _check_out(d_fake_logits, "d_fake_logits", name)
    try:
        lam = float(entropy_weight)
    except (TypeError, ValueError):
        lam = float("nan")
    if isinstance(entropy_weight, (bool, str, bytes)) or not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"{name}: entropy_weight must be a finite number ≥ 0, got {entropy_weight!r}")
    if kind == "minimax":
        loss = -F.binary_cross_entropy_with_logits(d_fake, 0.0)
    elif kind == "non_saturating":
        loss = F.binary_cross_entropy_with_logits(d_fake, 1.0)
    elif kind == "lsgan":
        loss = ((d_fake - 1.0) ** 2).mean() * 0.5
    else:  # hinge, wasserstein
        loss = -d_fake.mean()
    if lam == 0.0:
        return loss, None
    if fake is None:
        raise ValueError(f"{name}: entropy_weight={entropy_weight!r} > 0 needs the generated batch: "
                         "pass fake=G(z)")
    h = kde_entropy(fake, bandwidth=bandwidth, leave_one_out=leave_one_out)
    return loss - h * lam, h
