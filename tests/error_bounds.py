"""Float32 error bounds for the tests: how far a float32 result may lie from the exact one, from the operation.

The model (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., ch. 2-3). Every float32 operation
that is correctly rounded (+, −, ×, /, √, FMA) returns op(a, b)(1 + δ), |δ| ≤ u = 2⁻²⁴ (half an ulp; one ulp of y
is at most 2u|y|). A sum of n products, computed in ANY order, tree or blocking, with or without FMA — which
is all a BLAS kernel, numpy's pairwise sum or an im2col convolution may choose — obeys, componentwise,

    |fl(Σᵢ aᵢbᵢ) − Σᵢ aᵢbᵢ| ≤ γ_n Σᵢ |aᵢ||bᵢ|,     γ_n = n·u / (1 − n·u)                         (Higham 3.5)

so a bound that holds on one kernel holds on every kernel: Sandybridge, Haswell, SkylakeX and a GPU differ
only in the order. (It does not cover Winograd or FFT convolutions, which are not sums of the products;
neither npgan nor PyTorch's CPU convolution uses them here.) γ_n grows with n, so the largest product count of
any element of an op bounds all of them (:meth:`_Affine.counts`, checked against the op run on arrays of ones).

Elementwise functions of a library (exp, log1p, tanh) are not correctly rounded: NumPy's and PyTorch's
float32 loops are documented to lie within 4 ulp, = 8u relative (measured here over 12 million points:
tanh ≤ 1.8u, exp ≤ 3.4u, log1p(exp) ≤ 5.1u, npgan's sigmoid ≤ 4.7u, PyTorch's ≤ 2.5u). Results below the
smallest normal float32, 2⁻¹²⁶, lose relative accuracy: each such function adds TINY = 2⁻¹²⁶ absolute.

Propagation per layer (first order: terms in u², u·e and e² with e/|x| ≪ 1 are dropped; where they are kept
below it is because they cost nothing). x is the exact input, e_x a bound on |x₃₂ − x| componentwise, so
|x₃₂| ≤ |x| + e_x; |·| of a weight is the same op run on the absolute values (in float64, by PyTorch):

  affine (Linear, Conv2d, ConvTranspose2d), y = f(x, W) + b with f bilinear, n products per output:
      e_y  ≤ f(e_x, |W|) + γ_{n+1} (f(|x| + e_x, |W|) + |b|)
    backward, gy exact, e_gy its bound, f_xᵀ and f_Wᵀ the vector-Jacobian products of f (of x, of W):
      e_gx ≤ f_xᵀ(e_gy; |W|) + γ_n' f_xᵀ(|gy| + e_gy; |W|)
      e_gW ≤ f_Wᵀ(e_gy; |x| + e_x) + f_Wᵀ(|gy|; e_x) + γ_n'' f_Wᵀ(|gy| + e_gy; |x| + e_x)
      e_gb ≤ Σ e_gy + γ_m Σ (|gy| + e_gy)          (n', n'', m: the products in each sum, counted as above)
  ReLU / LeakyReLU (slope a): Lipschitz max(1, |a|); a·x rounds twice (a itself is a float32): 2u·|a x|.
      Through the kink see MASKS below.
  Tanh, Sigmoid, Softplus: their derivative's supremum L over [x − e_x, x + e_x] (each derivative is
      monotone in |x| or x, so the supremum sits at an end), plus their own error c·u·|y| + TINY: c = 8 (tanh),
      12 (sigmoid: exp, then three roundings), 20 (softplus: exp, log1p and one addition).
      Backward gx = gy·φ'(x) with φ' computed from the float32 y or x: |Δφ'| ≤ (sup|φ''|)·e, plus roundings.
  Flatten, Unflatten, Identity, Dropout(p=0): exact, the bound is moved like the values.
  BatchNorm (1d/2d; per channel m values; training, or no running statistics: the batch's, two-pass)
      μ = Σx/m:              e_μ ≤ Σe_x/m + γ_{m+1} Σ(|x| + e_x)/m
      d = x − μ:             e_d ≤ e_x + e_μ + u(|d| + e_x + e_μ)
      v = Σd²/m:             e_v ≤ Σ e_d(2|d| + e_d)/m + γ_{m+1} Σ(|d| + e_d)²/m
      s = 1/√(v + ε):        e_s/s ≤ ρ = e_v/(2(v + ε)) + 4u     (ε rounded to float32, +, √, 1/·)
      y = γ(x − μ)s + β:     e_y ≤ |γ| s (e_x + e_μ) + |γ| M (ρ + 6u) + 3u|β|,   M = s(|x| + e_x + |μ| + e_μ)
    M bounds |x̂| in any order of evaluation, so the one bound covers npgan's x̂ = (x − μ)·s, y = γx̂ + β and
    PyTorch's fused y = x·(γs) + (β − μγs). Evaluation mode with running statistics: the same with e_μ = e_v = 0.
    Backward, a = γs (e_a ≤ |γ| s (2ρ + 2u): some orders form s² first), gβ = Σgy, gγ = Σ gy x̂:
      e_gβ ≤ Σe_gy + γ_m Σ(|gy| + e_gy)
      e_gγ ≤ Σ (e_gy (|x̂| + e_x̂) + |gy| e_x̂) + γ_{m+1} Σ (|gy| + e_gy)(M + e_x̂),   e_x̂ = s(e_x + e_μ) + M(ρ + 3u)
      gx = a gy − a gβ/m − a x̂ gγ/m   (training; evaluation: gx = a gy)
      e_gx ≤ |a| e_gy + e_a(|gy| + e_gy) + (|a| e_gβ + e_a|gβ|)/m + (|a| M e_gγ + |a| e_x̂|gγ| + e_a M |gγ|)/m
             + 6u (|a|(|gy| + e_gy) + |a||gβ|/m + |a| M |gγ|/m)
    running statistics, r ← (1 − f) r + f·stat (f = momentum, or 1/count): e ≤ f·e_stat + 4u((1 − f)|r| + f|stat|),
      running_var's stat the unbiased v·m/(m − 1).
The float64 reference (PyTorch in float64 on the same float32 weights) has the same bound with 2⁻⁵³ for u: it
is below 2⁻²⁹ of the bounds here, inside the dropped second-order terms.

MASKS. A ReLU/LeakyReLU gradient is a step function of the pre-activation: a pre-activation 4e-7 from zero
takes one branch in float32 on one BLAS kernel and the other in float64, and the gradient below it moves by a
whole term. So gradients are never compared through a kink against a reference that chose its own branch:
  * layer by layer (:func:`check_layers`), each layer's float64 reference runs on the engine's own float32
    input, so it takes exactly the engine's branches;
  * end to end (:func:`propagate` with ``masks``), the float64 reference takes, at each ReLU/LeakyReLU, the
    branch the float32 run took (its pre-activation > 0). Outputs need no mask: ReLU and LeakyReLU are
    continuous (Lipschitz 1), so a flipped branch moves the output by at most the error of the input, which
    the bound already carries.

Why both. The end-to-end bound multiplies, layer after layer, |W| by the previous bound: summing absolute
values it assumes every rounding error lines up with every weight, which grows the relative bound by ~√n per
layer (n the products per output). Measured on the presets' nets (batch 8): for the MLPs without batch norm
it stays below 4e-4 (ring8's G) to 0.12 (mnist-mlp's D) of the largest output; with batch norm in training it
exceeds the outputs (digits-mlp's G: 9 times, its input gradient 3e6 times; dcgan64's D: 1e9 times, or the
first-order bound overflows, counted as +inf), and then it can catch nothing. Layer by layer the input error is
zero and only the layer's own rounding counts: 1e-8 to 1.3e-2 of a layer's largest value (the most for
dcgan64's last convolution, n = 8192 products). On every kernel tried the float32 results used up to 0.98 of
it where it is a single rounding (the input gradient of a Linear with one output, one product per element) and
up to 0.72 elsewhere. It catches a wrong index, a dropped term, a wrong slope, a biased running variance or a
float32-only wrong eps (each checked by breaking it in a copy of npgan); formula errors smaller than the bound
are the float64 tests' job (to 1e-10).

Elsewhere in the suite a float32 comparison cites this model in one line beside it, e.g. "one rounding of an
elementwise op: u relative"; :func:`kde_entropy_bounds` carries it through the KDE entropy estimator.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager

import numpy as np

import npgan

U = 2.0 ** -24
"""Unit roundoff of float32: a correctly rounded operation errs by at most u·|result|."""

TINY = 2.0 ** -126
"""The smallest normal float32: absolute slack for an elementwise function whose result underflows."""

FN_ULPS = {"tanh": 8, "sigmoid": 12, "softplus": 20}
"""Relative error (in units of u) of each library elementwise function, as the module docstring derives."""


def gamma(n, u=U):
    """γ_n = n·u/(1 − n·u): the relative bound of a sum of n products (n a number or an array of counts; u the
    unit roundoff, float32's unless given)."""
    return n * u / (1 - n * u)


def _torch():
    import torch
    return torch


# ============================================================================ layers: exact values and bounds
class Step:
    """One call of a layer in the float64 reference: the exact output ``y``, its bound ``ey``, and
    ``backward(gy, egy) -> (gx, egx, {parameter name: (g, eg)})``."""

    def __init__(self, y, ey, backward):
        self.y, self.ey, self._backward = y, ey, backward

    def backward(self, gy, egy):
        return self._backward(gy, egy)


class _Affine:
    """Linear, Conv2d, ConvTranspose2d: y = f(x, W) + b, f bilinear (the layer without its bias). The product
    counts are the largest of any element (γ grows with n, so the largest count bounds every element):
    forward C_in·k_h·k_w (Linear: in), input gradient C_out·k_h·k_w (Linear: out), weight gradient the
    positions N·H·W of the convolution's smaller side (Linear: the batch); see :meth:`counts`."""

    def __init__(self, m, names):
        torch = _torch()
        self.m, self.names = m, names
        self.linear = isinstance(m, torch.nn.Linear)
        self.transposed = isinstance(m, torch.nn.ConvTranspose2d)

    def f(self, x, w):
        F = _torch().nn.functional
        m = self.m
        if self.linear:
            return F.linear(x, w)
        if self.transposed:
            return F.conv_transpose2d(x, w, None, m.stride, m.padding, m.output_padding, m.groups, m.dilation)
        return F.conv2d(x, w, None, m.stride, m.padding, m.dilation, m.groups)

    def vjp(self, v, x, w, wrt_x):
        """f_xᵀ(v; w) (``wrt_x``: the input gradient, x only gives the shape) or f_Wᵀ(v; x) (the weight
        gradient, w only gives the shape) of f at x, w. Written as the adjoint convolution and as unfold and a
        matrix product: PyTorch's own float64 convolution backward is several times slower."""
        torch = _torch()
        F = torch.nn.functional
        m = self.m
        if self.linear:
            return v @ w if wrt_x else v.reshape(-1, v.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        if m.groups != 1:
            return torch.ops.aten.convolution_backward(v, x, w, None, m.stride, m.padding, m.dilation, self.transposed,
                                                       m.output_padding if self.transposed else (0, 0), m.groups,
                                                       [wrt_x, not wrt_x, False])[0 if wrt_x else 1]
        if wrt_x and self.transposed:  # the adjoint of a transposed convolution is the convolution
            return F.conv2d(v, w, None, m.stride, m.padding, m.dilation)
        if wrt_x:
            small = [(v.shape[2 + i] - 1) * m.stride[i] - 2 * m.padding[i] + m.dilation[i] * (m.kernel_size[i] - 1) + 1
                     for i in range(2)]
            pad_out = tuple(x.shape[2 + i] - small[i] for i in range(2))
            return F.conv_transpose2d(v, w, None, m.stride, m.padding, pad_out, 1, m.dilation)
        # weight: Σ over batch and positions of (gradient at the large side) × (unfolded small side)
        large, small = (v, x) if self.transposed else (x, v)  # the convolution's input and output sides
        cols = F.unfold(large, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, C_large·k_h·k_w, L)
        N, C = small.shape[:2]
        g = small.reshape(N, C, -1).transpose(0, 1).reshape(C, -1) @ cols.transpose(1, 2).reshape(-1, cols.shape[1])
        return g.reshape(m.weight.shape)

    def counts(self, x, y):
        """(forward, input-gradient, weight-gradient) product counts of the largest element. A transposed
        convolution (the forward of ConvTranspose2d, the input gradient of Conv2d) reaches an element through
        ⌈k/(s/gcd(s, d))⌉ taps per axis, not k: only the taps of one residue class of the stride land on it."""
        m = self.m
        if self.linear:
            return m.in_features, m.out_features, x.numel() // x.shape[-1]
        k = m.kernel_size[0] * m.kernel_size[1]
        k_t = 1
        for ks, st, dl in zip(m.kernel_size, m.stride, m.dilation):
            k_t *= -(-ks // (st // math.gcd(st, dl)))
        c_in, c_out = m.in_channels // m.groups, m.out_channels // m.groups
        if self.transposed:
            return c_in * k_t, c_out * k, x[:, 0].numel()
        return c_in * k, c_out * k_t, y[:, 0].numel()

    def _bias(self, b, ndim):
        return b if self.linear else b.reshape((1, -1) + (1,) * (ndim - 2))

    def call(self, x, ex, mask=None):
        W = self.m.weight.detach()
        b = None if self.m.bias is None else self.m.bias.detach()
        aW, xa = W.abs(), x.abs() + ex
        y = self.f(x, W)
        n_f, n_x, n_w = self.counts(x, y)
        g_f = gamma(n_f + (b is not None))
        ey = self.f(ex + g_f * xa, aW)  # f(e_x, |W|) + γ f(|x| + e_x, |W|): f is linear in its first argument
        if b is not None:
            y = y + self._bias(b, x.ndim)
            ey = ey + g_f * self._bias(b.abs(), x.ndim)

        def backward(gy, egy):
            ga = gy.abs() + egy
            gx = self.vjp(gy, x, W, True)
            egx = self.vjp(egy + gamma(n_x) * ga, x, aW, True)
            gW = self.vjp(gy, x, W, False)
            egW = self.vjp(egy + gamma(n_w) * ga, xa, W, False)
            if bool((ex != 0).any()):
                egW = egW + self.vjp(gy.abs(), ex, W, False)
            grads = {self.names["weight"]: (gW, egW)}
            if b is not None:
                ax = gy.ndim - 1 if self.linear else 1
                axes = tuple(i for i in range(gy.ndim) if i != ax)
                n_b = gy.numel() // gy.shape[ax]
                grads[self.names["bias"]] = (gy.sum(axes), egy.sum(axes) + gamma(n_b) * ga.sum(axes))
            return gx, egx, grads

        return Step(y, ey, backward)


class _Kinked:
    """ReLU (a = 0) and LeakyReLU (slope a): y = k·x, k = 1 where the branch is x > 0, else a."""

    def __init__(self, m, names):
        self.a = float(getattr(m, "negative_slope", 0.0))

    def call(self, x, ex, mask=None):
        torch = _torch()
        pos = x > 0 if mask is None else torch.as_tensor(mask)
        k = torch.where(pos, 1.0, self.a).to(x.dtype)
        y = k * x
        lip = max(1.0, abs(self.a)) if mask is None else k  # unmasked: the branch may differ, Lipschitz bound
        ey = lip * ex + 2 * U * abs(self.a) * (x.abs() + ex)  # a·x: a rounded to float32, then the product

        def backward(gy, egy):
            return k * gy, k * egy + 2 * U * abs(self.a) * (gy.abs() + egy), {}

        return Step(y, ey, backward)


class _Smooth:
    """Tanh, Sigmoid, Softplus (β = 1): derivative bounds from the supremum over [x − e_x, x + e_x]."""

    def __init__(self, m, names):
        torch = _torch()
        self.kind = {torch.nn.Tanh: "tanh", torch.nn.Sigmoid: "sigmoid", torch.nn.Softplus: "softplus"}[type(m)]
        if self.kind == "softplus" and m.beta != 1:
            raise NotImplementedError("error_bounds: Softplus with beta != 1")

    def call(self, x, ex, mask=None):
        torch = _torch()
        c = FN_ULPS[self.kind] * U
        lo = (x.abs() - ex).clamp(min=0)  # the point of the interval nearest 0
        if self.kind == "tanh":
            y = torch.tanh(x)
            lip = 1 - torch.tanh(lo) ** 2  # tanh' = 1 − tanh², largest nearest 0
        elif self.kind == "sigmoid":
            y = torch.sigmoid(x)
            lip = torch.sigmoid(lo) * (1 - torch.sigmoid(lo))  # σ' = σ(1 − σ), largest nearest 0
        else:
            y = torch.logaddexp(torch.zeros_like(x), x)  # log(1 + eˣ) without PyTorch's threshold branch
            lip = torch.sigmoid(x + ex)  # softplus' = σ, increasing
        ey = lip * ex + c * (y.abs() + lip * ex) + TINY

        def backward(gy, egy):
            ga = gy.abs() + egy
            if self.kind == "tanh":  # gx = gy (1 − y²) from the float32 y; d/dy (1 − y²) = −2y
                d = 1 - y * y
                ya = y.abs() + ey
                egx = d * egy + ga * (2 * y.abs() + ey) * ey + 3 * U * ga * (1 + ya * ya)
            elif self.kind == "sigmoid":  # gx = gy y (1 − y); d/dy y(1 − y) = 1 − 2y
                d = y * (1 - y)
                ya = y.abs() + ey
                egx = d * egy + ga * ((1 - 2 * y).abs() + ey) * ey + 3 * U * ga * ya * (1 + ya)
            else:  # gx = gy σ(x) from the float32 x; σ' ≤ its value nearest 0, σ itself within 12u
                d = torch.sigmoid(x)
                slo = torch.sigmoid(lo)
                egx = d * egy + ga * slo * (1 - slo) * ex + (FN_ULPS["sigmoid"] + 1) * U * ga * (d + ex)
            return gy * d, egx + TINY, {}

        return Step(y, ey, backward)


class _Reshape:
    """Flatten, Unflatten, Identity, Dropout(p = 0): exact; the bound moves with the values."""

    def __init__(self, m, names):
        if getattr(m, "p", 0.0) != 0.0 and m.training:
            raise NotImplementedError("error_bounds: Dropout with p > 0 draws a random mask: no reference")
        self.m = m

    def call(self, x, ex, mask=None):
        y = self.m(x)
        return Step(y, self.m(ex), lambda gy, egy: (gy.reshape(x.shape), egy.reshape(x.shape), {}))


class _BatchNorm:
    """BatchNorm1d/2d in training or evaluation, with or without running statistics (module docstring)."""

    def __init__(self, m, names):
        self.m, self.names = m, names
        track = m.running_mean is not None
        self.rm = m.running_mean.detach().clone() if track else None
        self.rv = m.running_var.detach().clone() if track else None
        self.e_rm = self.e_rv = 0.0
        self.count = int(m.num_batches_tracked) if track else 0

    def buffers(self):
        """{buffer attribute: (exact value, bound)} after the calls so far (the running statistics)."""
        if self.rm is None:
            return {}
        return {"running_mean": (self.rm, self.e_rm), "running_var": (self.rv, self.e_rv)}

    def call(self, x, ex, mask=None):
        torch = _torch()
        m = self.m
        N, C = x.shape[:2]
        x3, e3 = x.reshape(N, C, -1), ex.reshape(N, C, -1)
        cnt = x3.shape[0] * x3.shape[2]

        def mean(a):
            return a.mean((0, 2), keepdim=True)

        use_batch = m.training or m.running_mean is None
        if use_batch:
            mu = mean(x3)
            emu = mean(e3) + gamma(cnt + 1) * mean(x3.abs() + e3)
            d = x3 - mu
            ed = e3 + emu + U * (d.abs() + e3 + emu)
            v = mean(d * d)
            ev = mean(ed * (2 * d.abs() + ed)) + gamma(cnt + 1) * mean((d.abs() + ed) ** 2)
        else:
            mu, v = m.running_mean.detach().reshape(1, C, 1), m.running_var.detach().reshape(1, C, 1)
            emu, ev = torch.zeros_like(mu), torch.zeros_like(v)
            d = x3 - mu
        s = (v + m.eps) ** -0.5
        rho = ev / (2 * (v + m.eps)) + 4 * U
        ones = torch.ones(1, C, 1, dtype=x.dtype)
        g = m.weight.detach().reshape(1, C, 1) if m.affine else ones
        b = m.bias.detach().reshape(1, C, 1) if m.affine else 0 * ones
        xh = d * s
        M = s * (x3.abs() + e3 + mu.abs() + emu)
        exh = s * (e3 + emu) + M * (rho + 3 * U)
        y = g * xh + b
        ey = g.abs() * s * (e3 + emu) + g.abs() * M * (rho + 6 * U) + 3 * U * b.abs()
        if m.training and self.rm is not None:
            self.count += 1
            f = 1.0 / self.count if m.momentum is None else m.momentum
            unb = cnt / (cnt - 1)
            mu1, v1, emu1, ev1 = mu.reshape(C), v.reshape(C), emu.reshape(C), ev.reshape(C)
            self.e_rm = (1 - f) * self.e_rm + f * emu1 + 4 * U * ((1 - f) * self.rm.abs() + f * mu1.abs())
            self.e_rv = (1 - f) * self.e_rv + f * unb * ev1 + 4 * U * ((1 - f) * self.rv.abs() + f * unb * v1)
            self.rm = (1 - f) * self.rm + f * mu1
            self.rv = (1 - f) * self.rv + f * unb * v1

        def backward(gy, egy):
            gy3, eg3 = gy.reshape(x3.shape), egy.reshape(x3.shape)
            ga = gy3.abs() + eg3

            def tot(a):
                return a.sum((0, 2), keepdim=True)

            a = g * s
            ea = g.abs() * s * (2 * rho + 2 * U)
            gb, egb = tot(gy3), tot(eg3) + gamma(cnt) * tot(ga)
            gg = tot(gy3 * xh)
            egg = tot(eg3 * (xh.abs() + exh) + gy3.abs() * exh) + gamma(cnt + 1) * tot(ga * (M + exh))
            if use_batch:
                gx = a * gy3 - a * gb / cnt - a * xh * gg / cnt
                egx = (a.abs() * eg3 + ea * ga + (a.abs() * egb + ea * gb.abs()) / cnt
                       + (a.abs() * M * egg + a.abs() * exh * gg.abs() + ea * M * gg.abs()) / cnt
                       + 6 * U * (a.abs() * ga + a.abs() * gb.abs() / cnt + a.abs() * M * gg.abs() / cnt))
            else:
                gx, egx = a * gy3, a.abs() * eg3 + ea * ga + U * a.abs() * ga
            grads = {}
            if m.affine:
                grads[self.names["weight"]] = (gg.reshape(C), egg.reshape(C))
                grads[self.names["bias"]] = (gb.reshape(C), egb.reshape(C))
            return gx.reshape(x.shape), egx.reshape(x.shape), grads

        return Step(y.reshape(x.shape), ey.reshape(x.shape), backward)


def reference_layer(m, names):
    """The float64 reference of one torch layer ``m`` (float64), ``names`` mapping its parameter and buffer
    attributes ("weight", "running_mean", …) to the model's dotted names. Its ``call(x, e_x, mask=None)``
    returns a :class:`Step`."""
    torch = _torch()
    tnn = torch.nn
    for types, cls in (((tnn.Linear, tnn.Conv2d, tnn.ConvTranspose2d), _Affine), ((tnn.ReLU, tnn.LeakyReLU), _Kinked),
                       ((tnn.Tanh, tnn.Sigmoid, tnn.Softplus), _Smooth),
                       ((tnn.Flatten, tnn.Unflatten, tnn.Identity, tnn.Dropout), _Reshape),
                       ((tnn.modules.batchnorm._BatchNorm,), _BatchNorm)):
        if isinstance(m, types):
            return cls(m, names)
    raise NotImplementedError(f"error_bounds: no bound for {type(m).__name__}")


def is_kink(m) -> bool:
    """A layer whose gradient jumps at 0 (ReLU, LeakyReLU): compared with the float32 run's branches."""
    torch = _torch()
    return isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU))


# ============================================================================ a Sequential: layers in call order
def named_leaves(module, prefix=""):
    """[(name, layer)] of a (nested) Sequential in call order; a layer used twice appears twice."""
    kids = getattr(module, "_modules", {})
    if type(module).__name__ != "Sequential":
        return [(prefix, module)]
    out = []
    for k, m in kids.items():
        out += named_leaves(m, f"{prefix}.{k}" if prefix else k)
    return out


class Reference:
    """A float64 torch twin ``t64`` (float32 weights held exactly in float64) walked layer by layer, each layer
    with its error-bound rule. ``layers`` are the per-layer references, one per distinct module (a module used
    twice keeps its running statistics across both calls)."""

    def __init__(self, t64):
        self.leaves = named_leaves(t64)
        pnames = {id(p): n for n, p in t64.named_parameters()}
        self.layers = {}
        for _, m in self.leaves:
            if id(m) not in self.layers:
                names = {k: pnames[id(p)] for k, p in m.named_parameters(recurse=False)}
                self.layers[id(m)] = reference_layer(m, names)

    def layer(self, i):
        return self.layers[id(self.leaves[i][1])]

    def buffers(self):
        """{state_dict key: (exact value, bound)} of the running statistics after the calls so far, under every
        name of a module used twice."""
        out = {}
        for name, m in self.leaves:
            layer = self.layers[id(m)]
            for k, ve in (layer.buffers() if isinstance(layer, _BatchNorm) else {}).items():
                out[f"{name}.{k}" if name else k] = ve
        return out


def propagate(t64, x, masks=None):
    """End to end: the float64 reference of ``t64`` on the exact input ``x`` (a float64 torch tensor, no error),
    the bound carried from layer to layer. ``masks[i]`` (the float32 run's pre-activation > 0 at layer call i)
    makes the i-th ReLU/LeakyReLU take the float32 run's branch. Returns ``(steps, reference)``."""
    torch = _torch()
    ref = Reference(t64)
    steps, ex = [], torch.zeros_like(x)
    with torch.no_grad():
        for i in range(len(ref.leaves)):
            step = ref.layer(i).call(x, ex, None if masks is None else masks[i])
            step.ey = _unbounded_is_inf(step.ey)
            steps.append(step)
            x, ex = step.y, step.ey
    return steps, ref


def backpropagate(steps, gy):
    """The float64 reference's gradients of Σ gy·y through ``steps`` (:func:`propagate`'s, with the float32
    run's masks), each with its bound: ``(gx, egx, {parameter name: (g, eg)})``; a parameter used twice sums
    its two gradients (one more rounding: u·Σ|g|)."""
    torch = _torch()
    egy = torch.zeros_like(gy)
    grads = {}
    with torch.no_grad():
        for step in reversed(steps):
            gy, egy, pg = step.backward(gy, egy)
            egy = _unbounded_is_inf(egy)
            _accumulate(grads, {k: (g, _unbounded_is_inf(e)) for k, (g, e) in pg.items()})
    return gy, egy, grads


def _unbounded_is_inf(e):
    """A bound that overflowed (inf, or NaN from inf − inf or 0·inf) bounds nothing: +inf."""
    return _torch().nan_to_num(e, nan=float("inf"))


def _accumulate(total, new):
    for k, (g, e) in new.items():
        if k in total:
            g0, e0 = total[k]
            total[k] = (g0 + g, e0 + e + U * (g0.abs() + e0 + g.abs() + e))
        else:
            total[k] = (g, e)


# ============================================================================ comparison
def _f64(a):
    """A float64 host array of a numpy/cupy array, an npgan tensor, a torch tensor or a number."""
    if isinstance(a, npgan.Tensor):
        a = a.data
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(npgan.backend.to_numpy(a) if not np.isscalar(a) else a, dtype=np.float64)


def assert_within(a32, ref, bound, what):
    """|a32 − ref| ≤ bound in every element (a32: the float32 result; ref, bound: float64 arrays or tensors),
    or an AssertionError naming the worst element, its error and its bound."""
    a, r = _f64(a32), _f64(ref)
    b = np.broadcast_to(_f64(bound), r.shape)
    assert a.shape == r.shape, f"{what}: shape {a.shape} != {r.shape}"
    err = np.abs(a - r)
    bad = ~(err <= b)  # NaN counts as a failure
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - b, -np.inf)), r.shape)
        raise AssertionError(f"{what}: |float32 - float64| = {err[i]:.3g} > bound {b[i]:.3g} at {tuple(map(int, i))} "
                             f"(exact value {r[i]:.6g}; {int(bad.sum())} of {r.size} elements outside)")


