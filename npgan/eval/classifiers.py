"""The classifiers behind the image metrics: a small MLP built with npgan itself, trained, saved and loaded; the
shipped digits and shapes classifiers and the MNIST one trained on the user's files.

The digits and shapes classifiers ship with the package (``npgan/eval/_digits_classifier.npz``,
``npgan/eval/_shapes_classifier.npz``, made by :func:`train_digits_classifier` / :func:`train_shapes_classifier`
with seed 0: ``python -m npgan.eval.classifiers``) so that every machine scores with the same weights; the MNIST
one is trained on the user's files on first use and cached in ``$NPGAN_CACHE`` (default ``~/.cache/npgan``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from typing import Any

from .. import backend, nn, optim
from ..backend import get_array_module
from ..data.digits import load_digits, load_mnist
from ..data.download import cache_dir
from ..data.images import area_downsample
from ..data.loader import ArrayLoader
from ..data.shapes import shapes
from ..files import atomic_write_bytes
from ..functional import log_softmax_array, softmax_cross_entropy
from ..tensor import Tensor, no_grad

__all__ = ["MLPClassifier", "train_classifier", "evaluate_accuracy", "save_classifier", "load_classifier",
           "train_digits_classifier", "digits_classifier", "mnist_classifier", "DIGITS_CLASSIFIER_PATH",
           "ShapesClassifier", "shapes_features", "train_shapes_classifier", "shapes_classifier",
           "SHAPES_CLASSIFIER_PATH"]


def _array(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


class MLPClassifier(nn.Module):
    """A one-hidden-layer classifier of images: flatten → Linear(D, hidden) → ReLU → Linear(hidden, C).

    ``image_shape`` is (channels, H, W) of the inputs (in [−1, 1]); the forward
    pass maps (N, *image_shape) to logits (N, C). ``meta`` holds training facts
    (e.g. ``test_accuracy``) when the model was trained or loaded here.
    """

    def __init__(self, image_shape: tuple[int, ...] = (1, 8, 8), hidden: int = 128,
                 n_classes: int = 10) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.hidden, self.n_classes = int(hidden), int(n_classes)
        self.meta: dict[str, Any] = {}
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(self.image_shape), self.hidden), nn.ReLU(),
                                 nn.Linear(self.hidden, self.n_classes))

    def _check(self, shape: tuple[int, ...]) -> None:
        if tuple(shape[1:]) != self.image_shape:
            want = ", ".join(map(str, self.image_shape))
            raise ValueError(f"{type(self).__name__}: images of shape {tuple(shape)} do not fit a classifier "
                             f"of images {self.image_shape}; expected (N, {want})")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x.shape)
        return self.net(x)

    def log_proba(self, images: Any, batch_size: int = 2048) -> Any:
        """log p(y|x) as a raw (N, C) array, evaluated without a graph, in chunks of ``batch_size``."""
        x = _array(images)
        self._check(x.shape)
        xp = get_array_module(self.net[1].weight.data)
        if get_array_module(x) is not xp:  # images on another device than the weights: bring them over
            x = xp.asarray(backend.to_numpy(x))
        was = self.training
        self.eval()
        try:
            with no_grad():
                parts = [log_softmax_array(self(Tensor(x[i:i + batch_size])).data)
                         for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was)
        return xp.concatenate(parts, axis=0) if parts else xp.zeros((0, self.n_classes))

    def predict(self, images: Any) -> Any:
        """The most probable class of each image as a raw (N,) int array."""
        return self.log_proba(images).argmax(axis=1)

    def extra_repr(self) -> str:
        return f"image_shape={self.image_shape}, hidden={self.hidden}, n_classes={self.n_classes}"


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run with npgan's generator seeded to ``seed``, then put the caller's generator back untouched."""
    st = backend._state  # the generator object itself is swapped, so the caller's stream is not advanced
    saved = (st.rng, st.seed)
    backend.manual_seed(seed)
    try:
        yield
    finally:
        st.rng, st.seed = saved


