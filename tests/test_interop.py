"""npgan ⇄ PyTorch: every preset's G and D through safetensors files and through npgan.interop, outputs, buffers
and gradients compared in train and eval mode (skipped without torch).

Tolerance: from the error analysis of tests/error_bounds.py, never from one machine's result. Each float32
engine (npgan, and PyTorch) is compared with the exact result — the same twin run in float64 on the same
weights — within the rounding bound of the operations:
  * layer by layer: each layer's output, input gradient, parameter gradients and running statistics against
    the float64 layer run on that engine's own float32 input (the layer's own rounding; at a ReLU/LeakyReLU the
    reference then takes the engine's branch);
  * end to end: every layer's output against the float64 twin on the exact input, and the gradients against
    the float64 twin that takes the engine's branch at every ReLU/LeakyReLU, within the bound carried through
    every layer (informative for the MLPs, uninformative but still valid for the deep DCGANs: the module
    docstring of tests/error_bounds.py says why).
npgan and PyTorch then agree within the sum of their two bounds, which is checked as such for the outputs.
The float64 comparison (to 1e-10) shows that the two compute the same function.
"""

import re
import subprocess
import sys
from pathlib import Path

import error_bounds as eb
import numpy as np
import pytest
from helpers import busy_bn_stats, torch_or_skip

import npgan
from npgan import interop, nn
from npgan.run.presets import PRESETS, build_models, image_shape, make_config
from npgan.weights import load_into, save

torch = torch_or_skip()
tnn = torch.nn
from safetensors.torch import load_file, save_file  # noqa: E402  (after the torch skip)

CASES = [(p, net) for p in PRESETS for net in ("G", "D")]
IDS = [f"{p}-{net}" for p, net in CASES]


