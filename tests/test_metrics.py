"""Metrics: mode coverage, classifiers, PRDC, images."""

import json
import math
import os

import numpy as np
import pytest

import npgan
from npgan import data
from npgan.eval import classifiers, metrics

HQ_CEILING = 100 * (1 - math.exp(-4.5))  # P(‖ε‖ ≤ 3σ) for a 2-D isotropic Gaussian = 98.889 %

# ============================================================================ mode metrics


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_true_mixture_scores_all_modes(name):
    sampler, centers, std = data.MIXTURES[name]
    n = 2500
    m = metrics.mode_metrics(sampler(n), centers, std)
    k = len(centers)
    assert m["modes"] == m["n_modes"] == k
    # HQ share: binomial(2500, 0.98889) has sd 0.21 %; allow 5 sd
    assert abs(m["hq"] - HQ_CEILING) < 5 * 100 * math.sqrt(0.0111 * 0.9889 / n)
    # reverse KL of a multinomial histogram: about (K − 1)/(2 n_hq) = 0.0014 (ring) / 0.0049 (grid)
    expected = (k - 1) / (2 * n * HQ_CEILING / 100)
    assert 0 < m["reverse_kl"] < 3 * expected
    assert sum(m["counts"]) == round(m["hq"] * n / 100) and len(m["counts"]) == k


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_collapsed_and_far_samples(name):
    _, centers, std = data.MIXTURES[name]
    k = len(centers)
    jitter = 0.1 * std * np.random.default_rng(0).standard_normal((2500, 2))
    collapsed = np.repeat(centers[3:4], 2500, axis=0) + jitter
    m = metrics.mode_metrics(npgan.tensor(collapsed), centers, std)
    assert m["modes"] == 1 and m["hq"] == 100.0 and m["counts"][3] == 2500
    assert math.isclose(m["reverse_kl"], math.log(k), rel_tol=1e-12)
    far = metrics.mode_metrics(np.full((2500, 2), 50.0), centers, std)
    assert far["hq"] == 0.0 and far["modes"] == 0 and math.isnan(far["reverse_kl"])


def test_mode_metrics_by_hand():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[0.5, 0.0], [9.0, 0.0], [10.0, 2.9], [5.0, 5.0], [0.0, 3.1]])
    m = metrics.mode_metrics(x, centers, 1.0)
    assert m["counts"] == [1, 2] and m["modes"] == 2 and math.isclose(m["hq"], 60.0)
    assert math.isclose(m["reverse_kl"], (1 / 3) * math.log(2 / 3) + (2 / 3) * math.log(4 / 3), rel_tol=1e-12)
    assert metrics.mode_metrics(x, centers, 1.0, min_count=2)["modes"] == 1
    assert metrics.mode_metrics(x, centers, 1.0, threshold=3.2)["counts"] == [2, 2]
    with pytest.raises(ValueError, match="std must be a positive"):
        metrics.mode_metrics(x, centers, 0.0)
    with pytest.raises(ValueError, match=r"samples \(5, 3\) and centers \(2, 2\)"):
        metrics.mode_metrics(np.zeros((5, 3)), centers, 1.0)


# ============================================================================ classifiers
@pytest.fixture(scope="module")
def digits():
    npgan.set_default_dtype("float32")
    return data.load_digits("train"), data.load_digits("test")


@pytest.fixture(scope="module")
def shipped():
    return classifiers.digits_classifier()


def test_shipped_digits_classifier(digits, shipped):
    (xtr, ytr), (xte, yte) = digits
    assert os.path.isfile(classifiers.DIGITS_CLASSIFIER_PATH)
    assert shipped.image_shape == (1, 8, 8) and shipped.hidden == 128
    acc = classifiers.evaluate_accuracy(shipped, xte, yte)
    assert acc >= 0.97, acc
    assert math.isclose(acc, shipped.meta["test_accuracy"], abs_tol=1e-12)  # the file says what it does


def test_train_digits_classifier_reproduces_the_shipped_one(digits, shipped):
    _, (xte, yte) = digits
    npgan.manual_seed(5)
    before = npgan.backend.rng().random(3)
    npgan.manual_seed(5)
    model = classifiers.train_digits_classifier()
    after = npgan.backend.rng().random(3)
    assert np.array_equal(before, after)  # training leaves the caller's random stream alone
    assert model.meta["test_accuracy"] >= 0.97
    agree = (model.predict(xte) == shipped.predict(xte)).mean()
    assert agree >= 0.99, agree


