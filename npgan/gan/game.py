"""The GAN game of a run's networks, for :mod:`npgan.game`: the training loop's losses plugged into a
:class:`npgan.game.Game` (the engine's module stays loss-agnostic).

:func:`game_of` builds, for G, D, a fixed noise batch z and a fixed real batch x, the game whose vector field the
loop's simultaneous steps follow (:mod:`npgan.gan.trainer`, "Simultaneous steps"):

    fake = G(z)     (not detached: how D's gradient moves with θ is part of the game's Jacobian)
    L_G  = generator_loss(D(fake), loss, fake=fake, entropy_weight=λ)         (the KDE term: − λ·H(fake))
    L_D  = discriminator_loss(D(x), D(fake), loss) + w·P(D, x, fake)          (when the run has a penalty)

λ is the entropy weight of the schedule at ``step`` (:meth:`~npgan.gan.config.TrainConfig.schedule`; its start
value when ``step`` is None). w = gp_weight·c (c = 1/2 for R1 and R2, 1 for WGAN-GP): the weight of an
every-step penalty, which is the average strength of a lazy one (the loop applies w·k every k-th D step). The
penalty's points are detached as in the loop (:mod:`npgan.gan.penalties`): P depends on φ only, so it adds to the
D-block of J, not to its θ-columns. WGAN-GP's interpolation weights are the same at every evaluation (the game's
``fixed_rng``).

The alternating loop (D, then G against the new D) is a different iteration from the simultaneous one, but its
fixed points and, for small steps, its local behaviour are read from the same J (Mescheder et al. 2017, §3);
:mod:`npgan.run.study` analyses runs of either kind through this game.
"""

from __future__ import annotations

from typing import Any

from ..game import Game
from ..tensor import Tensor
from .config import TrainConfig
from .losses import discriminator_loss, generator_loss
from .penalties import check_penalty, gradient_penalty

__all__ = ["game_of", "penalty_weight"]


def penalty_weight(train: TrainConfig) -> float:
    """w = gp_weight · (1/2 for R1 and R2, 1 for WGAN-GP), 0 without a penalty: the every-step weight."""
    return train.gp_scale / train.gp_every if train.gp else 0.0


def game_of(train: TrainConfig, G: Any, D: Any, z: Any, real: Any, step: int | None = None,
            batchnorm: str = "batch") -> Game:
    """The :class:`~npgan.game.Game` of G and D under ``train``'s losses on the fixed batch (z, real).

    ``step``: the training step whose entropy weight λ applies (None: the schedule's start). ``batchnorm``:
    "batch" (the batch's statistics, as in training) or "eval" (running statistics). The parameters are G's and
    D's that require grad, named as in their state dicts (for :meth:`~npgan.game.Game.flat_from`).
    """
    train.validate()
    if train.gp:
        check_penalty(D, train.gp)
    z = z if isinstance(z, Tensor) else Tensor(z)
    real = real if isinstance(real, Tensor) else Tensor(real)
    lam = train.entropy_weight if step is None else train.schedule(train.entropy_weight,
                                                                    train.entropy_weight_final, step)
    w = penalty_weight(train)

    def losses() -> tuple[Tensor, Tensor]:
        fake = G(z)
        d_real = D(real)
        d_fake = D(fake)
        loss_g, _ = generator_loss(d_fake, train.loss, fake=fake, entropy_weight=lam, bandwidth=train.bandwidth,
                                   leave_one_out=train.leave_one_out)
        loss_d = discriminator_loss(d_real, d_fake, train.loss)
        if w > 0:
            loss_d = loss_d + w * gradient_penalty(D, real, fake, train.gp)
        return loss_g, loss_d

    ng = [(k, p) for k, p in G.named_parameters() if p.requires_grad]
    nd = [(k, p) for k, p in D.named_parameters() if p.requires_grad]
    return Game([p for _, p in ng], [p for _, p in nd], losses, modules=(G, D), batchnorm=batchnorm,
                fixed_rng=True, names_g=[k for k, _ in ng], names_d=[k for k, _ in nd])