def ratio(a32, ref, bound):
    """max |a32 − ref| / bound: how much of its bound a result used (for reports; 0 when nothing differs)."""
    a, r = _f64(a32), _f64(ref)
    b = _f64(bound)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.abs(a - r) / np.broadcast_to(b, r.shape)
    q = np.where(np.abs(a - r) == 0, 0.0, q)
    return float(q.max()) if q.size else 0.0


# ============================================================================ recording a float32 run
class Run:
    """What one float32 run of a Sequential recorded: per layer call ``xs[i]`` (input), ``ys[i]`` (output) and,
    after backward, ``gys[i]`` (the gradient at the output); ``gx`` the input's gradient, ``grads`` every
    parameter's gradient and ``state`` the state_dict after the pass, all as numpy arrays."""

    def __init__(self):
        self.xs, self.ys, self.gys = [], [], []
        self.gx, self.grads, self.state = None, {}, {}

    def gx_of(self, i):
        """The gradient at the input of layer call i (the output gradient of call i − 1)."""
        return self.gx if i == 0 else self.gys[i - 1]

    def masks(self):
        """Per layer call: the float32 pre-activation > 0 (the branch taken) for every call (used at kinks)."""
        return [x > 0 for x in self.xs]


@contextmanager
def recording_npgan(module, run):
    """While active, every leaf layer call of the npgan Sequential ``module`` appends its input and output to
    ``run`` and routes its output through an identity Function that records the output's gradient in
    backward (the arrays pass unchanged: the run computes exactly what an unrecorded one does)."""
    from npgan.tensor import Function

    class Probe(Function):
        def __init__(self, slot):
            self.slot = slot

        def forward(self, y):
            return y

        def backward(self, gy):
            run.gys[self.slot] = np.array(npgan.backend.to_numpy(gy), copy=True)
            return gy

    patched = []
    for _, m in named_leaves(module):
        if any(m is p for p in patched):
            continue
        patched.append(m)
        orig = m.forward

        def fwd(x, _orig=orig):
            y = _orig(x)
            run.xs.append(np.array(npgan.backend.to_numpy(x.data), copy=True))
            run.ys.append(np.array(npgan.backend.to_numpy(y.data), copy=True))
            run.gys.append(None)
            return Probe(len(run.gys) - 1)(y)

        object.__setattr__(m, "forward", fwd)
    try:
        yield run
    finally:
        for m in patched:
            m.__dict__.pop("forward", None)


