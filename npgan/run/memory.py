"""How much memory one training step needs, checked before training starts.

:func:`estimate_step_bytes` measures the activations of G and D with one forward pass of a 2-sample batch (eval
mode, no graph, no state change) and scales them to the batch; :func:`check_memory` compares the estimate with
what :func:`available_memory` reports and raises :class:`~npgan.errors.InsufficientMemoryError`, naming the
largest batch size that fits, before anything is trained or written.
"""

from __future__ import annotations

from typing import Any

from .. import backend, nn
from ..errors import InsufficientMemoryError
from ..gan.config import TrainConfig
from ..tensor import Tensor, no_grad
from .machine import available_memory, format_bytes

__all__ = ["estimate_step_bytes", "check_memory", "available_memory", "check_model_size", "traced_peak"]


def _layer_bytes(net: nn.Module, x: Tensor) -> tuple[int, Tensor]:
    """Bytes of the arrays one forward pass of ``net`` on ``x`` makes (each layer's output, plus the column
    matrix of a convolution), and the output. Runs in eval mode without a graph: no state changes."""
    mods = list(net._modules.values()) if isinstance(net, nn.Sequential) else [net]
    total = 0
    with no_grad():
        h = x
        for m in mods:
            out = m(h)
            if isinstance(m, nn.Conv2d):  # the columns: one row per output pixel, k·k·C_in long
                kh, kw = m.kernel_size
                total += h.shape[0] * out.shape[2] * out.shape[3] * kh * kw * m.in_channels * h.data.itemsize
            elif isinstance(m, nn.ConvTranspose2d):  # one row per input pixel, k·k·C_out long
                kh, kw = m.kernel_size
                total += h.shape[0] * h.shape[2] * h.shape[3] * kh * kw * m.out_channels * h.data.itemsize
            h = out
            total += h.data.nbytes
    return total, h


def estimate_step_bytes(G: nn.Module, D: nn.Module, train: TrainConfig) -> int:
    """An estimate of the peak memory (bytes) that one training step adds to the weights and optimizer state.

    From one forward pass of a 2-sample batch (eval mode, no graph, no state change) it takes a_G and a_D, the
    bytes per sample of every layer output (and convolution column matrix) of G and of D; the step keeps
    D's activations for the real and the fake batch and G's for the fake one, and the backward pass makes
    arrays of the same sizes again; the weights' gradients add the weights' bytes W (the optimizer's temporaries
    exist for one parameter at a time):

        bytes ≈ c · 2 · B · (a_G + 2 a_D)  +  [λ > 0]  3 · B² · itemsize (the KDE's n×n matrices)  +  W

c = 1, or 4 for consensus optimisation, whose step records both players' gradients as graphs and differentiates
them once more (tracemalloc's peak over a ring8 step at batch 512: 12.4 MB against 3.5 MB for the alternating
step, benchmarks/cases_game.py; an extragradient step, 4.5 MB, keeps one evaluation's graph at a time: c = 1).

    Measured against tracemalloc's peak over a real first step it is within a factor 3 (tests/test_reliability.py).
    """
    training = [(m, m.training) for net in (G, D) for m in net.modules()]
    G.eval()
    D.eval()
    try:
        z = Tensor(backend.current_xp().zeros((2, train.z_dim), dtype=backend.get_default_dtype()))
        a_g, fake = _layer_bytes(G, z)
        a_d, _ = _layer_bytes(D, fake)
    finally:
        for m, mode in training:
            object.__setattr__(m, "training", mode)
    per_sample = (a_g + 2 * a_d) / 2  # the probe batch holds 2 samples
    weights = sum(p.data.nbytes for net in (G, D) for p in net.parameters())
    return _scale_estimate(per_sample, train, train.batch_size) + weights


def _uses_kde(train: TrainConfig) -> bool:
    return train.entropy_weight > 0 or (train.entropy_weight_final or 0) > 0


def _scale_estimate(per_sample: float, train: TrainConfig, batch: int) -> int:
    quad = 3 * backend.get_default_dtype().itemsize if _uses_kde(train) else 0
    graphs = 4 if train.consensus > 0 else 1  # consensus: the gradients' graphs (estimate_step_bytes)
    return int(graphs * 2 * batch * per_sample + quad * batch * batch)


#: bytes per parameter a run holds: the weight, its gradient, two Adam moments (RMSprop: one) and the copy that
#: a checkpoint load keeps to put things back on failure
_BYTES_PER_PARAM_FACTOR = 5