def torch_twin(cfg):
    """PyTorch's (G, D) for a preset, written by hand from npgan/run/presets.py's description (torch's own init)."""
    z, h = cfg.train.z_dim, cfg.hidden
    if cfg.model == "mlp2d":
        return (tnn.Sequential(tnn.Linear(z, h), tnn.ReLU(), tnn.Linear(h, h), tnn.ReLU(), tnn.Linear(h, 2)),
                tnn.Sequential(tnn.Linear(2, h), tnn.LeakyReLU(0.2), tnn.Linear(h, h), tnn.LeakyReLU(0.2),
                               tnn.Linear(h, 1)))
    c, H, W = image_shape(cfg)
    n = c * H * W
    if cfg.model == "mlp":
        return (tnn.Sequential(tnn.Linear(z, h), tnn.ReLU(), tnn.Linear(h, 2 * h), tnn.ReLU(), tnn.Linear(2 * h, n),
                               tnn.Tanh(), tnn.Unflatten(1, (c, H, W))),
                tnn.Sequential(tnn.Flatten(), tnn.Linear(n, 2 * h), tnn.LeakyReLU(0.2), tnn.Linear(2 * h, h),
                               tnn.LeakyReLU(0.2), tnn.Linear(h, 1)))
    if cfg.model == "mlp_bn":
        return (tnn.Sequential(tnn.Linear(z, h), tnn.LeakyReLU(0.2), tnn.Linear(h, 2 * h), tnn.BatchNorm1d(2 * h),
                               tnn.LeakyReLU(0.2), tnn.Linear(2 * h, 4 * h), tnn.BatchNorm1d(4 * h),
                               tnn.LeakyReLU(0.2), tnn.Linear(4 * h, n), tnn.Tanh(), tnn.Unflatten(1, (c, H, W))),
                tnn.Sequential(tnn.Flatten(), tnn.Linear(n, 4 * h), tnn.LeakyReLU(0.2), tnn.Linear(4 * h, 2 * h),
                               tnn.LeakyReLU(0.2), tnn.Linear(2 * h, 1)))
    assert cfg.model == "dcgan"
    # 8 and 28: a 2x2 / 7x7 start and two stages; 4*2^n: a 4x4 start and n stages (widths h*2^(n-1) ... h)
    k, n_up = (H // 4, 2) if H in (8, 28) else (4, int(np.log2(H // 4)))
    w = [h * 2 ** i for i in range(n_up)]
    g = [tnn.Unflatten(1, (z, 1, 1)), tnn.ConvTranspose2d(z, w[-1], k, 1, 0, bias=False), tnn.BatchNorm2d(w[-1]),
         tnn.ReLU()]
    for i in range(n_up - 1, 0, -1):
        g += [tnn.ConvTranspose2d(w[i], w[i - 1], 4, 2, 1, bias=False), tnn.BatchNorm2d(w[i - 1]), tnn.ReLU()]
    d = [tnn.Conv2d(c, h, 4, 2, 1, bias=False), tnn.LeakyReLU(0.2)]
    for i in range(1, n_up):
        d += [tnn.Conv2d(w[i - 1], w[i], 4, 2, 1, bias=False), tnn.BatchNorm2d(w[i]), tnn.LeakyReLU(0.2)]
    return (tnn.Sequential(*g, tnn.ConvTranspose2d(h, c, 4, 2, 1, bias=False), tnn.Tanh()),
            tnn.Sequential(*d, tnn.Conv2d(w[-1], 1, k, 1, 0, bias=False), tnn.Flatten()))


def net_input(cfg, net, n=8, seed=0):
    rng = np.random.default_rng(seed)
    if net == "G":
        return rng.standard_normal((n, cfg.train.z_dim)).astype(np.float32)
    shape = (2,) if cfg.model == "mlp2d" else image_shape(cfg)
    return rng.uniform(-1, 1, (n, *shape)).astype(np.float32)


def busy_stats_torch(m, seed=0):
    """Non-trivial BatchNorm running statistics, so that eval mode and a lost buffer show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, tnn.modules.batchnorm._BatchNorm) and mod.track_running_stats:
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g, dtype=mod.running_mean.dtype))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g, dtype=mod.running_var.dtype) + .5)
                mod.num_batches_tracked.fill_(5 + seed)
    return m


def assert_twins_agree(np_m, t_m, x, train, grads=False, w=None):
    """Outputs (and buffers after the pass; with ``grads`` the input's and every parameter's gradient of Σ w·y)
    of an npgan module and its torch twin on ``x``, in float32, each within its rounding bound of the float64
    twin (tests/error_bounds.py), layer by layer and end to end; npgan against torch within the two bounds."""
    np_m.train(train)
    t_m.train(train)
    runs = eb.check_twins(np_m, t_m, x, f"(train={train})", grads=grads, w=w)
    assert runs["npgan"].out.dtype == runs["torch"].out.dtype == np.float32
    nstate, tstate = runs["npgan"].state, runs["torch"].state
    assert list(nstate) == list(tstate)
    for k, v in nstate.items():  # the same dtypes; counters exactly; statistics within bounds (check_layers)
        assert v.dtype == tstate[k].dtype, k
        if v.dtype.kind in "iu":
            np.testing.assert_array_equal(v, tstate[k], err_msg=k)


def _pair(preset, net):
    cfg = make_config(preset)
    G, D = build_models(cfg)
    tG, tD = torch_twin(cfg)
    return cfg, (G if net == "G" else D), (tG if net == "G" else tD)


# ============================================================================ through safetensors files
@pytest.mark.parametrize("preset,net", CASES, ids=IDS)
def test_npgan_file_loads_into_the_hand_built_torch_twin(tmp_path, preset, net):
    cfg, m, t = _pair(preset, net)
    busy_bn_stats(m)
    save(m, tmp_path / "w.safetensors", {"preset": preset})
    t.load_state_dict(load_file(tmp_path / "w.safetensors"), strict=True)
    x = net_input(cfg, net)
    assert_twins_agree(m, t, x, train=False)
    assert_twins_agree(m, t, x, train=True)  # batch statistics; running statistics updated alike


@pytest.mark.parametrize("preset,net", CASES, ids=IDS)
def test_torch_file_loads_into_npgan(tmp_path, preset, net):
    cfg, m, t = _pair(preset, net)
    torch.manual_seed(7)
    t = busy_stats_torch(torch_twin(cfg)[net == "D"])
    save_file(t.state_dict(), tmp_path / "w.safetensors")
    assert load_into(m, tmp_path / "w.safetensors") == {}  # torch writes no metadata
    x = net_input(cfg, net, seed=3)
    assert_twins_agree(m, t, x, train=False)
    assert_twins_agree(m, t, x, train=True)


# ============================================================================ through npgan.interop
@pytest.mark.parametrize("preset,net", CASES, ids=IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_to_torch_gives_the_same_outputs_and_gradients(preset, net, train):
    cfg, m, _ = _pair(preset, net)
    busy_bn_stats(m)
    m.train(train)
    t = interop.to_torch(m)
    assert t.training is train and all(c.training is train for c in t.modules())
    hand = torch_twin(cfg)[net == "D"]
    hand.load_state_dict(t.state_dict(), strict=True)  # the same keys and shapes as the hand-built twin
    assert_twins_agree(m, t, net_input(cfg, net), train=train, grads=True)


@pytest.mark.parametrize("preset,net", CASES, ids=IDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_from_torch_gives_the_same_outputs_and_gradients(preset, net, train):
    cfg = make_config(preset)
    torch.manual_seed(11)
    t = busy_stats_torch(torch_twin(cfg)[net == "D"]).train(train)
    rng_before = npgan.backend.get_rng_state()
    m = interop.from_torch(t)
    assert npgan.backend.get_rng_state() == rng_before  # building the layers did not draw from npgan's generator
    assert m.training is train and all(c.training is train for c in m.modules())
    assert repr(m) == repr(build_models(cfg)[net == "D"])
    assert_twins_agree(m, t, net_input(cfg, net, seed=5), train=train, grads=True)


def _zoo_npgan():
    """Every layer npgan has, with non-default arguments, nested, one module used twice."""
    act = nn.LeakyReLU(0.3)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1),
        nn.BatchNorm2d(4, eps=1e-3, momentum=None),
        act,
        nn.Sequential(nn.ConvTranspose2d(4, 3, (3, 2), stride=2, padding=(1, 0), output_padding=1, bias=False,
                                          dilation=(1, 2)),
                      nn.BatchNorm2d(3, affine=False, momentum=0.3), nn.Softplus()),
        nn.Conv2d(3, 3, 2, dilation=2, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Identity(),
        nn.Linear(3 * 6 * 6, 12),
        nn.BatchNorm1d(12, track_running_stats=False),
        act,
        nn.Dropout(0.0),
        nn.Unflatten(1, (3, 4)),
        nn.Tanh(),
        nn.BatchNorm1d(3),
        nn.Flatten(0, -1),
        nn.Sigmoid(),
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_layer_converts_both_ways(dtype):
    npgan.set_default_dtype(dtype)
    m = _zoo_npgan()
    busy_bn_stats(m)
    x = np.random.default_rng(2).standard_normal((5, 2, 7, 6)).astype(dtype)
    t = interop.to_torch(m)
    assert next(t.parameters()).dtype == getattr(torch, dtype)
    assert t[2] is t[10]  # a module used twice stays one module
    assert t[1].momentum is None and t[1].eps == 1e-3 and t[3][1].affine is False and t[9].running_mean is None
    assert t[3][0].output_padding == (1, 1) and t[3][0].dilation == (1, 2) and t[11].p == 0.0
    back = interop.from_torch(t)
    assert repr(back) == repr(m) and back[2] is back[10]
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[k], v, err_msg=k)
        assert back.state_dict()[k].dtype == v.dtype
    if dtype == "float32":
        assert_twins_agree(m, t, x, train=True, grads=True)
        assert_twins_agree(back, interop.to_torch(back), x, train=False, grads=True)
    else:  # float64: the same function, to rounding
        for train in (True, False):
            m.train(train)
            t.train(train)
            y, yt = m(npgan.tensor(x)).numpy(), t(torch.from_numpy(x)).detach().numpy()
            np.testing.assert_allclose(y, yt, rtol=1e-10, atol=1e-12)


def test_requires_grad_and_dropout_p_carry_over():
    m = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.25))
    m[0].bias.requires_grad = False
    t = interop.to_torch(m)
    assert t[0].weight.requires_grad and not t[0].bias.requires_grad and t[1].p == 0.25
    back = interop.from_torch(t)
    assert back[0].weight.requires_grad and not back[0].bias.requires_grad and back[1].p == 0.25


def test_float16_torch_weights_are_upcast_with_a_warning():
    t = tnn.Linear(3, 2).half()
    with pytest.warns(npgan.errors.PrecisionWarning, match="float16"):
        m = interop.from_torch(t)
    assert m.weight.dtype == np.float32
    np.testing.assert_array_equal(m.weight.numpy(), t.weight.detach().float().numpy())


# ============================================================================ what cannot be converted
class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Linear(2, 2)

    def forward(self, x):
        return x + self.f(x)


class MyLinear(nn.Linear):  # a subclass may change forward: not converted as a Linear
    pass


@pytest.mark.parametrize("bad,where,cls", [(Residual(), "1", "Residual"), (MyLinear(2, 2), "1", "MyLinear")])
def test_to_torch_names_the_layer_it_cannot_convert(bad, where, cls):
    m = nn.Sequential(nn.Linear(2, 2), bad)
    with pytest.raises(TypeError) as info:
        interop.to_torch(nn.Sequential(nn.ReLU(), m))
    msg = str(info.value)
    assert msg.startswith(f"npgan.interop.to_torch: cannot convert '1.{where}' ({cls}): ") and "\n" not in msg
    with pytest.raises(TypeError, match=r"cannot convert '<root>' \(Residual\)"):
        interop.to_torch(Residual())


@pytest.mark.parametrize("bad,why", [
    (tnn.GRU(2, 2), "custom Module subclass"),
    (tnn.Conv2d(2, 4, 3, groups=2), "groups=2"),
    (tnn.Conv2d(2, 4, 3, padding="same"), "padding='same'"),
    (tnn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
    (tnn.Softplus(beta=2), "beta=2"),
    (tnn.GELU(), "GELU"),
])
def test_from_torch_names_the_layer_it_cannot_convert(bad, why):
    rng_before = npgan.backend.get_rng_state()
    with pytest.raises(TypeError) as info:
        interop.from_torch(tnn.Sequential(tnn.Identity(), tnn.Sequential(tnn.ReLU(), bad)))
    msg = str(info.value)
    assert msg.startswith(f"npgan.interop.from_torch: cannot convert '1.1' ({type(bad).__name__}): "), msg
    assert why in msg and "\n" not in msg
    assert npgan.backend.get_rng_state() == rng_before


# ============================================================================ torch stays optional
def test_import_npgan_does_not_import_torch():
    code = ("import sys, npgan, npgan.interop, npgan.weights, npgan.run.presets; "
            "print(sorted(m for m in ('torch', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_weights_doc_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).resolve().parent.parent / "docs" / "weights.md").read_text(encoding="utf-8")
    m = re.search(r"## Weights in and out\n.*?```python\n(.*?)```", text, re.S)
    assert m, "docs/weights.md lost its 'Weights in and out' example"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(m.group(1), "docs/weights.md", "exec"), ns)
    assert ns["back"]  # npgan on the same weights both times: the same ops, equal exactly
    # its "same" (np.allclose at atol 1e-6) holds here with a factor 4 to spare, but no bound promises it on every
    # BLAS kernel; what the example shows is checked with the bounds of tests/error_bounds.py instead
    eb.check_twins(ns["run"].G, ns["G_torch"], ns["z"], "(the docs' weights example)")