@contextmanager
def recording_torch(module, run):
    """The same for a torch Sequential, through forward hooks (outputs keep their gradient: retain_grad)."""
    outs = []

    def hook(m, inputs, y):
        run.xs.append(inputs[0].detach().numpy().copy())
        run.ys.append(y.detach().numpy().copy())
        if y.requires_grad:
            y.retain_grad()
        outs.append(y)
        run.gys.append(None)

    handles, seen = [], []
    for _, m in named_leaves(module):
        if not any(m is s for s in seen):
            seen.append(m)
            handles.append(m.register_forward_hook(hook))
    try:
        yield run
    finally:
        for h in handles:
            h.remove()
        for i, y in enumerate(outs):
            if y.grad is not None:
                run.gys[i] = y.grad.numpy().copy()


# ============================================================================ the checks
def check_layers(t64, run, what, grads=True):
    """Layer by layer: every layer call of the float32 ``run`` against the float64 reference of that layer
    (from ``t64``) on the run's own float32 input — output, input gradient, every parameter's gradient (summed
    over the calls of a shared layer) and the running statistics — within the layer's own rounding bound."""
    torch = _torch()
    ref = Reference(t64)
    assert len(run.xs) == len(ref.leaves), f"{what}: {len(run.xs)} layer calls, the twin has {len(ref.leaves)}"
    total = {}
    with torch.no_grad():
        for i, (name, m) in enumerate(ref.leaves):
            x = torch.from_numpy(run.xs[i].astype(np.float64))
            step = ref.layer(i).call(x, torch.zeros_like(x))
            label = f"{what}: layer {name} ({type(m).__name__})"
            assert_within(run.ys[i], step.y, step.ey, f"{label} output")
            if not grads:
                continue
            gy = torch.from_numpy(run.gys[i].astype(np.float64))
            gx, egx, pg = step.backward(gy, torch.zeros_like(gy))
            assert_within(run.gx_of(i), gx, egx, f"{label} input gradient")
            _accumulate(total, pg)
    for k, (g, e) in total.items():
        assert_within(run.grads[k], g, e, f"{what}: gradient of {k}")
    if grads:
        assert set(total) == set(run.grads), f"{what}: gradients of {sorted(run.grads)}, expected {sorted(total)}"
    for k, (v, e) in ref.buffers().items():
        assert_within(run.state[k], v, e, f"{what}: {k} after the pass")