def evaluate_accuracy(model: MLPClassifier, images: Any, labels: Any) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``."""
    pred = model.predict(images)
    return float((pred == _array(labels)).mean())


def train_classifier(train_images: Any, train_labels: Any, test_images: Any = None, test_labels: Any = None,
                     hidden: int = 128, n_classes: int = 10, epochs: int = 30, batch_size: int = 64,
                     lr: float = 1e-3, seed: int = 0) -> MLPClassifier:
    """Train an :class:`MLPClassifier` with Adam on softmax cross-entropy; deterministic given ``seed``.

    The caller's random stream is left as it was (training uses a private seed).
    When a test set is given, ``model.meta["test_accuracy"]`` records its accuracy.
    """
    x, y = _array(train_images), _array(train_labels)
    with _seeded(seed):
        model = MLPClassifier(tuple(x.shape[1:]), hidden, n_classes)
        opt = optim.Adam(model.parameters(), lr=lr)
        loader = ArrayLoader((x, y), min(batch_size, x.shape[0]), shuffle=True, drop_last=True)
        for _ in range(epochs):
            for xb, yb in loader:
                loss = softmax_cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    model.meta = {"hidden": hidden, "n_classes": n_classes, "epochs": epochs, "batch_size": batch_size,
                  "lr": lr, "seed": seed, "n_train": int(x.shape[0]),
                  "train_accuracy": evaluate_accuracy(model, x, y)}
    if test_images is not None:
        model.meta["test_accuracy"] = evaluate_accuracy(model, test_images, test_labels)
        model.meta["n_test"] = int(_array(test_images).shape[0])
    return model


_FORMAT = 1


def save_classifier(model: MLPClassifier, path: str | os.PathLike) -> None:
    """Write weights and metadata to ``path`` (.npz) atomically (:func:`npgan.files.atomic_write_bytes`)."""
    np = backend.np
    path = os.fspath(path)
    meta = dict(model.meta, format=_FORMAT, image_shape=list(model.image_shape), hidden=model.hidden,
                n_classes=model.n_classes)
    arrays = {"param/" + k: backend.to_numpy(v) for k, v in model.state_dict().items()}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_classifier(path: str | os.PathLike) -> MLPClassifier:
    """An :class:`MLPClassifier` from a file of :func:`save_classifier` (weights on the current device)."""
    np = backend.np
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            state = {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}
    except (OSError, ValueError, KeyError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise ValueError(f"load_classifier: {path} is not a classifier file "
                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"load_classifier: {path} is not a classifier file (its meta is a {type(meta).__name__}, "
                         f"not an object)")
    if meta.get("format") != _FORMAT:
        raise ValueError(f"load_classifier: {path} has format {meta.get('format')!r}, expected {_FORMAT}")
    model = MLPClassifier(tuple(meta["image_shape"]), meta["hidden"], meta["n_classes"])
    model.load_state_dict(state)
    model.meta = {k: v for k, v in meta.items() if k not in ("format", "image_shape")}
    model.eval()
    return model


DIGITS_CLASSIFIER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_digits_classifier.npz")


def train_digits_classifier(seed: int = 0, epochs: int = 30, hidden: int = 128) -> MLPClassifier:
    """Train the 8×8 digits classifier (64 → 128 → 10 MLP, Adam 1e-3, batch 64, 30 epochs, ~2 s).

    Trained on ``load_digits("train")``; ``meta["test_accuracy"]`` is measured
    on ``load_digits("test")``. The shipped ``npgan/_digits_classifier.npz``
    is ``save_classifier(train_digits_classifier(), DIGITS_CLASSIFIER_PATH)``
    run in float32 on the CPU.
    """
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    model = train_classifier(xtr, ytr, xte, yte, hidden=hidden, epochs=epochs, seed=seed)
    model.meta["data"] = "sklearn digits, npgan.data.load_digits split (seed 0, test_fraction 0.2)"
    return model


def digits_classifier() -> MLPClassifier:
    """The classifier for 8×8 digits: the shipped weights, else a cached copy, else trained now and cached."""
    for path in (DIGITS_CLASSIFIER_PATH, os.path.join(cache_dir(), "digits_classifier.npz")):
        if os.path.isfile(path):
            try:
                return load_classifier(path)
            except ValueError:
                continue
    model = train_digits_classifier()
    save_classifier(model, os.path.join(cache_dir(), "digits_classifier.npz"))
    return model


def mnist_classifier(data_dir: str | os.PathLike, retrain: bool = False, epochs: int = 5,
                     hidden: int = 256) -> MLPClassifier:
    """A 784 → 256 → 10 MLP trained on the MNIST training files in ``data_dir``, cached after the first call.

    The cache file (in :func:`cache_dir`) is keyed by the SHA-256 of the
    training labels and images as loaded, so other IDX data (e.g. Fashion-MNIST)
    gets its own classifier. ``meta["test_accuracy"]`` is measured on the test split.
    """
    xtr, ytr = load_mnist(data_dir, "train")
    h = hashlib.sha256(backend.to_numpy(ytr.data).tobytes())
    h.update(backend.to_numpy(xtr.data).tobytes())
    path = os.path.join(cache_dir(), f"mnist_mlp{hidden}_e{epochs}_{h.hexdigest()[:16]}.npz")
    if not retrain and os.path.isfile(path):
        try:
            return load_classifier(path)
        except ValueError:
            pass
    xte, yte = load_mnist(data_dir, "test")
    model = train_classifier(xtr, ytr, xte, yte, hidden=hidden, epochs=epochs, batch_size=128, seed=0)
    model.meta["data"] = f"MNIST IDX files in {os.fspath(data_dir)}"
    save_classifier(model, path)
    return model


# ============================================================================ the shapes classifier
SHAPES_CLASSIFIER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shapes_classifier.npz")
_SHAPES_POOL = 16


def shapes_features(images: Any) -> Any:
    """The shapes classifier's input: images (N, 3, S, S) in [−1, 1], S a multiple of 16 → (N, 3, 16, 16).

    1. Centre: with saturation s = max_c v − min_c v of v = (x + 1)/2 box-blurred 3×3 (cyclically; 0 on the
       grey background, ≥ 0.6 on a shape) and weight w = clip((s − 0.3)/0.2, 0, 1), each image is rolled
       (cyclically) by the integer shift that moves the w-weighted centroid to the image centre (no shift when
       w = 0 everywhere). This removes the position, which a one-hidden-layer MLP handles badly. The blur
       keeps per-pixel noise out of the centroid: without it, N(0, 0.2²) noise on real shapes (saturated
       specks all over the background) moved the centroid off the shape and cut the accuracy to 0.5.
    2. Area-average to 16×16 (2×2 blocks for 32×32, 4×4 for 64×64), so one classifier serves both sizes.
    Raw arrays in, raw arrays out (same device), vectorised (one gather).
    """
    xp = backend.get_array_module(images)
    x = images
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] or x.shape[2] % _SHAPES_POOL:
        raise ValueError(f"ShapesClassifier: images of shape {tuple(x.shape)} do not fit; expected "
                         f"(N, 3, S, S) with S a multiple of {_SHAPES_POOL}")
    n, _, size, _ = x.shape
    blur = sum(xp.roll(x, (i, j), axis=(2, 3)) for i in (-1, 0, 1) for j in (-1, 0, 1)) / 9.0
    sat = (blur.max(axis=1) - blur.min(axis=1)) * 0.5
    w = xp.clip((sat.astype(backend.float64) - 0.3) / 0.2, 0.0, 1.0)  # (N, S, S)
    total = w.sum(axis=(1, 2))
    grid = xp.arange(size, dtype=backend.float64) + 0.5
    safe = xp.where(total > 0, total, 1.0)
    cy = xp.where(total > 0, (w.sum(axis=2) * grid).sum(axis=1) / safe, size / 2)
    cx = xp.where(total > 0, (w.sum(axis=1) * grid).sum(axis=1) / safe, size / 2)
    # floor(v + 1/2), not rint: rounding that commutes with integer shifts (rint rounds ties to even)
    sy = xp.floor(size / 2 - cy + 0.5).astype(backend.int64)
    sx = xp.floor(size / 2 - cx + 0.5).astype(backend.int64)
    ar = xp.arange(size)
    rows = (ar[None, :] - sy[:, None]) % size                      # out[i] = in[i − shift]
    cols = (ar[None, :] - sx[:, None]) % size
    centred = x[xp.arange(n)[:, None, None, None], xp.arange(3)[None, :, None, None],
                rows[:, None, :, None], cols[:, None, None, :]]
    return area_downsample(centred, _SHAPES_POOL)


class ShapesClassifier(MLPClassifier):
    """The 12-class shapes classifier: :func:`shapes_features` (centred on the coloured shape, area-averaged
    to 16×16) fed to a 768 → hidden → 12 MLP (:class:`npgan.MLPClassifier`).

    ``log_proba`` / ``predict`` take the full-size images (N, 3, S, S), S = 16, 32, 64...; ``forward`` takes
    the 16×16 features (as trained).
    """

    def __init__(self, hidden: int = 128) -> None:
        super().__init__((3, _SHAPES_POOL, _SHAPES_POOL), hidden, 12)

    def log_proba(self, images: Any, batch_size: int = 2048) -> Any:
        x = images.data if isinstance(images, Tensor) else images
        return super().log_proba(shapes_features(x), batch_size)


def train_shapes_classifier(seed: int = 0, n_train: int = 24000, n_test: int = 6000, epochs: int = 20,
                            hidden: int = 128) -> ShapesClassifier:
    """Train the shipped shapes classifier: Adam 1e-3, batch 64, on ``n_train`` 32×32 images (half "noisy",
    half "plain" background, data seeds 1000+seed and 2000+seed) through :func:`shapes_features`; ``meta``
    records the accuracy on ``n_test`` fresh images (seeds 3000+seed, 4000+seed). The shipped
    ``npgan/eval/_shapes_classifier.npz`` is ``save_classifier(train_shapes_classifier(), SHAPES_CLASSIFIER_PATH)``,
    float32 on the CPU (``python -m npgan.eval.classifiers``)."""
    np = backend.np

    def data(n: int, s0: int) -> tuple[Any, Any]:
        a, la = shapes(n // 2, 32, s0 + seed, "noisy")
        b, lb = shapes(n - n // 2, 32, s0 + 1000 + seed, "plain")
        x = shapes_features(np.concatenate([backend.to_numpy(a.data), backend.to_numpy(b.data)]))
        return x, np.concatenate([backend.to_numpy(la.data), backend.to_numpy(lb.data)])

    xtr, ytr = data(n_train, 1000)
    xte, yte = data(n_test, 3000)
    mlp = train_classifier(xtr, ytr, xte, yte, hidden=hidden, n_classes=12, epochs=epochs, seed=seed)
    model = ShapesClassifier(hidden)
    model.load_state_dict(mlp.state_dict())
    model.meta = dict(mlp.meta, data="npgan.data.shapes.shapes 32x32, half noisy half plain, "
                                        "shapes_features (centred, 16x16)")
    model.eval()
    return model


def shapes_classifier() -> ShapesClassifier:
    """The shapes classifier: the shipped weights, else a cached copy, else trained now (a minute) and cached."""
    for path in (SHAPES_CLASSIFIER_PATH, os.path.join(cache_dir(), "shapes_classifier.npz")):
        if os.path.isfile(path):
            try:
                mlp = load_classifier(path)
            except ValueError:
                continue
            model = ShapesClassifier(mlp.hidden)
            model.load_state_dict(mlp.state_dict())
            model.meta = mlp.meta
            model.eval()
            return model
    model = train_shapes_classifier()
    save_classifier(model, os.path.join(cache_dir(), "shapes_classifier.npz"))
    return model


if __name__ == "__main__":  # regenerate the shipped classifiers
    backend.set_default_dtype("float32")
    for _train, _path in ((train_digits_classifier, DIGITS_CLASSIFIER_PATH),
                          (train_shapes_classifier, SHAPES_CLASSIFIER_PATH)):
        _model = _train()
        save_classifier(_model, _path)
        print(json.dumps(_model.meta, indent=1, sort_keys=True))
