"""The demos in demos/ run in their quick mode and prove what they print; the math docs cover every op.

Each demo's ``main(argv)`` returns the numbers it prints; these tests check them against closed forms computed
here, independently of the demo's own code (scipy quadrature, math), and check that the figures are written.
"""

import importlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npgan
from npgan import data, viz

ROOT = Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"
DOCS = ROOT / "docs"
GALLERY = DOCS / "gallery"


@pytest.fixture(scope="module", autouse=True)
def _demos_on_path():
    sys.path.insert(0, str(DEMOS))
    yield
    sys.path.remove(str(DEMOS))


def run_demo(name, tmp_path, *extra):
    mod = importlib.import_module(name)
    return mod.main(["--quick", "--out", str(tmp_path), *extra])


def assert_png(path, max_bytes=400_000):
    b = Path(path).read_bytes()
    assert b[:8] == b"\x89PNG\r\n\x1a\n", path
    assert 5_000 < len(b) < max_bytes, (path, len(b))


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# ============================================================================ 1. BCE and saturation
def test_bce_and_saturation(tmp_path):
    r = run_demo("bce_and_saturation", tmp_path)
    h = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert r["H_P"] == pytest.approx(h, abs=1e-12)
    assert r["H_P_fair"] == pytest.approx(math.log(2), abs=1e-12)
    assert r["KL_P_fair"] == pytest.approx(math.log(2) - h, abs=1e-12) and r["KL_P_fair"] > 0
    assert r["H_P_skewed"] == pytest.approx(-(0.6 * math.log(0.9) + 0.4 * math.log(0.1)), abs=1e-12)
    assert r["bce_vs_cross_entropy"] < 1e-12 and r["bce_prob_vs_logits"] < 1e-12
    assert math.isinf(r["naive_at_-800"]) and r["fused_at_-800"] == pytest.approx(800.0, rel=1e-12)
    assert r["gradcheck"] is True
    assert r["autograd_vs_formula"] < 1e-15 and r["finite_diff_vs_formula"] < 1e-8
    assert r["mm_grad_vs_formula"] < 1e-14 and r["ns_grad_vs_formula"] < 1e-14
    assert r["mm_grad_at_-5"] == pytest.approx(sigmoid(-5), rel=1e-12)
    assert r["ns_grad_at_-5"] == pytest.approx(1 - sigmoid(-5), rel=1e-12)
    # on a real batch: |d/dl log(1 − σ(l))| = σ(l), |d/dl −log σ(l)| = 1 − σ(l), averaged (both sides in float64
    # from the same logits: equal to float64 rounding, 1e-4 is slack)
    assert r["early_mm_grad"] == pytest.approx(r["early_d_g_z"], rel=1e-4)
    assert r["early_ns_grad"] == pytest.approx(1 - r["early_d_g_z"], rel=1e-4)
    # the strong D rejects the fakes (D(G(z)) < 1/2), where the minimax gradient is the smaller one
    assert r["early_d_g_z"] < 0.5 and r["early_ratio"] > 1 and r["early_gnorm_ns"] > r["early_gnorm_mm"]
    assert_png(tmp_path / "saturation.png")


# ============================================================================ 2. optimal discriminator
def test_optimal_discriminator(tmp_path):
    integrate = pytest.importorskip("scipy.integrate")
    r = run_demo("optimal_discriminator", tmp_path)
    mod = importlib.import_module("optimal_discriminator")
    (m1, s1), (m2, s2) = mod.DATA, mod.GEN

    def pdf(x, m, s):
        return math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    def jsd_integrand(x):
        p, q = pdf(x, m1, s1), pdf(x, m2, s2)
        mix = (p + q) / 2
        return 0.5 * (p * math.log(p / mix) if p > 0 else 0.0) + 0.5 * (q * math.log(q / mix) if q > 0 else 0.0)

    jsd = integrate.quad(jsd_integrand, -30, 30, limit=200, epsabs=1e-12)[0]
    assert r["JSD"] == pytest.approx(jsd, abs=1e-8)
    assert r["V_quadrature"] == pytest.approx(-math.log(4) + 2 * jsd, abs=1e-8)
    assert r["V_identity_err"] < 1e-12
    assert r["V_trained"] <= r["V_quadrature"] + 1e-9  # D* maximises V
    assert r["V_equal"] == pytest.approx(-math.log(4), abs=1e-10) and abs(r["JSD_equal"]) < 1e-12
    # D alone approaches D*; its loss approaches −V(D*, G); at p_g = p_data it approaches 2 ln 2
    assert r["max_abs_err"] < 0.1 and r["mean_abs_err"] < 0.05
    assert r["loss_d_final"] == pytest.approx(-r["V_quadrature"], abs=0.03)
    assert r["loss_d_equal"] == pytest.approx(2 * math.log(2), abs=0.01)
    assert r["d_dev_after"] < r["d_dev_before"]
    assert_png(tmp_path / "optimal_discriminator.png")


