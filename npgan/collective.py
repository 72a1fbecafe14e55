"""Differentiable collectives: Functions whose forward and backward talk to the other ranks
(:mod:`npgan.distributed`), and the synchronised batch norm built on them.

How gradients add up over ranks. Data-parallel training splits a batch of B samples into shares of n_r rows
(rank r). Each rank differentiates its own *share* s_r of the loss, and the gradients of the shares are summed
over the ranks (one Allreduce per network per step, :class:`npgan.gan.Trainer`). For that sum to be the
one-process gradient, the shares must add up to the one-process loss L, Σ_r s_r = L, and every path by which a
rank's parameters reach L must be counted exactly once:

* a mean over the batch, L = (1/B) Σ_i ℓ_i, is split as s_r = (n_r/B) · (1/n_r) Σ_{i∈r} ℓ_i (weights n_r/B, so
  an uneven split, 64 rows over 3 ranks as 22 + 21 + 21, is exact too);
* a quantity of the whole batch that every rank needs (batch norm's statistics) is a sum over ranks,
  S = Σ_r S_r, computed by :class:`AllReduceSum`. Every rank's share depends on S, so ∂(Σ_r' s_r')/∂S_r =
  Σ_r' ∂s_r'/∂S: the backward of the sum is the sum of the incoming gradients over ranks, the same Allreduce;
* a term computed from the whole batch gathered on every rank (the KDE entropy H of the generated batch) is
  computed identically on every rank and enters each share once, s_r = … − λH, while its gradient reaches only
  this rank's rows (:class:`GatherRows`: the backward takes this rank's rows of ∂H/∂x). Summed over ranks, the
  parameter gradients then hold ∂H/∂θ once.

Both collective Functions are linear, so their backward_graph is again a collective Function of the gradient
(AllReduceSum of gy; gy's rows), and anything written from them and npgan ops is differentiable to any order —
the R1 penalty differentiates D's backward again through :class:`SyncBatchNorm`'s. docs/math.md has the
derivation ("Data-parallel training").

On one process (``world().size == 1``) none of this is used: the trainer and the layers take their one-process
code paths (``npgan.nn.BatchNorm2d`` uses :class:`npgan.functional.BatchNorm`).
"""

from __future__ import annotations

from typing import Any

from . import ops
from .backend import get_array_module
from .distributed import World, world
from .ops import needed, per_channel_operand
from .tensor import Function, Tensor

__all__ = ["AllReduceSum", "all_reduce_sum", "GatherRows", "gather_rows", "SyncBatchNorm", "sync_batch_norm"]


class AllReduceSum(Function):
    """y = Σ_r x_r, the same array on every rank (x of any shape, equal on all ranks).

    Backward: the objective is Σ_r f_r(y), so ∂/∂x_r = Σ_r' ∂f_r'/∂y = Σ_r' gy_r': gx = AllReduceSum(gy), the
    same collective (the map is its own adjoint). backward_graph: AllReduceSum of the gradient Tensor, so the
    second derivative goes through it once more. Keeps nothing.
    """

    def __init__(self, comm: World):
        self.comm = comm

    def forward(self, x):
        return self.comm.sum(x)

    def backward(self, gy):
        return self.comm.sum(gy)

    def backward_graph(self, gy):
        return AllReduceSum(self.comm)(gy)


def all_reduce_sum(x: Tensor, comm: World | None = None) -> Tensor:
    """Σ over ranks of x (every rank gets the sum), differentiable (:class:`AllReduceSum`)."""
    return AllReduceSum(comm or world())(x if isinstance(x, Tensor) else Tensor(x))


class GatherRows(Function):
    """y = the ranks' x_r: (n_r, ...) stacked along axis 0 in rank order, (Σ n_r, ...), on every rank.

    For a consumer computed identically on every rank (the KDE entropy of the whole generated batch): each rank's
    share of the loss holds that term once, and the gradient this rank's parameters get from it is the part that
    flows through its own rows: gx_r = gy[lo_r:hi_r] (no communication; the exact adjoint of the gather would
    add the N identical gy of the ranks, counting the term N times). backward_graph: the same rows of the
    gradient Tensor (linear). Keeps lo, hi.
    """

    def __init__(self, comm: World):
        self.comm = comm

    def forward(self, x):
        y, self.lo, self.hi = self.comm.gather_rows(x)
        return y

    def backward(self, gy):
        return gy[self.lo:self.hi]

    def backward_graph(self, gy):
        return gy[self.lo:self.hi]


def gather_rows(x: Tensor, comm: World | None = None) -> Tensor:
    """The ranks' batches stacked in rank order on every rank; gradient: this rank's rows (:class:`GatherRows`)."""
    return GatherRows(comm or world())(x if isinstance(x, Tensor) else Tensor(x))