class EndToEnd:
    """End to end (first-order bounds carried through every layer, module docstring): the float64 reference of
    ``t64`` on the exact input ``x``, computed once, against which float32 runs are checked."""

    def __init__(self, t64, x):
        torch = _torch()
        self.t64, self.x64 = t64, torch.from_numpy(np.asarray(x, dtype=np.float64))
        self.steps, self.ref = propagate(t64, self.x64)
        inputs = [self.x64] + [s.y for s in self.steps[:-1]]
        self.exact_masks = [(x > 0).numpy() if is_kink(m) else None for x, (_, m) in zip(inputs, self.ref.leaves)]
        self._grads = {}

    @property
    def out_bound(self):
        return self.steps[-1].ey

    def check_outputs(self, run, what):
        """Every layer output of the float32 ``run`` within its bound (no masks: the outputs are continuous in
        the pre-activations, so a branch the float32 run took differently moves them by at most the input's
        error, which the bound already carries)."""
        for i, ((name, m), step) in enumerate(zip(self.ref.leaves, self.steps)):
            label = f"{what}: output of layer {name} ({type(m).__name__}), end to end"
            assert_within(run.ys[i], step.y, step.ey, label)

    def gradients(self, masks, w):
        """The reference's gradients of Σ w·y taking the branches ``masks`` (None: the exact ones)."""
        torch = _torch()
        key = (w.tobytes(), None if masks is None else b"".join(m.tobytes() for m in masks if m is not None))
        if key not in self._grads:
            steps = self.steps if masks is None else propagate(self.t64, self.x64, masks)[0]
            self._grads[key] = backpropagate(steps, torch.from_numpy(np.asarray(w, dtype=np.float64)))
        return self._grads[key]

    def check_gradients(self, run, w, what):
        """The input and parameter gradients of Σ w·y of the float32 ``run`` against the float64 reference that
        takes the run's branch at every ReLU/LeakyReLU (the exact reference when every branch agrees)."""
        masks = [mask if ex is not None else None for mask, ex in zip(run.masks(), self.exact_masks)]
        same = all(m is None or np.array_equal(m, e) for m, e in zip(masks, self.exact_masks))
        gx, egx, grads = self.gradients(None if same else masks, w)
        assert_within(run.gx, gx, egx, f"{what}: input gradient, end to end")
        for k, (g, e) in grads.items():
            assert_within(run.grads[k], g, e, f"{what}: gradient of {k}, end to end")


