"""The alternating GAN training loop.

One generator step, with ``order="d_first"`` (the default):

1. ``d_steps`` times: a real batch x and noise z ~ N(0, I); fake = G(z) with no graph (detached);
   L_D = discriminator_loss(D(x), D(fake)), plus a gradient penalty when ``gp`` is set (below); D's gradients,
   one optimizer step (and weight clipping for the Wasserstein loss, unless the penalty is WGAN-GP's);
2. fresh noise z'; L_G = generator_loss(D(G(z')), fake=G(z'), entropy_weight=λ) through the just-updated D;
   G's gradients only (D's parameters are frozen during this pass, so none of D's weight gradients are
   computed); one optimizer step.

``order="g_first"`` swaps the two phases.

Simultaneous steps (``extragradient`` and/or ``consensus`` γ > 0 in :class:`TrainConfig`; docs/math.md §16). Both
players move at once, from one batch: real x, noise z, fake = G(z) kept in the graph, and the step's game

    L_G = generator_loss(D(fake), fake=fake, entropy_weight=λ),   L_D = discriminator_loss(D(x), D(fake)) [+ w·P],

with the field v = (∇_θ L_G, ∇_φ L_D) (the penalty lazily as above, its D steps being the steps). The gradient
each optimizer follows is g = v, or with consensus g = v + γ·Jᵀv, Jᵀv = ∇_x ½‖v‖², where v is recorded with
``create_graph=True`` (fake not detached in L_D, so that Jᵀv has its θ-part ∂(½‖v_φ‖²)/∂θ) and ½‖v‖² is
differentiated once more. With extragradient, the optimizers first take one step with g(x_k) to the look-ahead
x_{k+½}; g is evaluated there on the same batch (the same x, z and, for WGAN-GP, the same interpolation weights);
the parameters go back to x_k and the optimizers step again with g(x_{k+½}). With Adam that is Extra-Adam (Gidel et
al. 2019, Algorithm 4): both steps are Adam steps and both update the moments and the step count. The look-ahead
is never a checkpoint's weights: the step ends at x_{k+1}. Weight clipping (Wasserstein without WGAN-GP) follows
each of the two steps (projected extragradient). The history records the losses, D(x), D(G(z)), the entropy and
the penalty at x_k, the norms of the gradients the optimizers followed, and one more column, ``field_norm`` =
‖v(x_k)‖ (:data:`SIMULTANEOUS_FIELDS`): a run without these options writes exactly the columns and bytes it
wrote before.

``reuse_fake=True``: one G forward a step instead of two, as PyTorch's DCGAN example trains. With d_first the
last D step keeps the graph of its fake = G(z) (D still sees it detached) and the G step computes
L_G = generator_loss(D(fake)) from that same fake, through the just-updated D, instead of drawing z'; with
g_first the G step's fake, detached, is the first D step's fake (made by G before its update).

Batch norm: both networks stay in training mode during training; samples are drawn without touching the
running statistics (:meth:`Trainer.sample`).

Gradient penalty (``gp`` = "r1", "r2" or "wgan-gp", :mod:`npgan.gan.penalties`; lazy regularisation as StyleGAN2).
D steps are numbered j = 0, 1, 2, ... over the run (j = step·d_steps + i for the i-th D step of generator step
``step``, so a resumed run needs nothing more in its checkpoint); on the D steps with j mod k = 0
(k = ``gp_every``) the loss whose gradient D follows is

    L_D + w·P,    w = gp_weight · c · k,    c = 1/2 for R1 and R2 (Mescheder's γ/2), 1 for WGAN-GP (λ),

where P is the unweighted penalty (``gradient_penalty(D, x, fake, gp)``): one backward through both, the
divergence guard checks L_D + w·P. Scaling the weight by k keeps the penalty's average strength that of an
every-step penalty (StyleGAN2's lazy R1, k = 16). The history's ``loss_d`` is L_D alone (comparable with runs
without a penalty) and ``gp`` is P of the step's last penalised D step (NaN on steps without one).

Every step records loss_d, loss_g, D(x) and D(G(z)) (mean sigmoid of D's output), the KDE entropy of G's batch
(when λ > 0) and the gradient norms of G and D as device scalars; they reach the host only in
:meth:`Trainer.flush`, which the caller runs at its logging interval.

Data-parallel training (:mod:`npgan.distributed`: the process was started by an MPI launcher, N ranks). The step is
the one-process step: every rank draws the whole batch's noise and data indices from the same seeded stream (so the
random stream stays the one-process stream) and keeps its rows [lo, hi) of the batch (``World.rows``: sizes differ
by at most one). Each rank backpropagates its share s_r = (n_r/B)·L_r of a loss that is a mean over the batch (the
losses, the penalties, D(x)), so that Σ_r s_r is the one-process loss; the entropy term is computed from the
generated batch gathered on every rank and enters each share once (its gradient flows to this rank's rows only,
:class:`npgan.collective.GatherRows`); batch norm in training mode uses the whole batch's statistics
(:class:`npgan.collective.SyncBatchNorm`). The gradients of a network, with the shares of the step's scalars
(loss, penalty, D(x), D(G(z))) appended, are then summed over the ranks by one Allreduce of one flat bucket per
optimizer update. Every rank then holds the same gradient and the same scalars, so the divergence guard takes the
same decision on every rank without another message, and the optimizers keep the replicas equal. WGAN-GP's ε is
drawn for the whole batch and sliced (``gradient_penalty(..., part=...)``). docs/math.md ("Data-parallel
training") shows that the summed gradient is the one-process gradient in exact arithmetic.

Divergence guard. Before every optimizer step the loss and the gradient norm of the network about to be updated
are checked together: ``isfinite(loss) & isfinite(‖g‖)`` is one device reduction over two scalars and one bool
brought to the host (the gradient norm is computed for the history anyway; a nan or inf anywhere in a gradient
makes the norm non-finite). That is 1 + d_steps host syncs per step (two with the defaults: D's update must land
before G's loss is computed through D, so the two checks cannot be merged without computing everything twice).
On a CPU the check costs a few microseconds per step; on a GPU each sync waits for the queued kernels.
A failed check zeroes the gradients and leaves every parameter, optimizer state and buffer as the previous update
left it; then ``config.on_nan`` decides: "stop" raises :class:`~npgan.errors.DivergenceError` naming the network,
the loss and the step; "skip" drops the rest of this step (the data and noise of the step are consumed, the step
counter advances, the step's row records the non-finite values and ``skipped`` counts it); "rollback" raises
DivergenceError too, and the caller that owns the checkpoints (:meth:`npgan.run.experiment.Run.train`) restores the
last checkpoint and lowers the learning rate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import backend, distributed, parallel
from ..autograd import grad
from ..collective import all_reduce_sum, gather_rows
from ..errors import DivergenceError
from ..functional import stable_sigmoid
from ..kde import kde_entropy
from ..ops import concatenate
from ..optim import Optimizer
from ..tensor import Tensor, no_grad
from .config import TrainConfig
from .losses import discriminator_loss, generator_loss
from .penalties import check_penalty, gradient_penalty

__all__ = ["TrainConfig", "Trainer", "HISTORY_FIELDS", "SIMULTANEOUS_FIELDS"]

#: the scalars a step records on the device (brought to the host by :meth:`Trainer.flush`)
_DEVICE_FIELDS = ("loss_d", "loss_g", "d_x", "d_g_z", "entropy", "grad_norm_g", "grad_norm_d", "gp")

#: the columns of history.csv; ``gp`` (the gradient penalty, NaN on steps without one) came last, so that the
#: files written before it are a prefix of today's (:func:`npgan.run.history.read_history` fills it with NaN)
HISTORY_FIELDS = ("step", "loss_d", "loss_g", "d_x", "d_g_z", "entropy", "grad_norm_g", "grad_norm_d", "lr",
                  "entropy_weight", "gp")
#: the column a run with simultaneous steps (extragradient, consensus) appends to history.csv: ‖v(x_k)‖, the norm of
#: the game's vector field at the step's point; other runs do not have it
SIMULTANEOUS_FIELDS = ("field_norm",)


def _grad_norm(params: list[Tensor]) -> Any:
    """√(Σ‖g‖²) over the parameters' gradients, as a device scalar."""
    total = None
    for p in params:
        if p.grad is not None:
            s = (p.grad * p.grad).sum()
            total = s if total is None else total + s
    if total is None:
        return backend.np.float64(0.0)
    return backend.get_array_module(total).sqrt(total)


