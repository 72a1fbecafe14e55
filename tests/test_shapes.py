"""The generated shapes data set (npgan.data.shapes): labels, determinism, geometry, and the shipped classifier."""

import os

import numpy as np
import pytest

import npgan
from npgan.data import shapes
from npgan.data.images import ImageDataError
from npgan.eval import classifiers


def test_shapes_labels_balance_and_determinism():
    x, y = shapes.shapes_uint8(1205, 32, seed=7)
    assert x.shape == (1205, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    counts = np.bincount(y, minlength=12)
    assert counts.size == 12 and counts.max() - counts.min() <= 1
    x2, y2 = shapes.shapes_uint8(1205, 32, seed=7)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = shapes.shapes_uint8(1205, 32, seed=8)
    assert (x3 != x).mean() > 0.5
    p, _ = shapes.shapes_uint8(50, 64, seed=1, background="plain")
    assert p.shape == (50, 3, 64, 64)
    t, ty = shapes.shapes(40, 32, seed=2)
    assert t.shape == (40, 3, 32, 32) and float(t.numpy().min()) >= -1 and float(t.numpy().max()) <= 1
    np.testing.assert_allclose(t.numpy(), shapes.shapes_uint8(40, 32, 2)[0] / 127.5 - 1, atol=1e-6)  # ≤ 6e-7: 3u·2
    for bad in (dict(n=-1), dict(image_size=30), dict(background="stars")):
        with pytest.raises(ImageDataError):
            shapes.shapes_uint8(**{"n": 4, **bad})


def test_shapes_colour_and_size_follow_the_label():
    x, y = shapes.shapes_uint8(600, 32, seed=4, background="plain")
    f = x.astype(float) / 255
    sat = f.max(axis=1) - f.min(axis=1)                  # background grey: saturation 0
    fg = sat > 0.3
    mean_rgb = (f * fg[:, None]).sum(axis=(2, 3)) / fg.sum(axis=(1, 2))[:, None]
    ref = np.asarray(list(shapes.SHAPE_COLOURS.values()))
    nearest = np.argmin(((mean_rgb[:, None] / mean_rgb.max(1, keepdims=True)[:, None]
                          - ref[None] / ref.max(1)[None, :, None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, y % 4)
    # squares fill their bounding box, discs π/4 of it, triangles about half
    rows, cols = fg.any(axis=2), fg.any(axis=1)
    fill = fg.sum(axis=(1, 2)) / (rows.sum(1) * cols.sum(1))
    for k, (lo, hi) in enumerate([(0.7, 0.86), (0.9, 1.01), (0.4, 0.65)]):
        v = fill[y // 4 == k]
        assert lo < np.median(v) < hi, (shapes.SHAPES[k], np.median(v))


def test_shipped_shapes_classifier_accuracy_on_fresh_shapes():
    clf = classifiers.shapes_classifier()
    assert isinstance(clf, classifiers.ShapesClassifier) and clf.meta["test_accuracy"] >= 0.99
    assert os.path.getsize(classifiers.SHAPES_CLASSIFIER_PATH) < 1_000_000
    for size in (32, 64):
        for bg in ("noisy", "plain"):
            x, y = shapes.shapes(1200, size, seed=98765, background=bg)
            acc = float((clf.predict(x) == y.numpy()).mean())
            assert acc >= 0.99, (size, bg, acc)
    m = npgan.eval.metrics.classifier_metrics(shapes.shapes(1200, 32, seed=5)[0], clf)
    assert m["classes_covered"] == 12 and m["class_kl"] < 0.01 and m["classifier_score"] > 10
    collapsed = np.repeat(shapes.shapes(1, 32, seed=5)[0].numpy(), 200, axis=0)
    assert npgan.eval.metrics.classifier_metrics(collapsed, clf)["classes_covered"] == 1
    with pytest.raises(ValueError, match="multiple of 16"):
        clf.predict(np.zeros((2, 3, 28, 28), np.float32))


def test_shapes_features_remove_the_position():
    x = shapes.shapes(50, 32, seed=3, background="plain")[0].numpy()
    f = classifiers.shapes_features(x)
    assert f.shape == (50, 3, 16, 16)
    moved = np.roll(x, (3, -3), axis=(2, 3))  # down 3, left 3: compare the images whose shape does not wrap
    tinted = (x.max(axis=1) - x.min(axis=1)) > 0.02
    keep = ~tinted[:, -3:, :].any(axis=(1, 2)) & ~tinted[:, :, :3].any(axis=(1, 2))
    assert keep.sum() >= 25
    # re-centred, the moved images are the same pixels through the same ops: equal exactly (1e-6 is slack; the
    # integer shift comes from a float64 centroid, 1e-13 from a tie only by a chance of about 1e-12)
    np.testing.assert_allclose(classifiers.shapes_features(moved[keep]), f[keep], atol=1e-6)
    flat = np.zeros((2, 3, 32, 32), np.float32)  # no saturated pixel: no shift, plain average
    np.testing.assert_array_equal(classifiers.shapes_features(flat), np.zeros((2, 3, 16, 16)))


def _blur(x, sigma):
    """Gaussian blur of (N, C, H, W) images, separable, edges extended."""
    r = int(3 * sigma) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (r, r)), mode="edge")
    h = sum(k[i] * p[:, :, :, i:i + x.shape[3]] for i in range(2 * r + 1))
    return sum(k[i] * h[:, :, i:i + x.shape[2], :] for i in range(2 * r + 1))


def _checker(x, depth):
    yy, xx = np.mgrid[:x.shape[2], :x.shape[3]]
    v = (x + 1) / 2 * (1 - depth * ((yy + xx) % 2))
    return v * 2 - 1


@pytest.mark.parametrize("damage", ["blur 1.2 px", "pixelated 2x", "checkerboard 0.5", "noise 0.2"])
def test_the_classifier_reads_damaged_shapes(damage):
    """Real shapes damaged as a generator's samples are (blurred, blocky, textured, noisy) keep their class.

    Per-pixel noise used to move the centring off the shape (accuracy 0.505 at σ = 0.2 on the [0, 1] scale,
    discs over-read) before the centring took the saturation of a 3×3-blurred image."""
    x, y = shapes.shapes(1200, 32, seed=11)
    x = x.numpy()
    if damage == "blur 1.2 px":
        x = _blur(x, 1.2)
    elif damage == "pixelated 2x":
        x = x.reshape(-1, 3, 16, 2, 16, 2).mean(axis=(3, 5)).repeat(2, axis=2).repeat(2, axis=3)
    elif damage == "checkerboard 0.5":
        x = _checker(x, 0.5)
    else:
        x = np.clip(x + np.random.default_rng(0).normal(0, 0.4, x.shape), -1, 1)
    pred = npgan.backend.to_numpy(classifiers.shapes_classifier().predict(x.astype(np.float32)))
    acc = (pred == y.numpy()).mean()
    print(f"{damage}: accuracy {acc:.3f}")
    assert acc > 0.97, acc