# ============================================================================ npgan and its torch twin
def npgan_run(m, x, grads=False, w=None):
    """npgan's float32 pass of ``m`` on the array ``x`` (and, with ``grads``, the backward of Σ w·y; ``w`` None:
    standard normal, seed 1), recorded layer by layer: a :class:`Run` with ``out``, ``w``, ``gx``, ``grads`` and
    ``state`` (the state_dict after the pass)."""
    run = Run()
    xn = npgan.tensor(x, requires_grad=grads)
    with recording_npgan(m, run):
        y = m(xn)
        if w is None:
            w = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        run.w = w
        if grads:
            (y * npgan.tensor(w)).sum().backward()
    run.out = y.numpy()
    if grads:
        run.gx = npgan.backend.to_numpy(xn.grad)
        run.grads = {k: npgan.backend.to_numpy(p.grad) for k, p in m.named_parameters()}
    run.state = {k: npgan.backend.to_numpy(v) for k, v in m.state_dict().items()}
    return run


def torch_run(t, x, grads=False, w=None):
    """The same for a torch module ``t`` (``w`` must be given with ``grads``)."""
    torch = _torch()
    run = Run()
    xt = torch.from_numpy(np.asarray(x)).requires_grad_(grads)
    with recording_torch(t, run):
        y = t(xt)
        if grads:
            (y * torch.from_numpy(w)).sum().backward()
    run.out, run.w = y.detach().numpy(), w
    if grads:
        run.gx = xt.grad.numpy()
        run.grads = {k: p.grad.numpy() for k, p in t.named_parameters()}
    run.state = {k: v.numpy() for k, v in t.state_dict().items()}
    return run