class _NonFinite(Exception):
    """Internal: a guard failed in one phase (turned into a skip or a DivergenceError by Trainer.step)."""

    def __init__(self, network: str, loss: str, values: dict[str, float]) -> None:
        super().__init__(network, loss)
        self.network, self.loss, self.values = network, loss, values


class Trainer:
    """Runs GAN steps on G and D with their optimizers.

    Args:
        G, D: modules; G maps (B, z_dim) noise to samples, D maps samples to (B, 1) outputs (logits for the
            BCE losses).
        opt_g, opt_d: optimizers over G's and D's parameters.
        real_batch: ``real_batch(step) -> Tensor`` of ``batch_size`` real samples; it must be a pure function of
            the step and npgan's seeded generator, so that a resumed run draws the same batches.
        config: :class:`TrainConfig`.
        log: where the guard reports skipped steps (one line each); default: nowhere (``skipped`` counts them).

    ``lr_scale`` multiplies the scheduled learning rate (1.0; a rollback lowers it); ``skipped`` counts the steps
    the divergence guard skipped.
    """

    def __init__(self, G: Any, D: Any, opt_g: Optimizer, opt_d: Optimizer,
                 real_batch: Callable[[int], Tensor], config: TrainConfig,
                 log: Callable[[str], None] | None = None) -> None:
        config.validate()
        if config.gp:
            check_penalty(D, config.gp)  # a BatchNorm critic under WGAN-GP: refused before anything runs
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.real_batch = real_batch
        self.cfg = config
        self.log = log
        self.step_count = 0
        self.lr_scale = 1.0
        self.skipped = 0
        self._fake: Tensor | None = None  # reuse_fake: the fake batch the next phase of this step shares
        self._pending: list[tuple[int, list[Any]]] = []
        self._g_params = list(G.parameters())
        self._d_params = list(D.parameters())
        self.world = distributed.world()
        self._part: tuple[int, int] | None = None  # this rank's rows of each batch (several processes)
        self._share = 1.0                           # n_r / B, the weight of this rank's share of a mean
        rows = config.batch_size
        if self.world.size > 1:
            lo, hi = self.world.rows(config.batch_size)
            if hi <= lo:
                raise ValueError(f"batch_size {config.batch_size} is smaller than the number of processes "
                                 f"({self.world.size}): every process needs at least one sample of the batch")
            self._part, self._share, rows = (lo, hi), (hi - lo) / config.batch_size, hi - lo
        self._gemm_work = parallel.gemm_work((G, D), rows)  # small: one BLAS thread (fit_blas)
        extra = SIMULTANEOUS_FIELDS if config.simultaneous else ()
        self._device_fields = _DEVICE_FIELDS + extra
        #: the columns of this run's history.csv: HISTORY_FIELDS, then field_norm with simultaneous steps
        self.history_fields = HISTORY_FIELDS + extra

    # ------------------------------------------------------------------ one step
    def _noise(self, n: int) -> Tensor:
        d = backend.get_default_dtype()
        return Tensor(backend.rng().standard_normal((n, self.cfg.z_dim), dtype=d))

    def _rows(self, t: Tensor) -> Tensor:
        """This rank's rows of a whole batch (the batch itself in one process)."""
        return t if self._part is None else Tensor(t.data[self._part[0]:self._part[1]])

    def _batch_noise(self) -> Tensor:
        """The step's noise: the whole batch drawn (every rank draws the same), this rank's rows kept."""
        return self._rows(self._noise(self.cfg.batch_size))

    def _sum_over_ranks(self, params: list[Tensor], values: list[Any]) -> list[Any]:
        """Several processes: Σ over ranks of the parameters' gradients (replaced by the sums) and of the shares
        n_r/B · v of the scalars ``values``, all in one Allreduce of one flat bucket; returns the summed scalars."""
        with_grad = [p for p in params if p.grad is not None]
        grads = [p.grad for p in with_grad]
        xp = backend.get_array_module(*grads, *values)
        dt = grads[0].dtype if grads else backend.get_default_dtype()
        shares = [xp.asarray(v * self._share, dtype=dt).reshape(1) for v in values]
        summed = self.world.sum_arrays(grads + shares)
        for p, g in zip(with_grad, summed):
            p.grad = g
        return [v.reshape(()) for v in summed[len(grads):]]

    def _set_lr(self, lr: float) -> None:
        for opt in (self.opt_g, self.opt_d):
            for g in opt.param_groups:
                g["lr"] = lr

    @staticmethod
    def _guard(network: str, loss_name: str, loss: Any, gn: Any, params: list[Tensor],
               more: dict[str, Any] | None = None) -> None:
        """One combined finiteness check of a loss and its gradient norm (one bool to the host).

        ``loss + ‖g‖`` is finite exactly when both are (or a sum beyond the float range, itself a divergence).
        On failure the gradients are dropped so that nothing non-finite lingers, and _NonFinite is raised.
        """
        xp = backend.get_array_module(loss, gn)
        if bool(xp.isfinite(loss + gn)):
            return
        for p in params:
            p.grad = None
        values = {loss_name: float(loss), f"grad_norm_{network.lower()}": float(gn)}
        values.update({k: float(v) for k, v in (more or {}).items()})
        raise _NonFinite(network, loss_name, values)

    def _d_phase(self, rec: dict[str, Any]) -> None:
        cfg = self.cfg
        for i in range(cfg.d_steps):
            real = self._rows(self.real_batch(self.step_count))
            if self._fake is not None and cfg.order == "g_first" and i == 0:  # the G step's, made before it
                fake, self._fake = self._fake.detach(), None
            elif cfg.reuse_fake and cfg.order == "d_first" and i == cfg.d_steps - 1:
                self._fake = self.G(self._batch_noise())  # its graph is kept for the G step
                fake = self._fake.detach()
            else:
                with no_grad():
                    fake = self.G(self._batch_noise())
            d_real = self.D(real)
            d_fake = self.D(fake)
            loss_d = total = discriminator_loss(d_real, d_fake, cfg.loss)
            penalty = None
            if cfg.gp and (self.step_count * cfg.d_steps + i) % cfg.gp_every == 0:  # lazy: every k-th D step
                part = None if self._part is None else (*self._part, cfg.batch_size)
                penalty = gradient_penalty(self.D, real, fake, cfg.gp, part=part)
                total = loss_d + cfg.gp_scale * penalty
            self.opt_d.zero_grad()
            values = [loss_d.data, total.data, stable_sigmoid(d_real.data).mean(), stable_sigmoid(d_fake.data).mean()]
            values += [penalty.data] if penalty is not None else []
            if self._part is None:
                total.backward()
            else:  # this rank's share; the gradients and the scalars summed over the ranks
                (total * self._share).backward()
                values = self._sum_over_ranks(self._d_params, values)
            more = None
            if penalty is not None:
                rec["gp"] = values[4]
                more = {"gp": values[4]}  # the guard's loss_d is then L_D + w·P
            gn_d = _grad_norm(self._d_params)
            rec.update(loss_d=values[0], grad_norm_d=gn_d, d_x=values[2], d_g_z=values[3])
            self._guard("D", "loss_d", values[1], gn_d, self._d_params, more)
            self.opt_d.step()
            if cfg.loss == "wasserstein" and cfg.gp != "wgan-gp":
                c = cfg.clip_value
                for p in self._d_params:
                    backend.get_array_module(p.data).clip(p.data, -c, c, out=p.data)

    def _g_phase(self, lam: float, rec: dict[str, Any] | None = None) -> None:
        cfg = self.cfg
        rec = {} if rec is None else rec
        for p in self._d_params:
            p.requires_grad = False
        try:
            if self._fake is not None:  # d_first with reuse_fake: the last D step's fake
                fake, self._fake = self._fake, None
            else:
                fake = self.G(self._batch_noise())
                if cfg.reuse_fake and cfg.order == "g_first":
                    self._fake = fake  # for the first D step (detached there)
            if self._part is None:
                loss_g, entropy = generator_loss(self.D(fake), cfg.loss, fake=fake, entropy_weight=lam,
                                                 bandwidth=cfg.bandwidth, leave_one_out=cfg.leave_one_out)
                self.opt_g.zero_grad()
                loss_g.backward()
                loss_value = loss_g.data
            else:
                loss_value, entropy = self._g_share_backward(fake, lam)
        finally:
            for p in self._d_params:
                p.requires_grad = True
        gn_g = _grad_norm(self._g_params)
        rec.update(loss_g=loss_value, grad_norm_g=gn_g, entropy=(entropy.data if entropy is not None else None))
        self._guard("G", "loss_g", loss_value, gn_g, self._g_params)
        self.opt_g.step()

    def _g_share_backward(self, fake: Tensor, lam: float) -> tuple[Any, Tensor | None]:
        """Several processes: G's gradient from this rank's share (n_r/B)·L_adv − λ·H, H the KDE entropy of the
        generated batch gathered from every rank (the same on each; its gradient reaches this rank's rows), summed
        over the ranks; returns (the whole batch's L_G, H or None)."""
        cfg = self.cfg
        adv, _ = generator_loss(self.D(fake), cfg.loss)
        share = adv * self._share
        entropy = None
        if lam > 0:
            entropy = kde_entropy(gather_rows(fake, self.world), bandwidth=cfg.bandwidth,
                                  leave_one_out=cfg.leave_one_out)
            share = share - entropy * lam
        self.opt_g.zero_grad()
        share.backward()
        adv_all, = self._sum_over_ranks(self._g_params, [adv.data])
        return (adv_all - entropy.data * lam if entropy is not None else adv_all), entropy

    # ------------------------------------------------------------------ simultaneous steps
    def _game_losses(self, real: Tensor, z: Tensor, lam: float, penalise: bool,
                     rec: dict[str, Any]) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """(L_G, L_D + w·P) of the step's game at the current parameters on the batch (real, z), and the means over
        this process's rows of the step's scalars (loss_d, L_D + w·P as ``total``, d_x, d_g_z, gp, and as ``adv``
        L_G in one process, its adversarial part with several); the entropy goes to ``rec``. fake = G(z) keeps its
        graph in both losses (module docstring). With several processes the two losses are this rank's shares, as
        in the alternating phases: (n_r/B)·L_adv − λ·H with H the KDE entropy of the batch gathered from every
        rank, and (n_r/B)·(L_D + w·P) with WGAN-GP's ε drawn for the whole batch and sliced; :meth:`_sum_field`
        sums their gradients and the scalars over the ranks."""
        cfg = self.cfg
        fake = self.G(z)
        d_real = self.D(real)
        d_fake = self.D(fake)
        if self._part is None:
            loss_g, entropy = generator_loss(d_fake, cfg.loss, fake=fake, entropy_weight=lam,
                                             bandwidth=cfg.bandwidth, leave_one_out=cfg.leave_one_out)
            adv = loss_g
        else:
            adv, _ = generator_loss(d_fake, cfg.loss)
            loss_g, entropy = adv * self._share, None
            if lam > 0 and cfg.consensus > 0:  # Jᵀv differentiates the entropy's gradient once more: exact adjoint
                entropy = kde_entropy(self._gather_summed(fake), bandwidth=cfg.bandwidth,
                                      leave_one_out=cfg.leave_one_out)
                loss_g = loss_g - entropy * (lam / self.world.size)
            elif lam > 0:
                entropy = kde_entropy(gather_rows(fake, self.world), bandwidth=cfg.bandwidth,
                                      leave_one_out=cfg.leave_one_out)
                loss_g = loss_g - entropy * lam
        loss_d = total = discriminator_loss(d_real, d_fake, cfg.loss)
        means = {"loss_d": loss_d.data, "d_x": stable_sigmoid(d_real.data).mean(),
                 "d_g_z": stable_sigmoid(d_fake.data).mean(), "adv": adv.data}
        if penalise:
            part = None if self._part is None else (*self._part, cfg.batch_size)
            penalty = gradient_penalty(self.D, real, fake, cfg.gp, part=part)
            total = loss_d + cfg.gp_scale * penalty
            means["gp"] = penalty.data
        means["total"] = total.data
        rec["entropy"] = entropy.data if entropy is not None else None
        return loss_g, (total if self._part is None else total * self._share), means

    def _gather_summed(self, fake: Tensor) -> Tensor:
        """Several processes, consensus: the whole generated batch X on every rank as Σ_r P_r x_r (P_r puts rank
        r's rows in place, zeros elsewhere; :func:`npgan.collective.all_reduce_sum`), so X is the gathered batch
        exactly and its backward is the gather's exact adjoint: gx_r = (Σ_r' gy_r')[lo_r:hi_r]. The entropy then
        enters each share as (λ/N)·H. :class:`npgan.collective.GatherRows` takes this rank's rows of gy instead,
        which is right only for a consumer computed identically on every rank (λH in every share) — not for
        consensus's second backward, whose consumer ⟨v_r, v⟩ holds this rank's rows of ∂H/∂X and differs between
        ranks: there the rows' gradients from the other ranks' consumers would be lost (docs/math.md §16)."""
        lo, hi = self._part
        xp = backend.get_array_module(fake.data)
        parts = [fake]
        if lo > 0:
            parts.insert(0, Tensor(xp.zeros((lo, *fake.shape[1:]), dtype=fake.data.dtype)))
        if hi < self.cfg.batch_size:
            parts.append(Tensor(xp.zeros((self.cfg.batch_size - hi, *fake.shape[1:]), dtype=fake.data.dtype)))
        return all_reduce_sum(concatenate(parts) if len(parts) > 1 else fake, self.world)

    def _sum_field(self, lam: float, means: dict[str, Any], rec: dict[str, Any]) -> tuple[Any, Any]:
        """The gradient-averaging hook of a simultaneous step, the one the alternating phases use
        (:meth:`_sum_over_ranks`): with several processes the parameters' ``.grad`` (each rank's share of the
        field) and the shares of the step's scalars are summed over the ranks in one Allreduce. Records the
        whole batch's scalars in ``rec``; returns (L_G, L_D + w·P) for the guard."""
        if self._part is not None:
            keys = list(means)
            means = dict(zip(keys, self._sum_over_ranks(self._g_params + self._d_params, [means[k] for k in keys])))
        loss_g = means["adv"]  # one process: L_G itself, the entropy term included
        if self._part is not None and rec.get("entropy") is not None:
            loss_g = loss_g - rec["entropy"] * lam
        rec.update(loss_d=means["loss_d"], loss_g=loss_g, d_x=means["d_x"], d_g_z=means["d_g_z"])
        if "gp" in means:
            rec["gp"] = means["gp"]
        return loss_g, means["total"]

    def _consensus_grad(self, v: list[Tensor | None], field: list[Any]) -> list[Any]:
        """Jᵀv = ∇_x ½‖v‖² for the recorded field (``create_graph=True``): one more backward pass through v's graph
        (docs/math.md §16), as the gradient of Σ_i ⟨v_i(x), c_i⟩ at the constant c = v. With several processes v is
        the sum of the ranks' shares v_r, so Σ_r ⟨v_r(x), c⟩ is ⟨v(x), c⟩ and the ranks' gradients are summed by
        the same hook as every other gradient (:meth:`_sum_over_ranks`). One array per parameter, G's then D's."""
        params = self._g_params + self._d_params
        inner = None
        for g, c in zip(v, field):
            if g is not None and g.requires_grad:
                s = (g * Tensor(c)).sum()
                inner = s if inner is None else inner + s
        if inner is None:
            jtv: list[Any] = [None] * len(params)
        else:
            jtv = [None if g is None else g.data for g in grad(inner, params, allow_unused=True)]
        if self._part is not None:
            for p, c in zip(params, jtv):
                p.grad = c
            self._sum_over_ranks(params, [])
            jtv = [p.grad for p in params]
        return jtv

    def _simultaneous_grads(self, real: Tensor, z: Tensor, lam: float, penalise: bool,
                            rec: dict[str, Any]) -> tuple[Any, Any, Any]:
        """Set every parameter's ``.grad`` to the gradient its optimizer follows at the current point: v, or
        v + γ·Jᵀv with consensus; returns (L_G, L_D + w·P, ‖v‖) as device scalars. With several processes both v
        and Jᵀv are summed over the ranks by the hook of the alternating phases (:meth:`_sum_field`,
        :meth:`_consensus_grad`), so the extrapolation and the update of extragradient, and consensus's term, are
        the one-process gradients."""
        cfg = self.cfg
        gamma = float(cfg.consensus)
        params = self._g_params + self._d_params
        loss_g, loss_d, means = self._game_losses(real, z, lam, penalise, rec)
        vg = list(grad(loss_g, self._g_params, retain_graph=True, create_graph=gamma > 0, allow_unused=True))
        vd = list(grad(loss_d, self._d_params, retain_graph=gamma > 0, create_graph=gamma > 0, allow_unused=True))
        v = vg + vd
        for p, g in zip(params, v):
            p.grad = None if g is None else g.data
        value_g, value_d = self._sum_field(lam, means, rec)
        field = [p.grad for p in params]
        xp = backend.get_array_module(loss_g.data)
        sq = sum(((g * g).sum() for g in field if g is not None), xp.zeros((), loss_g.dtype))
        if gamma > 0:
            jtv = self._consensus_grad(v, field)
            for p, g, c in zip(params, field, jtv):
                if g is None and c is None:
                    p.grad = None
                    continue
                g = xp.zeros_like(p.data) if g is None else g
                p.grad = g if c is None else g + gamma * c
        return value_g, value_d, xp.sqrt(sq)

    def _guard_both(self, loss_g: Any, loss_d: Any, rec: dict[str, Any]) -> None:
        """The divergence guard of a simultaneous step, D first then G (``rec`` gets the gradient norms)."""
        gn_d, gn_g = _grad_norm(self._d_params), _grad_norm(self._g_params)
        rec.update(grad_norm_d=gn_d, grad_norm_g=gn_g)
        more = {"gp": rec["gp"]} if "gp" in rec else None
        try:
            self._guard("D", "loss_d", loss_d, gn_d, self._d_params, more)
        except _NonFinite:
            for p in self._g_params:
                p.grad = None
            raise
        self._guard("G", "loss_g", loss_g, gn_g, self._g_params)

    def _optimizer_steps(self) -> None:
        """Both optimizers' steps with the gradients set, then D's weight clipping where the loss asks for it."""
        cfg = self.cfg
        self.opt_d.step()
        self.opt_g.step()
        if cfg.loss == "wasserstein" and cfg.gp != "wgan-gp":
            c = cfg.clip_value
            for p in self._d_params:
                backend.get_array_module(p.data).clip(p.data, -c, c, out=p.data)

    def _extrapolate(self) -> tuple[list[Any], list[dict[str, Any]]]:
        """The look-ahead of extragradient: from x_k, one step of each optimizer with the gradients set (those at
        x_k) to x_{k+½} (moments updated: Extra-Adam). Returns x_k and the optimizers' states before the step,
        which :meth:`_restore` puts back."""
        params = self._g_params + self._d_params
        saved = ([p.data.copy() for p in params], [self.opt_g.state_dict(), self.opt_d.state_dict()])
        self._optimizer_steps()
        return saved

    def _restore(self, x: list[Any], states: list[dict[str, Any]] | None = None) -> None:
        """The parameters back to ``x`` (in place), and the optimizers to ``states`` when given."""
        for p, a in zip(self._g_params + self._d_params, x):
            p.data[...] = a
        if states is not None:
            self.opt_g.load_state_dict(states[0])
            self.opt_d.load_state_dict(states[1])

    def _simultaneous_step(self, lam: float, rec: dict[str, Any]) -> None:
        """One simultaneous step of both players: plain (consensus alone) or extragradient (module docstring)."""
        cfg = self.cfg
        real = self._rows(self.real_batch(self.step_count))
        z = self._batch_noise()
        penalise = bool(cfg.gp) and self.step_count % cfg.gp_every == 0  # d_steps = 1: the D steps are the steps
        rng = backend.get_rng_state() if penalise and cfg.gp == "wgan-gp" and cfg.extragradient else None
        loss_g, loss_d, norm = self._simultaneous_grads(real, z, lam, penalise, rec)
        rec["field_norm"] = norm
        self._guard_both(loss_g, loss_d, rec)
        if not cfg.extragradient:
            self._optimizer_steps()
            return
        x_k, states = self._extrapolate()
        try:
            if rng is not None:
                backend.set_rng_state(rng)  # the same interpolation weights at the look-ahead
            ahead: dict[str, Any] = {}
            loss_g, loss_d, _ = self._simultaneous_grads(real, z, lam, penalise, ahead)
            self._guard_both(loss_g, loss_d, ahead)
        except _NonFinite:
            self._restore(x_k, states)  # nothing moved: x_k and the optimizers' states of before the step
            raise
        rec.update(grad_norm_d=ahead["grad_norm_d"], grad_norm_g=ahead["grad_norm_g"])
        self._restore(x_k)
        self._optimizer_steps()

    def step(self) -> bool:
        """One generator step and its ``d_steps`` discriminator steps; records the step's scalars.

        Returns True, or False when the divergence guard skipped (part of) the step (``on_nan="skip"``); raises
        :class:`~npgan.errors.DivergenceError` for "stop" and "rollback" (``step_count`` is not advanced).
        """
        cfg, t = self.cfg, self.step_count
        lr = cfg.schedule(cfg.lr, cfg.lr_final, t) * self.lr_scale
        lam = cfg.schedule(cfg.entropy_weight, cfg.entropy_weight_final, t)
        self._set_lr(lr)
        self.G.train()
        self.D.train()
        rec: dict[str, Any] = {}
        try:  # overflow/invalid warnings are not printed: the guard reports a divergence in one line instead
            with backend.np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                    parallel.fit_blas(self._gemm_work):
                if cfg.simultaneous:
                    self._simultaneous_step(lam, rec)
                elif cfg.order == "d_first":
                    self._d_phase(rec)
                    self._g_phase(lam, rec)
                else:
                    self._g_phase(lam, rec)
                    self._d_phase(rec)
        except _NonFinite as bad:
            vals = ", ".join(f"{k} = {v!r}" for k, v in bad.values.items())
            what = f"step {t + 1}: non-finite {bad.loss} or gradient of {bad.network} ({vals})"
            if cfg.on_nan != "skip":
                was = "neither G nor D was updated" if cfg.simultaneous else f"{bad.network} was not updated"
                raise DivergenceError(f"{what}; {was} by this step", step=t + 1,
                                      network=bad.network, loss=bad.loss, values=bad.values) from None
            self.skipped += 1
            if self.log is not None and cfg.simultaneous:
                self.log(f"{what}; skipped the step, both players' updates (on_nan = skip)")
            elif self.log is not None:
                self.log(f"{what}; skipped the update of {bad.network}"
                         f"{' and the rest of the step' if (cfg.order == 'd_first') == (bad.network == 'D') else ''}"
                         " (on_nan = skip)")
            self._record(t + 1, rec, lr, lam)
            self.step_count += 1
            return False
        finally:
            self._fake = None  # (a skipped phase may leave one, with its graph)
        self._record(t + 1, rec, lr, lam)
        self.step_count += 1
        return True

    def _record(self, step: int, rec: dict[str, Any], lr: float, lam: float) -> None:
        self._pending.append((step, [rec.get(k) for k in self._device_fields] + [lr, lam]))

    # ------------------------------------------------------------------ host side
    def flush(self) -> list[dict[str, float]]:
        """Move the recorded scalars of the steps since the last flush to the host (one transfer) as rows."""
        if not self._pending:
            return []
        n = len(self._device_fields)
        xp = backend.get_array_module(*[v for _, vals in self._pending for v in vals[:n] if v is not None])
        nan = float("nan")
        cols = []
        for _, vals in self._pending:
            cols.append([xp.asarray(v if v is not None else nan, dtype=backend.float64) for v in vals[:n]])
        host = backend.to_numpy(xp.stack([xp.stack(c) for c in cols]))
        rows = []
        for (step, vals), h in zip(self._pending, host):
            row = {"step": step}
            for name, v in zip(self._device_fields, h):
                row[name] = float(v)
            row["lr"], row["entropy_weight"] = float(vals[n]), float(vals[n + 1])
            rows.append({k: row[k] for k in self.history_fields})
        self._pending = []
        return rows

    def sample(self, z: Tensor | None = None, n: int = 64, batch_stats: bool = True) -> Tensor:
        """G's samples for noise ``z`` (or ``n`` fresh draws), without a graph and without changing any state.

        With ``batch_stats`` batch norm uses the statistics of this batch (as during training); the running
        statistics and ``num_batches_tracked`` are restored afterwards. Otherwise G runs in eval mode. With several
        processes it is still this process's computation alone (the one-process result for ``z``; no collective).
        """
        if z is None:
            z = self._noise(n)
        saved = [(m, k, b.copy()) for m in self.G.modules() for k, b in m._buffers.items() if b is not None]
        was = self.G.training
        self.G.train(batch_stats)
        try:
            with no_grad(), distributed.local():  # one rank's computation: batch norm on this batch alone
                out = self.G(z)
        finally:
            self.G.train(was)
            for m, k, b in saved:
                m._buffers[k][...] = b
        return out
