"""The GAN wing: the players' objectives, the gradient penalties, and the alternating training loop.

* :mod:`~npgan.gan.losses`: the discriminator's and the generator's losses on raw outputs (BCE, non-saturating,
  hinge, Wasserstein, least squares) and the KDE entropy term;
* :mod:`~npgan.gan.penalties`: R1, R2 and WGAN-GP, through npgan's double backward;
* :mod:`~npgan.gan.trainer`: :class:`TrainConfig` and :class:`Trainer`, the alternating loop with its
  divergence guard.

It imports the engine only.
"""

from .losses import LOSS_KINDS, discriminator_loss, generator_loss
from .penalties import PENALTY_KINDS, gradient_penalty
from .trainer import HISTORY_FIELDS, SIMULTANEOUS_FIELDS, TrainConfig, Trainer

__all__ = ["LOSS_KINDS", "discriminator_loss", "generator_loss", "PENALTY_KINDS", "gradient_penalty",
           "HISTORY_FIELDS", "SIMULTANEOUS_FIELDS", "TrainConfig", "Trainer"]