def check_twins(np_m, t_m, x, what, grads=False, w=None):
    """An npgan Sequential ``np_m`` and its float32 torch twin ``t_m`` (the same weights and buffers, in the
    same train/eval mode) on the float32 input ``x``: each run within its bounds of the float64 twin, layer by
    layer (:func:`check_layers`) and end to end (:class:`EndToEnd`; gradients of Σ w·y with ``grads``), and
    the two outputs within the sum of their bounds. Returns {"npgan": Run, "torch": Run}."""
    exact = copy.deepcopy(t_m).double()  # the float32 weights, held exactly; the buffers before the pass
    runs = {"npgan": npgan_run(np_m, x, grads, w)}
    runs["torch"] = torch_run(t_m, x, grads, runs["npgan"].w)
    e2e = EndToEnd(exact, x)
    for name, run in runs.items():
        check_layers(exact, run, f"{name} {what}", grads=grads)
        e2e.check_outputs(run, f"{name} {what}")
        if grads:
            e2e.check_gradients(run, runs["npgan"].w, f"{name} {what}")
    assert runs["npgan"].out.shape == runs["torch"].out.shape
    assert_within(runs["npgan"].out, runs["torch"].out, 2 * e2e.out_bound, f"npgan against torch, outputs {what}")
    return runs