def check_model_size(cfg: Any, counts: tuple[int, int], available: int | None = None) -> int:
    """Before any model is built: refuse (:class:`InsufficientMemoryError`) an architecture whose weights,
    gradients and optimizer state alone (5 copies of ``counts`` = (G's, D's) parameters, computed by arithmetic:
    :func:`npgan.run.presets.count_parameters`) exceed 90% of
    the available memory, naming ``hidden`` and ``z_dim``. Returns those bytes."""
    g, d = counts
    itemsize = 8 if cfg.dtype == "float64" else 4
    need = _BYTES_PER_PARAM_FACTOR * (g + d) * itemsize
    avail = available_memory() if available is None else available
    if avail is None or need <= 0.9 * avail:
        return need
    raise InsufficientMemoryError(
        f"the {cfg.model} models with hidden = {cfg.hidden} and z_dim = {cfg.train.z_dim} have {g + d:,} "
        f"parameters (G {g:,}, D {d:,}), whose weights, gradients and optimizer state need about "
        f"{format_bytes(need)}, but only {format_bytes(avail)} is available on {backend.get_device()}; "
        "use a smaller hidden or z_dim (the batch size does not change this)")


def estimate_eval_bytes(G: nn.Module, train: TrainConfig, eval_samples: int) -> int:
    """Bytes of the final evaluation: ``eval_samples`` noise vectors (drawn in float64, then cast) and G's
    activations on all of them at once (a_G per sample, as in :func:`estimate_step_bytes`)."""
    was = [(m, m.training) for m in G.modules()]
    G.eval()
    try:
        a_g, _ = _layer_bytes(G, Tensor(backend.current_xp().zeros((2, train.z_dim),
                                                                    dtype=backend.get_default_dtype())))
    finally:
        for m, mode in was:
            object.__setattr__(m, "training", mode)
    per_sample = a_g / 2 + train.z_dim * (8 + backend.get_default_dtype().itemsize)
    return int(eval_samples * per_sample)


def check_memory(G: nn.Module, D: nn.Module, train: TrainConfig, available: int | None = None,
                 eval_samples: int = 0) -> int:
    """Raise :class:`InsufficientMemoryError` before training when one step, or the final evaluation of
    ``eval_samples`` samples (:func:`estimate_eval_bytes`), would not fit in memory.

    Compares :func:`estimate_step_bytes` with 90% of :func:`available_memory` (or ``available``); returns the
    estimate. The message gives both figures and the largest batch size (or eval_samples) that fits.
    """
    est = estimate_step_bytes(G, D, train)
    avail = available_memory() if available is None else available
    if avail is not None and eval_samples > 0:
        ev = estimate_eval_bytes(G, train, eval_samples)
        weights = sum(p.data.nbytes for net in (G, D) for p in net.parameters())
        if ev + weights > 0.9 * avail:
            fit = max(int((0.9 * avail - weights) / (ev / eval_samples)), 0)
            raise InsufficientMemoryError(
                f"eval_samples = {eval_samples} needs about {format_bytes(ev)} of memory for the final evaluation "
                f"(noise and G's activations for every sample), but only {format_bytes(avail)} is available on "
                f"{backend.get_device()}; use eval_samples of at most {fit} (in the config file)")
    if avail is None or est <= 0.9 * avail:
        return est
    B = train.batch_size
    quad = 3 * backend.get_default_dtype().itemsize * B * B if _uses_kde(train) else 0
    fixed = sum(p.data.nbytes for net in (G, D) for p in net.parameters())
    per_sample = (est - quad - fixed) / (2 * B)
    lo, hi = 0, B  # the largest batch whose estimate fits (the estimate grows with the batch)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _scale_estimate(per_sample, train, mid) + fixed <= 0.9 * avail:
            lo = mid
        else:
            hi = mid - 1
    raise InsufficientMemoryError(
        f"batch size {B} needs about {format_bytes(est)} of memory for one training step (activations of G and D"
        f"{' and the KDE entropy matrices' if quad else ''}), but only {format_bytes(avail)} is available on "
        f"{backend.get_device()}; use a batch size of at most {max(lo, 1)} (--batch-size)")


def traced_peak(fn: Any) -> int:
    """The peak bytes of Python-visible allocations (NumPy's arrays included) while ``fn()`` runs, above what was
    allocated when it started (tracemalloc): what :func:`estimate_step_bytes` estimates for a training step."""
    import tracemalloc
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