class SyncBatchNorm(Function):
    """Batch normalisation in training mode with the statistics of the whole batch over all ranks (PyTorch's
    SyncBatchNorm semantics): every rank normalises its rows with the mean and variance of all ranks' rows.

    x (n_r, C, *) handled as (n_r, C, M); Σ_r is over ranks, Σ over a rank's n_r·M values of a channel,
    m = Σ_r n_r·M the count of the whole batch (one integer Allreduce). Forward, two Allreduces of (C,) vectors —
    the one-process two-pass formula, so that float32 keeps the accuracy of npgan's BatchNorm (a single pass of
    Σx and Σx² would lose the variance to cancellation when |μ| ≫ σ):
        μ = Σ_r Σ x / m,   v = Σ_r Σ (x − μ)² / m,   s = 1/√(v + ε),   x̂ = (x − μ)·s,   y = γ x̂ + β
    Backward (gy_r = ∂s_r/∂y_r, this rank's share; one Allreduce of (gβ, gγ), 2C numbers):
        gβ_r = Σ gy,   gγ_r = Σ gy·x̂                       (this rank's shares: the trainer's bucket adds them)
        gβ = Σ_r gβ_r,   gγ = Σ_r gγ_r                       (the whole batch's, for gx)
        gx = a·gy − (a/m)·gβ − x̂·(a/m)·gγ,   a = γ s          (the one-process formula with whole-batch sums)
    Keeps x̂, s, γ and m.

    Double backward. backward_graph rebuilds μ, v, s, x̂ from x in npgan ops with :class:`AllReduceSum` for the
    sums over ranks, and forms gx, gγ_r, gβ_r by the formulas above, so the second pass differentiates through
    the statistics of every rank (the R1 penalty on a batch-norm critic, as in one process).
    """

    def __init__(self, eps: float, comm: World):
        self.eps, self.comm = eps, comm

    @staticmethod
    def _csum(a3):
        return a3.sum(axis=0).sum(axis=1)

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        M = 1
        for n in x.shape[2:]:
            M *= n
        x3 = x.reshape(x.shape[0], x.shape[1], M)
        full = per_channel_operand(x3)
        self.m = m = self.comm.sum_int(x3.shape[0] * M)
        if m <= 1:  # the same count on every rank: every rank raises
            raise ValueError(f"batch_norm: training needs more than 1 value per channel over all ranks, got {m}")
        mu = self.comm.sum(self._csum(x3)) / m
        xhat = x3 - full(mu)
        sq = xp.multiply(xhat, xhat)
        var = self.comm.sum(self._csum(sq)) / m
        self.batch_mean, self.batch_var = mu, var
        s = 1.0 / xp.sqrt(var + self.eps)
        xhat *= full(s.astype(xhat.dtype, copy=False))
        if xp.result_type(x, gamma, beta) == x.dtype:
            y = xp.multiply(xhat, full(gamma), out=sq)
        else:
            y = xhat * full(gamma)
        y += full(beta)
        self.xhat, self.s, self.gamma = xhat, s, gamma
        return y.reshape(x.shape)

    def backward(self, gy):
        xhat, s, gamma, m = self.xhat, self.s, self.gamma, self.m
        need = self.needs_grad
        gy3 = gy.reshape(xhat.shape)
        full = per_channel_operand(xhat)
        gbeta = self._csum(gy3)
        tmp = gy3 * xhat
        ggamma = self._csum(tmp)
        gx = None
        if need[0]:
            gbeta_all, ggamma_all = self.comm.sum_arrays([gbeta, ggamma.astype(gbeta.dtype, copy=False)])
            a = gamma * s
            gx = gy3 * full(a)
            gx -= xhat * full(a * ggamma_all / m)
            gx -= full(a * gbeta_all / m)
            gx = gx.reshape(gy.shape)
        return gx, (ggamma if need[1] else None), (gbeta if need[2] else None)

    def backward_graph(self, gy):
        x, gamma, _ = self.inputs
        N, C = x.shape[0], x.shape[1]
        M = 1
        for k in x.shape[2:]:
            M *= k
        m = float(self.m)
        x3, gy3 = ops.reshape(x, (N, C, M)), ops.reshape(gy, (N, C, M))
        mu = AllReduceSum(self.comm)(ops.sum(x3, axis=(0, 2), keepdims=True)) / m
        d = x3 - mu
        v = AllReduceSum(self.comm)(ops.sum(d * d, axis=(0, 2), keepdims=True)) / m
        s = ops.pow(v + self.eps, -0.5)
        xhat = d * s
        gbeta = ops.sum(gy3, axis=(0, 2), keepdims=True)
        ggamma = ops.sum(gy3 * xhat, axis=(0, 2), keepdims=True)

        def gx():
            gbeta_all = AllReduceSum(self.comm)(gbeta)
            ggamma_all = AllReduceSum(self.comm)(ggamma)
            a = ops.reshape(gamma, (1, C, 1)) * s
            return ops.reshape((a / m) * (m * gy3 - gbeta_all - xhat * ggamma_all), x.shape)

        return (needed(self, 0, gx), needed(self, 1, lambda: ops.reshape(ggamma, (C,))),
                needed(self, 2, lambda: ops.reshape(gbeta, (C,))))


def sync_batch_norm(x: Tensor, running_mean: Any, running_var: Any, weight: Tensor, bias: Tensor,
                    momentum: float | None = 0.1, eps: float = 1e-5, num_batches_tracked: Any = None,
                    comm: World | None = None) -> Tensor:
    """Batch normalisation of x (n_r, C, *) with the statistics of all ranks' rows (:class:`SyncBatchNorm`), and the
    running statistics updated as :func:`npgan.functional.batch_norm` does in training, from the whole batch's
    mean and unbiased variance (m/(m − 1) with m the whole batch's count), so they are equal on every rank.

    ``weight``/``bias``: the affine parameters (C,); ``running_mean``/``running_var``: the buffers or None.
    """
    comm = comm or world()
    fn = SyncBatchNorm(float(eps), comm)
    y = fn(x, weight, bias)
    if running_mean is not None:
        if momentum is None and num_batches_tracked is None:
            raise ValueError("batch_norm: momentum=None (cumulative average) needs num_batches_tracked")
        if num_batches_tracked is not None:
            num_batches_tracked += 1
        f = (1.0 / float(num_batches_tracked)) if momentum is None else momentum
        m = fn.m
        running_mean *= 1 - f
        running_mean += f * fn.batch_mean.astype(running_mean.dtype, copy=False)
        running_var *= 1 - f
        running_var += (f * m / (m - 1)) * fn.batch_var.astype(running_var.dtype, copy=False)
    return y