# ============================================================================ the KDE entropy estimator
def kde_entropy_bounds(x, sigma, loo, e_sigma=0.0, e_input=0.0, u=U):
    """Bounds on |float32 − exact| of npgan's kde_entropy value and gradient on the points x ((n, d) float64
    holding float32 values) with bandwidth σ: ``(h, e_h, g, e_g, margin)``, h and g the exact (float64) value
    and gradient, ``margin`` the smallest lead, in exponent, of a row's largest L_ij over its second largest
    after both moved by their bounds. ``e_sigma``: a bound on σ's relative error (a rule's σ computed in float32,
    :func:`kde_rule_sigma_error`); ``e_input``: the points' relative rounding (u when they were rounded to
    float32 from the exact points the comparison assumes); ``u``: the unit roundoff (2⁻⁵³ for float64).

    The steps (npgan/kde.py): x_c = x − x_k (x_k the point nearest the mean), D_ij = ‖x_c,i‖² + ‖x_c,j‖² −
    2 x_c,i·x_c,j, L_ij = −D_ij/(2σ²), lse_i = M_i + log Σ_j e^(L_ij − M_i) (exponents floored at −80),
    h = −mean lse + log m + d(log σ + ½ log 2π), g_i = (1/(nσ²)) Σ_j (W_ij + W_ji)(x_c,i − x_c,j), W the row
    softmax. First-order errors (module docstring's model):
      D_ij: d products in the dot product and in each square, two additions, the centring's subtraction, and
            the inputs' rounding:   e_D ≤ (γ_{d+5} + 2 e_input) (‖x_c,i‖ + ‖x_c,j‖)²   (Cauchy–Schwarz)
      L_ij: e_L ≤ e_D/(2σ²) + 2u|L|   (1/(2σ²) rounded to float32, then the product); D_ii is exactly 0
      lse_i: Σ_j W_ij e_L_ij (its gradient is the softmax) + 8u + γ_n + n e⁻⁸⁰ (Z's relative error: exp within
            4 ulp, a sum of n terms, the floor) + 8u |log Z_i| + u |lse_i|
      h: the mean of the lse bounds + γ_n mean|lse| + 2u|h| (the mean, the float32 result)
         + |∂h/∂log σ| e_sigma,   ∂h/∂log σ = d − mean_i Σ_j W_ij D_ij/σ²
      W: first order, the softmax's derivative: e_W_ij ≤ W_ij (e_L_ij + Σ_k W_ik e_L_ik + 12u) while e_L ≪ 1;
            at a tiny σ (e_L of order 1: first order fails) only where each row's largest L_ij leads the rest by
            a margin ≥ 30 in exponent in both precisions — an argmax, so W is one-hot to (n + 1)e⁻³⁰ in both:
            e_W_ij ≤ 2u W_ij + (n + 1)e⁻³⁰   (``margin`` says which case holds; with neither, no bound: inf)
      g: e_g_i ≤ (1/(nσ²)) [γ_{n+5} (r_i ‖x_c,i‖ + Σ_j (W_ij + W_ji) ‖x_c,j‖)
                             + Σ_j (e_W_ij + e_W_ji)(‖x_c,i‖ + ‖x_c,j‖)] + 3u|g_i|,
         r_i = Σ_j (W_ij + W_ji)   (per coordinate: the norm bounds each component)
    ‖x_c,i‖ ≤ ‖r_i‖ + min_k ‖r_k‖ with r = x − mean(x) (x_k is the point nearest the mean).
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n, d = x.shape
    r = x - x.mean(0)
    rn = np.sqrt((r * r).sum(1))
    norm = rn + rn.min()
    D = ((x[:, None] - x[None]) ** 2).sum(-1)
    L = -D / (2 * sigma ** 2)
    eL = (gamma(d + 5, u) + 2 * e_input) * (norm[:, None] + norm[None]) ** 2 / (2 * sigma ** 2) + 2 * u * np.abs(L)
    np.fill_diagonal(eL, 0.0)
    if loo:
        np.fill_diagonal(L, -np.inf)
    M = L.max(1, keepdims=True)
    E = np.exp(L - M)
    Z = E.sum(1, keepdims=True)
    W = E / Z
    lse = (M + np.log(Z))[:, 0]
    logZ = np.log(Z[:, 0])
    e_lse = (W * eL).sum(1) + 8 * u + gamma(n, u) + n * math.exp(-80) + 8 * u * np.abs(logZ) + u * np.abs(lse)
    h = -lse.mean() + math.log(n - 1 if loo else n) + d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
    dh_dlogsigma = abs(d - (W * np.where(np.isfinite(L), D, 0.0)).sum(1).mean() / sigma ** 2)
    e_h = e_lse.mean() + gamma(n, u) * np.abs(lse).mean() + 2 * u * abs(h) + dh_dlogsigma * e_sigma
    nn_idx = np.argmax(L, axis=1)
    top2 = np.sort(L, axis=1)[:, -2:]
    margin = float((top2[:, 1] - top2[:, 0] - eL[np.arange(n), nn_idx] - eL.max(1)).min()) if n > 2 else math.inf
    A = W.copy()
    np.fill_diagonal(A, 0.0)
    rr = A.sum(1) + A.sum(0)
    g = (rr[:, None] * x - A @ x - A.T @ x) / (n * sigma ** 2)
    mag = rr * norm + (A + A.T) @ norm
    if eL.max() < 1e-2:  # first order holds
        eW = W * (eL + (W * eL).sum(1, keepdims=True) + 12 * u)
    elif loo and margin >= 30:  # one-hot in both precisions
        eW = 2 * u * W + (n + 1) * math.exp(-30)
    else:
        eW = np.full_like(W, np.inf)
    np.fill_diagonal(eW, 0.0)
    spread = ((eW + eW.T) * (norm[:, None] + norm[None])).sum(1)
    e_g = (gamma(n + 5, u) * mag + spread)[:, None] / (n * sigma ** 2) + 3 * u * np.abs(g)
    return h, e_h, g, e_g, margin


def kde_rule_sigma_error(x, rule, u=U):
    """A bound on the relative error of a bandwidth rule's σ computed in float32 from the points x ((n, d),
    float64 holding float32 values). "scott", "silverman": σ ∝ mean_k std_k, numpy's two-pass std: the mean errs
    by γ_n mean|x_k|, the sum of squares by γ_{n+2} relative, the square root and the mean over axes add
    γ_{d+2}: e ≤ γ_{n+4}(1 + 2 max_k mean|x_k|/std_k) + γ_{d+2}. "median": the median of the float32 squared
    distances moves by at most the largest of their errors (an order statistic is 1-Lipschitz in the largest
    entry change), e_D = γ_{d+5}(‖x_c,i‖ + ‖x_c,j‖)² as in :func:`kde_entropy_bounds`; σ = √(median/(2 log(n+1))):
    e ≤ max e_D / (2 median) + 2u."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n, d = x.shape
    if rule in ("scott", "silverman"):
        std = x.std(0, ddof=1)
        return gamma(n + 4, u) * (1 + 2 * float((np.abs(x).mean(0) / std).max())) + gamma(d + 2, u)
    r = x - x.mean(0)
    rn = np.sqrt((r * r).sum(1))
    norm = rn + rn.min()
    D = ((x[:, None] - x[None]) ** 2).sum(-1)
    med = np.median(D[~np.eye(n, dtype=bool)])
    return gamma(d + 5, u) * float((2 * norm.max()) ** 2) / (2 * med) + 2 * u