def test_save_and_load_classifier(tmp_path, shipped, digits):
    _, (xte, _) = digits
    path = tmp_path / "sub" / "c.npz"
    classifiers.save_classifier(shipped, path)
    assert os.listdir(tmp_path / "sub") == ["c.npz"]
    back = classifiers.load_classifier(path)
    for (k, a), (k2, b) in zip(shipped.state_dict().items(), back.state_dict().items()):
        assert k == k2 and np.array_equal(a, b)
    assert back.meta == shipped.meta
    np.testing.assert_array_equal(back.log_proba(xte), shipped.log_proba(xte))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz is not a classifier file"):
        classifiers.load_classifier(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match=r"images of shape \(2, 1, 28, 28\) .* expected \(N, 1, 8, 8\)"):
        shipped.log_proba(np.zeros((2, 1, 28, 28), np.float32))


@pytest.mark.parametrize("meta", ["[" * 100_000 + "]" * 100_000, "[1, 2]", "\"text\""])
def test_a_classifier_file_with_hostile_meta_is_one_line(tmp_path, meta):
    """Deeply nested JSON (a RecursionError in the parser) or JSON that is not an object: one ValueError naming
    the file, never a traceback from inside the loader."""
    path = tmp_path / "c.npz"
    np.savez(path, meta=np.array(meta), **{"param/0.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValueError, match="c.npz is not a classifier file"):
        classifiers.load_classifier(path)


def _write_digits_as_mnist(d):
    """The 8×8 digits blown up to 28×28 (3× nearest-neighbour + 2-pixel border) as IDX files."""
    for split, (img, lab) in data.MNIST_FILES.items():
        x, y = data.load_digits("train" if split == "train" else "test")
        u8 = np.round((x.numpy()[:, 0] + 1) * 127.5).astype(np.uint8)
        big = np.pad(np.kron(u8, np.ones((3, 3), np.uint8)), ((0, 0), (2, 2), (2, 2)))
        (d / img).write_bytes(np.array([2051, *big.shape], ">i4").tobytes() + big.tobytes())
        labels = y.numpy().astype(np.uint8)
        (d / lab).write_bytes(np.array([2049, len(labels)], ">i4").tobytes() + labels.tobytes())


def test_mnist_classifier_trains_once_then_loads_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGAN_CACHE", str(tmp_path / "cache"))
    _write_digits_as_mnist(tmp_path)
    model = classifiers.mnist_classifier(tmp_path, epochs=8, hidden=64)
    assert model.image_shape == (1, 28, 28)
    assert model.meta["test_accuracy"] >= 0.9, model.meta
    cached = os.listdir(tmp_path / "cache")
    assert len(cached) == 1 and cached[0].startswith("mnist_mlp64_e8_")

    def boom(*a, **k):
        raise AssertionError("should have loaded the cached classifier")

    monkeypatch.setattr(classifiers, "train_classifier", boom)
    again = classifiers.mnist_classifier(tmp_path, epochs=8, hidden=64)
    x, _ = data.load_mnist(tmp_path, "test")
    np.testing.assert_array_equal(again.log_proba(x), model.log_proba(x))


# ============================================================================ classifier metrics
def _fixed_logits(logits):
    return lambda x: npgan.tensor(logits)


def test_classifier_metrics_known_cases():
    n = 100
    onehot = np.zeros((n, 10))
    onehot[np.arange(n), np.arange(n) % 10] = 60.0  # confident and balanced
    m = metrics.classifier_metrics(np.zeros((n, 3)), _fixed_logits(onehot))
    assert m["classes_covered"] == 10 and m["class_counts"] == [10] * 10
    assert m["class_kl"] == 0.0 and math.isclose(m["classifier_score"], 10.0, rel_tol=1e-9)
    m = metrics.classifier_metrics(np.zeros((n, 3)), _fixed_logits(np.zeros((n, 10))))  # uniform p(y|x)
    assert math.isclose(m["classifier_score"], 1.0, rel_tol=1e-12)
    assert m["classes_covered"] == 1 and math.isclose(m["class_kl"], math.log(10))
    two = np.zeros((n, 10))
    two[:, 0] = np.where(np.arange(n) < 50, 60.0, 0.0)
    two[:, 1] = np.where(np.arange(n) < 50, 0.0, 60.0)
    m = metrics.classifier_metrics(np.zeros((n, 3)), _fixed_logits(two))
    assert math.isclose(m["classifier_score"], 2.0, rel_tol=1e-9)
    assert math.isclose(m["class_kl"], math.log(5))  # 2 classes of 10 equally: log(10/2)
    one_odd = onehot.copy()
    zero = np.arange(n) % 10 == 0
    one_odd[zero] = 0
    one_odd[zero, 5] = 60.0  # class 0 loses its ten images, class 5 gains them
    m = metrics.classifier_metrics(np.zeros((n, 3)), _fixed_logits(one_odd))
    assert m["classes_covered"] == 9 and m["class_counts"][5] == 20
    m = metrics.classifier_metrics(np.zeros((n, 3)), _fixed_logits(one_odd), min_count=11)
    assert m["classes_covered"] == 1


# ============================================================================ PRDC
def _prdc_reference(real, fake, k):
    """Naeem et al.'s definitions with explicit (n, n, d) differences and full sorts (small inputs only)."""
    r, f = real.reshape(len(real), -1), fake.reshape(len(fake), -1)
    d_rr = np.sqrt(((r[:, None] - r[None]) ** 2).sum(-1))
    d_ff = np.sqrt(((f[:, None] - f[None]) ** 2).sum(-1))
    d_rf = np.sqrt(((r[:, None] - f[None]) ** 2).sum(-1))
    rad_r = np.sort(d_rr, axis=1)[:, k]
    rad_f = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < rad_r[:, None]
    return {"precision": inside.any(0).mean(), "recall": (d_rf < rad_f[None]).any(1).mean(),
            "density": inside.sum(0).mean() / k, "coverage": (d_rf.min(1) < rad_r).mean()}


@pytest.mark.parametrize("k, chunk", [(1, 1024), (3, 7), (5, 16)])
def test_prdc_matches_the_definition(k, chunk):
    rs = np.random.default_rng(k)
    real = rs.standard_normal((40, 2, 3))
    fake = rs.standard_normal((33, 2, 3)) * 0.7 + 0.5
    got = metrics.prdc(real, fake, k=k, chunk=chunk)
    want = _prdc_reference(real, fake, k)
    for key in want:
        assert math.isclose(got[key], want[key], rel_tol=1e-12), (key, got, want)
    assert 0 < got["recall"] < 1 and 0 < got["coverage"] < 1 and got["density"] > 0  # not a degenerate case


def test_prdc_bad_input():
    with pytest.raises(ValueError, match="real samples have 6 features, fake samples 4"):
        metrics.prdc(np.zeros((10, 6)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"k must be .*\[1, 7\], got 8 \(N=10 real, M=8 fake\)"):
        metrics.prdc(np.zeros((10, 6)), np.zeros((8, 6)), k=8)


# ============================================================================ image metrics on the digits
@pytest.fixture(scope="module")
def real_pair(digits):
    (xtr, _), (xte, yte) = digits
    idx = np.random.default_rng(1).permutation(len(xtr))[:len(xte)]
    return xtr.numpy()[idx], xte


def test_image_metrics_real_vs_real(real_pair, shipped):
    train_part, xte = real_pair
    m = metrics.image_metrics(xte, train_part, shipped)
    json.dumps(m, allow_nan=False)
    assert m["n_fake"] == m["n_real"] == 359
    assert m["classes_covered"] == 10 and m["class_kl"] < 0.05, m
    assert m["classifier_score"] > 7.5, m
    for key in ("precision", "recall", "density", "coverage"):
        assert m[key] > 0.85, (key, m)
    assert m["density"] < 1.15


def test_image_metrics_collapse_and_noise(real_pair, shipped):
    train_part, xte = real_pair
    collapsed = np.repeat(xte.numpy()[:1], 359, axis=0)
    m = metrics.image_metrics(collapsed, train_part, shipped)
    json.dumps(m, allow_nan=False)
    assert m["classes_covered"] == 1 and math.isclose(m["class_kl"], math.log(10))
    assert m["classifier_score"] < 1.0001
    assert m["recall"] == 0.0 and m["coverage"] < 0.1, m
    noise = np.random.default_rng(2).uniform(-1, 1, (359, 1, 8, 8)).astype(np.float32)
    m = metrics.image_metrics(noise, train_part, shipped)
    assert m["precision"] < 0.05 and m["coverage"] < 0.05 and m["density"] < 0.05, m
