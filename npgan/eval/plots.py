"""Pictures of what was learnt: image grids, 2-D scatters over the mode centres, loss curves.

matplotlib is imported lazily (``import npgan`` does not pull it in) with the non-interactive Agg backend.
Inputs are host numpy arrays (callers convert with ``backend.to_numpy``). Files are written atomically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from typing import Any

from .. import backend
from ..data.mixtures import MIXTURES
from ..files import atomic_write_bytes

__all__ = ["image_grid", "scatter_2d", "loss_curves", "grid_array"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def grid_array(images: Any, ncol: int | None = None, pad: int = 1) -> Any:
    """Tile (N, C, H, W) images in [−1, 1] into one (rows·(H+pad), cols·(W+pad)[, 3]) array in [0, 1]."""
    np = backend.np
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"image_grid expects (N, C, H, W) or (N, H, W) images, got shape {x.shape}")
    n, c, h, w = x.shape
    ncol = ncol or max(1, int(math.ceil(math.sqrt(n))))
    nrow = int(math.ceil(n / ncol))
    x = np.clip((x + 1) / 2, 0, 1)
    canvas = np.ones((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad))
    for i in range(n):  # tiles, not pixels: at most a few hundred
        r, k = divmod(i, ncol)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = x[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def image_grid(images: Any, path: str | os.PathLike, title: str | None = None, ncol: int | None = None) -> None:
    """Save a grid of images (N, C, H, W) in [−1, 1] as a PNG."""
    plt = _plt()
    g = grid_array(images, ncol)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title)
    _save(fig, path)


def scatter_2d(samples: Any, centers: Any, path: str | os.PathLike, title: str | None = None) -> None:
    """Save a scatter of 2-D samples over the mixture's mode centres.

    The modes are hollow red circles drawn under the samples: a mode that the generator covers shows its
    samples inside the ring (a filled marker on top would hide exactly the samples that sit on the modes).
    """
    plt = _plt()
    np = backend.np
    s, c = np.asarray(samples), np.asarray(centers)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(c[:, 0], c[:, 1], s=110, facecolors="none", edgecolors="red", linewidths=0.9, zorder=1,
               label="modes")
    ax.scatter(s[:, 0], s[:, 1], s=4, alpha=0.4, color="C0", linewidths=0, zorder=2, label="G(z)")
    lim = float(np.abs(c).max()) * 1.5 + 0.5
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    _save(fig, path)


def samples(x: Any, data: str, path: str | os.PathLike, title: str | None = None) -> None:
    """A run's samples as a picture: a scatter over the modes for the 2-D mixtures, else an image grid."""
    if data in MIXTURES:
        scatter_2d(x, backend.to_numpy(MIXTURES[data].centers), path, title=title)
    else:
        image_grid(x[:256], path, title=title)


def loss_curves(history: Sequence[dict[str, float]], path: str | os.PathLike, smooth: int = 50) -> None:
    """Save losses, D(x) and D(G(z)), entropy and gradient norms over steps (moving averages) as one PNG."""
    plt = _plt()
    np = backend.np
    if not history:
        raise ValueError("loss_curves: the history is empty")
    steps = np.array([r["step"] for r in history])

    def col(k: str) -> Any:
        v = np.array([r[k] for r in history], dtype=float)
        if smooth > 1 and len(v) > smooth:
            kern = np.ones(smooth)
            # divide by the number of terms in each window: near the ends "same" pads with zeros,
            # and dividing by ``smooth`` there would pull the curve towards 0
            v = np.convolve(v, kern, mode="same") / np.convolve(np.ones_like(v), kern, mode="same")
        return v

    has_h = not np.all(np.isnan([r["entropy"] for r in history]))
    n = 4 if has_h else 3
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.2 * n), sharex=True)
    axes[0].plot(steps, col("loss_d"), label="loss_D")
    axes[0].plot(steps, col("loss_g"), label="loss_G")
    axes[0].legend()
    axes[0].set_ylabel("loss")
    axes[1].plot(steps, col("d_x"), label="D(x)")
    axes[1].plot(steps, col("d_g_z"), label="D(G(z))")
    axes[1].axhline(0.5, color="gray", lw=0.5)
    axes[1].legend()
    axes[1].set_ylabel("probability")
    axes[2].plot(steps, col("grad_norm_g"), label="|grad G|")
    axes[2].plot(steps, col("grad_norm_d"), label="|grad D|")
    axes[2].set_yscale("log")
    axes[2].legend()
    if has_h:
        axes[3].plot(steps, col("entropy"), label="KDE entropy of G's batch (nats)")
        axes[3].legend()
    axes[-1].set_xlabel("step")
    _save(fig, path)