# ============================================================================ 3. entropy
def test_entropy(tmp_path):
    r = run_demo("entropy", tmp_path)
    assert r["coin_0.6"] == pytest.approx(-(0.6 * math.log(0.6) + 0.4 * math.log(0.4)), abs=1e-12)
    assert r["coin_0.6"] == pytest.approx(0.673, abs=5e-4)
    assert r["coin_fair"] == pytest.approx(math.log(2), abs=1e-12)
    assert r["die_fair"] == pytest.approx(math.log(6), abs=1e-12)
    assert r["certain"] == 0.0
    assert r["gauss_s0.1"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 0.01), abs=1e-12)
    for d in (1, 2):
        assert r[f"exact_d{d}"] == pytest.approx(0.5 * d * math.log(2 * math.pi * math.e), abs=1e-12)
        # leave-one-out KDE with Silverman's bandwidth is within 0.1 nats at n = 512 (its spread is ~0.04)
        assert r[f"loo_err_d{d}"][-1] < 0.1
    # the bandwidth sweep: the plain estimate grows with σ; as σ → 0 it is log n + (d/2) log(2πσ²)
    sig, plain, loo = np.array(r["sigma_grid"]), np.array(r["plain_vs_sigma"]), np.array(r["loo_vs_sigma"])
    assert np.all(np.diff(plain) > 0)
    n, d = 256, 2
    assert plain[0] == pytest.approx(math.log(n) + 0.5 * d * math.log(2 * math.pi * sig[0] ** 2), abs=0.05)
    assert loo[0] > plain[0] + 10  # leave-one-out blows up instead
    # the gradient: 0 at an exact collapse, straight outward near one, mean kept, entropy rising
    assert r["exact_collapse_grad"] == 0.0
    assert r["near_cos_mean"] > 0.99 and r["near_grad_sum"] < 1e-12 and r["near_vs_linear"] < 0.1
    assert r["H_monotone"] is True and r["H_end"] > r["H_start"] and r["std_end"] > 2 * r["std_start"]
    assert r["mean_shift"] < 1e-12
    assert_png(tmp_path / "entropy.png")


