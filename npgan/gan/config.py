"""The loop's configuration: :class:`TrainConfig`, and the kinds of loss, penalty, order and divergence action it
accepts. Every option of the loop is validated here, once, when a run is configured (:meth:`TrainConfig.validate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import integer, one_of, real
from ..kde import check_bandwidth

__all__ = ["TrainConfig", "LOSS_KINDS", "PENALTY_KINDS", "ON_NAN_ACTIONS", "ORDERS", "MAX_STEPS", "MAX_D_STEPS",
           "MAX_SIZE"]

#: the GAN objectives of :mod:`npgan.gan.losses`
LOSS_KINDS = ("minimax", "non_saturating", "lsgan", "hinge", "wasserstein")
#: the gradient penalties of :mod:`npgan.gan.penalties`
PENALTY_KINDS = ("r1", "r2", "wgan-gp")
#: what a non-finite loss or gradient does (:mod:`npgan.gan.trainer`)
ON_NAN_ACTIONS = ("stop", "skip", "rollback")
#: which player steps first in a generator step
ORDERS = ("d_first", "g_first")

#: Bounds of the loop's counts, so that every count fits a run: ``steps`` (a billion steps is years at the
#: fastest step npgan takes), ``d_steps`` (D updates per G update: the WGAN papers use 5, and 100 for a while at
#: the start; a bound keeps one step, which Ctrl-C lets finish, short), ``gp_every`` (at most the D steps of a
#: run), and the sizes ``batch_size`` and ``z_dim`` (a 32-bit count; the memory checks then say what fits).
MAX_STEPS = 10**9
MAX_D_STEPS = 1000
MAX_SIZE = 2**31 - 1


@dataclass
class TrainConfig:
    """Hyper-parameters of the loop (the models, optimizers and data are given separately).

    lr / lr_final: the learning rate of both optimizers falls linearly from ``lr`` to ``lr_final`` over
    ``steps`` (constant when lr_final is None). entropy_weight / entropy_weight_final: λ likewise.
    on_nan: what a non-finite loss or gradient does (see the module docstring): "stop" (default), "skip" or
    "rollback".
    gp / gp_weight / gp_every: the gradient penalty ("" = none, "r1", "r2", "wgan-gp"), its weight (γ of
    (γ/2)·R1, λ of λ·WGAN-GP) and k, the penalty applied every k-th D step with its weight scaled by k (module
    docstring). Weight clipping of the Wasserstein loss is not applied under "wgan-gp".
    reuse_fake: the G step and a D step share one fake batch (one G forward a step; module docstring).
    extragradient / consensus: the methods that converge where simultaneous gradient steps rotate
    (:mod:`npgan.gan.trainer`, "Simultaneous steps"): extragradient (Korpelevich 1976; with Adam, Extra-Adam,
    Gidel et al. 2019) looks ahead with one step of the optimizer and updates from the old point with the field
    at the look-ahead; consensus = γ ≥ 0 adds γ·Jᵀv = γ·∇½‖v‖² to the field v (Mescheder et al. 2017). Either
    one makes each step a simultaneous step of both players on one batch: d_steps must be 1, reuse_fake false
    and order "d_first" (no order applies). Both off (the defaults): the alternating loop, unchanged.
    """

    steps: int = 1000
    batch_size: int = 64
    z_dim: int = 100
    loss: str = "non_saturating"
    d_steps: int = 1
    order: str = "d_first"
    lr: float = 2e-4
    lr_final: float | None = None
    entropy_weight: float = 0.0
    entropy_weight_final: float | None = None
    bandwidth: float | str = "silverman"
    leave_one_out: bool = False
    clip_value: float = 0.01
    on_nan: str = "stop"
    gp: str = ""
    gp_weight: float = 10.0
    gp_every: int = 1
    reuse_fake: bool = False
    extragradient: bool = False
    consensus: float = 0.0

    @property
    def simultaneous(self) -> bool:
        """Whether the loop takes simultaneous steps of both players (extragradient or consensus)."""
        return self.extragradient is True or self.consensus > 0  # (after validate: a bool and a number)

    def validate(self) -> None:
        one_of("loss", self.loss, LOSS_KINDS)
        one_of("order", self.order, ORDERS)
        integer("steps", self.steps, 1, MAX_STEPS)
        integer("d_steps", self.d_steps, 1, MAX_D_STEPS)
        for name in ("batch_size", "z_dim"):
            integer(name, getattr(self, name), 1, MAX_SIZE)
        for name, low_open in (("lr", True), ("lr_final", True), ("clip_value", True), ("entropy_weight", False),
                               ("entropy_weight_final", False)):
            v = getattr(self, name)
            if v is not None or not name.endswith("_final"):  # a *_final of None: constant
                real(name, v, 0, low_open=low_open)
        check_bandwidth("bandwidth", self.bandwidth)
        one_of("on_nan", self.on_nan, ON_NAN_ACTIONS)
        for name in ("leave_one_out", "reuse_fake", "extragradient"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.gp != "":
            one_of("gp", self.gp, PENALTY_KINDS)
        real("gp_weight", self.gp_weight, 0)
        integer("gp_every", self.gp_every, 1, MAX_STEPS)
        real("consensus", self.consensus, 0)
        if self.simultaneous:
            what = " and ".join(n for n, on in (("extragradient", self.extragradient),
                                                (f"consensus {self.consensus:g}", self.consensus > 0)) if on)
            if self.d_steps != 1:
                raise ValueError(f"{what} steps both players at once: d_steps must be 1, got {self.d_steps}")
            if self.reuse_fake:
                raise ValueError(f"{what} steps both players at once on one fake batch: reuse_fake does not apply")
            if self.order != "d_first":
                raise ValueError(f"{what} steps both players at once: order {self.order!r} does not apply "
                                 "(leave the default, d_first)")

    @property
    def gp_scale(self) -> float:
        """w = gp_weight · (1/2 for R1 and R2, 1 for WGAN-GP) · gp_every: the penalty's weight where applied."""
        return self.gp_weight * (1.0 if self.gp == "wgan-gp" else 0.5) * self.gp_every

    def schedule(self, value: float, final: float | None, step: int) -> float:
        """Linear interpolation from ``value`` (step 0) to ``final`` (last step)."""
        if final is None or self.steps <= 1:
            return value
        f = min(step, self.steps - 1) / (self.steps - 1)
        return value + (final - value) * f