def test_entropy_figure_keeps_its_panels_full_size_and_its_labels_apart(tmp_path, monkeypatch):
    """The figure as drawn: the three lower panels (equal aspect) are about as tall as each other, so the two
    clumps are not squashed into a strip; no two tick labels of any panel overlap (a log axis over less than two
    decades labels its minor ticks unless told not to)."""
    mod = importlib.import_module("entropy")
    seen = {}
    real_save = mod.save

    def measuring_save(fig, path, *a, **k):
        renderer = fig.canvas.get_renderer()
        fig.canvas.draw()
        for ax in fig.axes:
            labels = [t for t in (*ax.get_xticklabels(), *ax.xaxis.get_minorticklabels(), *ax.get_yticklabels())
                      if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            clash = [(labels[i].get_text(), labels[j].get_text()) for i in range(len(boxes))
                     for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
            seen[ax.get_title()] = (ax.get_window_extent(renderer).height, clash)
        return real_save(fig, path, *a, **k)

    monkeypatch.setattr(mod, "save", measuring_save)
    mod.main(["--quick", "--out", str(tmp_path)])
    assert len(seen) == 5
    for title, (_, clash) in seen.items():
        assert clash == [], (title, clash)
    lower = {t: h for t, (h, _) in seen.items() if t.startswith(("near collapse", "two clumps", "H: "))}
    assert len(lower) == 3 and min(lower.values()) > 0.9 * max(lower.values()), lower


# ============================================================================ 4. mode collapse
def test_mode_collapse(tmp_path, capsys):
    r = run_demo("mode_collapse", tmp_path)
    out = capsys.readouterr().out
    assert r["steps"] == 30 and r["seeds"] == [0]
    # 30 steps cannot show mode collapse: the demo says so for each data set and claims nothing either way
    assert out.count("quick mode: 30 steps are too short to show mode collapse") == 2, out
    assert "shown:" not in out and r["ring8_shown"] is None and r["grid25_shown"] is None
    for name, k in (("ring8", 8), ("grid25", 25)):
        for arm in ("no entropy", "entropy"):
            m = r[name][arm]
            assert len(m["modes"]) == 1 and 0 <= m["modes"][0] <= k
            assert 0 <= m["hq"][0] <= 100
            kl = m["reverse_kl"][0]
            assert math.isnan(kl) or 0 <= kl <= math.log(k) + 1e-9
        assert_png(tmp_path / f"mode_collapse_{name}.png")


def test_mode_collapse_claims_only_what_its_numbers_show(capsys):
    verdict = importlib.import_module("mode_collapse").verdict
    per = {"no entropy": {"modes": [2.0, 1.0, 3.0]}, "entropy": {"modes": [8.0, 8.0, 7.0]}}
    assert verdict("ring8", per, 1000, quick=False) is True
    assert "shown: with the entropy term G covers more modes (7.66667 against 2 on average)" in capsys.readouterr().out
    per = {"no entropy": {"modes": [9.0]}, "entropy": {"modes": [9.0]}}
    assert verdict("grid25", per, 1000, quick=False) is False
    out = capsys.readouterr().out
    assert "not shown: after 1000 steps" in out and "npgan train --preset grid25" in out
    assert verdict("ring8", per, 30, quick=True) is None
    assert "shown" not in capsys.readouterr().out


# ============================================================================ 5. image GANs
KEYS = ("classes_covered", "class_kl", "classifier_score", "precision", "recall", "density", "coverage")


def check_image_result(r, tmp_path, steps):
    assert r["steps"] == steps
    for which in ("untrained", "trained", "real"):
        assert set(r[which]) == set(KEYS)
        assert 0 <= r[which]["classes_covered"] <= 10
        assert 1 - 1e-9 <= r[which]["classifier_score"] <= 10 + 1e-9
        for k in ("precision", "recall", "coverage"):
            assert 0 <= r[which][k] <= 1
    assert r["params_G"] > 0 and r["params_D"] > 0
    assert math.isfinite(r["final_loss_d"]) and math.isfinite(r["final_loss_g"])
    assert_png(tmp_path / "samples_over_training.png")
    assert_png(tmp_path / "losses.png")


@pytest.mark.parametrize("name,preset", [("mlp_gan_digits", "digits-mlp"), ("dcgan_digits", "digits-dcgan")])
def test_digits_demos(tmp_path, capsys, name, preset):
    r = run_demo(name, tmp_path)
    out = capsys.readouterr().out
    assert r["preset"] == preset
    # ln 2 is the equilibrium of the adversarial part L_adv = −E log D(G(z)) alone: loss_G = L_adv − λ·H is
    # never compared with it, L_adv = loss_G + λ·H is (the entropy term is on in digits-mlp only)
    assert r["entropy_weight"] == (0.1 if name == "mlp_gan_digits" else 0.0)
    if r["entropy_weight"] == 0:
        assert r["final_loss_g_adv"] == r["final_loss_g"]
    else:
        assert r["final_loss_g_adv"] != pytest.approx(r["final_loss_g"], abs=1e-3)
    assert r["final_loss_g_adv"] > 0  # −log σ > 0
    [ln2_line] = [line for line in out.splitlines() if "ln 2 = 0.693" in line]
    assert ln2_line.lstrip().startswith("L_adv = -E log D(G(z))"), ln2_line
    assert f"{r['final_loss_g_adv']:.4f}" in ln2_line
    assert f"quick mode: {r['steps']} steps are too short to show training near the equilibrium" in out
    check_image_result(r, tmp_path, 20 if name == "mlp_gan_digits" else 10)
    # real digits score as real digits: every class, balanced, and inside their own k-NN balls
    assert r["real"]["classes_covered"] == 10 and r["real"]["class_kl"] < 0.05
    assert r["real"]["precision"] > 0.9 and r["real"]["recall"] > 0.9
    assert r["untrained"]["precision"] < 0.1  # noise from an untrained G is nowhere near the digits


def test_mnist_demo_without_files_says_what_is_missing(tmp_path):
    mnist = importlib.import_module("mnist")
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as e:
        mnist.main(["--data-dir", str(missing), "--quick", "--out", str(tmp_path / "o")])
    msg = str(e.value.code)
    assert str(missing) in msg and "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "download_mnist" in msg
    with pytest.raises(SystemExit) as e:  # argparse: --data-dir is required
        mnist.main(["--quick"])
    assert e.value.code == 2


def _write_fake_mnist(folder, n_train=128, n_test=64):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        img, lab = data.MNIST_FILES[split]
        x = (rng.random((n, 28, 28)) < 0.2).astype(np.uint8) * 255
        (folder / img).write_bytes(np.array([2051, n, 28, 28], dtype=">i4").tobytes() + x.tobytes())
        y = rng.integers(0, 10, n).astype(np.uint8)
        (folder / lab).write_bytes(np.array([2049, n], dtype=">i4").tobytes() + y.tobytes())


def test_mnist_demo_on_tiny_fake_idx_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGAN_CACHE", str(tmp_path / "cache"))  # the MNIST classifier is trained and cached here
    _write_fake_mnist(tmp_path / "mnist")
    r = run_demo("mnist", tmp_path / "out", "--data-dir", str(tmp_path / "mnist"))
    assert r["preset"] == "mnist-mlp"
    check_image_result(r, tmp_path / "out", 10)
    # a truncated file: one clear error naming it
    p = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    mnist = importlib.import_module("mnist")
    with pytest.raises(SystemExit, match=r"t10k-images-idx3-ubyte.*truncated"):
        mnist.main(["--data-dir", str(tmp_path / "mnist"), "--quick", "--out", str(tmp_path / "o2")])


# ============================================================================ the scripts themselves
def test_a_demo_runs_as_a_script_and_refuses_a_missing_gpu(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(DEMOS / "entropy.py"), "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=900)  # a hang guard
    assert p.returncode == 0, p.stderr
    assert re.search(r"coin 0\.6 / 0\.4\s+0\.6730", p.stdout)
    assert (tmp_path / "entropy.png").exists()
    if not npgan.backend.gpu_available():
        p = subprocess.run([sys.executable, str(DEMOS / "entropy.py"), "--quick", "--device", "gpu", "--out",
                            str(tmp_path)], capture_output=True, text=True, env=env, timeout=900)  # a hang guard
        assert p.returncode != 0 and "--device gpu" in p.stderr


# ============================================================================ docs
def _doc_headings():
    heads = []
    for md in sorted(DOCS.glob("*.md")):
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                heads.append((md.name, line))
    return heads


def test_every_function_has_a_section_in_the_math_docs():
    """A new differentiable op must get its derivation in docs/ (a heading naming its class, in backticks)."""
    heads = " ".join(line for _, line in _doc_headings())
    classes = viz.function_classes()
    assert len(classes) >= 40
    missing = [f"{c.__module__}.{c.__qualname__}" for c in classes if f"`{c.__qualname__}`" not in heads]
    assert not missing, f"no section in docs/*.md has a heading naming these Function classes: {missing}"


def test_math_docs_link_the_code_they_derive():
    text = (DOCS / "math.md").read_text(encoding="utf-8")
    for path in re.findall(r"\]\((\.\./[^)#]+)", text):
        assert (DOCS / path).resolve().exists(), f"docs/math.md links to a missing file {path}"
    for c in viz.function_classes():
        mod_path = "../" + c.__module__.replace(".", "/") + ".py"
        assert mod_path in text, f"docs/math.md never links {mod_path} (where {c.__qualname__} lives)"


def test_gallery_is_small_and_linked_from_the_readme():
    pngs = sorted(GALLERY.glob("*.png"))
    assert pngs, "docs/gallery/ holds no figures: run python demos/make_gallery.py"
    total = 0
    for p in pngs:
        assert_png(p, max_bytes=160_000)
        total += p.stat().st_size
    assert total < 2_000_000
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for p in pngs:
        assert f"docs/gallery/{p.name}" in readme, f"README.md does not show {p.name}"
    for name in ("bce_and_saturation", "optimal_discriminator", "entropy", "mode_collapse", "mlp_gan_digits",
                 "dcgan_digits", "mnist", "dirac_gan"):
        assert f"demos/{name}.py" in readme
