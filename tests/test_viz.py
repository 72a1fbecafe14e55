"""npgan.viz: the recorded graph as DOT text, rendering with or without Graphviz, and explain()."""

import io
import re
import stat
import sys

import numpy as np
import pytest

import npgan
import npgan.functional as F
from npgan import nn, viz


def _nodes_and_edges(dot):
    labels = dict(re.findall(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"', dot, flags=re.M))
    edges = re.findall(r"^\s*(\w+) -> (\w+)", dot, flags=re.M)
    return labels, edges


def _small():
    a = npgan.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    a.name = "a"
    b = npgan.tensor([[0.5], [0.25], [2.0]], requires_grad=True)
    b.name = "b"
    c = npgan.tensor([1.5])  # a constant
    y = ((a @ b) * c).sum()
    return a, b, c, y


def test_graph_of_a_small_expression_has_its_nodes_and_edges():
    a, b, c, y = _small()
    dot = viz.graph(y)
    assert dot.startswith("digraph npgan {") and dot.rstrip().endswith("}")
    labels, edges = _nodes_and_edges(dot)
    fn_nodes = {k: v for k, v in labels.items() if k.startswith("f")}
    t_nodes = {k: v for k, v in labels.items() if k.startswith("t")}
    assert sorted(v.split("\\n")[0] for v in fn_nodes.values()) == ["MatMul", "Mul", "Sum"]
    # tensors: a, b, c, a@b, (a@b)*c, y
    assert len(t_nodes) == 6
    by_label = {v: k for k, v in t_nodes.items()}
    ta, tb = by_label["a (1, 3) float32"], by_label["b (3, 1) float32"]
    tc = by_label["(1,) float32"]
    fid = {v.split("\\n")[0]: k for k, v in fn_nodes.items()}
    expected = {(ta, fid["MatMul"]), (tb, fid["MatMul"]), (tc, fid["Mul"])}
    assert expected <= set(edges)
    # MatMul -> its (1, 1) result -> Mul -> (1, 1) -> Sum -> y (0-d)
    out_of = {src: dst for src, dst in edges if src.startswith("f")}
    assert t_nodes[out_of[fid["MatMul"]]] == "(1, 1) float32"
    assert (out_of[fid["MatMul"]], fid["Mul"]) in edges
    assert (out_of[fid["Mul"]], fid["Sum"]) in edges
    assert t_nodes[out_of[fid["Sum"]]] == "() float32"
    assert len(edges) == 2 + 2 + 1 + 3  # inputs of MatMul (2), Mul (2), Sum (1); one output edge per Function
    # parameters (leaves that need a gradient) are blue boxes, constants gray, the result bold
    assert re.search(rf'{ta} \[[^\]]*fillcolor="#cfe2ff"', dot)
    assert re.search(rf'{tc} \[[^\]]*fillcolor="#eeeeee"', dot)
    assert re.search(rf'{out_of[fid["Sum"]]} \[[^\]]*bold', dot)


def test_a_tensor_used_twice_is_one_node_with_two_edges():
    x = npgan.tensor([1.0, 2.0], requires_grad=True)
    x.name = "x"
    y = (x * x).sum()
    labels, edges = _nodes_and_edges(viz.graph(y))
    (tx,) = [k for k, v in labels.items() if v == "x (2,) float32"]
    (mul,) = [k for k, v in labels.items() if v == "Mul"]
    assert edges.count((tx, mul)) == 2
    assert sum(1 for s, d in edges if s == tx) == 2


def test_linear_bce_graph_names_parameters_and_lists_the_formulas():
    npgan.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4), nn.LeakyReLU(0.2), nn.Linear(4, 1))
    x = npgan.randn(5, 2)
    t = npgan.tensor([[1.0], [0.0], [1.0], [1.0], [0.0]])
    loss = F.binary_cross_entropy_with_logits(model(x), t)
    dot = viz.graph(loss, model)
    labels, edges = _nodes_and_edges(dot)
    vals = set(labels.values())
    for key, shape in (("0.weight", "(4, 2)"), ("0.bias", "(4,)"), ("2.weight", "(1, 4)"), ("2.bias", "(1,)")):
        assert f"{key} {shape} float32" in vals
    fns = [v.split("\\n")[0] for k, v in labels.items() if k.startswith("f")]
    assert sorted(fns) == ["LeakyReLU", "Linear", "Linear", "SigmoidBCEWithLogits"]
    assert any(v.startswith("LeakyReLU\\nslope=0.2") for v in vals)
    assert "SigmoidBCEWithLogits\\nreduction='mean'" in vals

    buf = io.StringIO()
    text = viz.explain(loss, model, file=buf)
    assert buf.getvalue() == text
    order = re.findall(r"^\[\d\] npgan\.\w+\.(\w+)", text, flags=re.M)
    assert order == ["Linear", "LeakyReLU", "Linear", "SigmoidBCEWithLogits"]
    # each step's backward formula, taken from its class docstring
    assert "gx = gy W,   gW = Σ_batch gyᵀ x" in text
    assert "gx = gy · (1 if x > 0 else a)" in text
    assert "gx_i = (σ(x_i) − t_i) · gy / n" in text
    assert "0.weight (4, 2) float32" in text and "-> (5, 4) float32" in text
    # the graph is still there: explain and graph must not consume it
    loss.backward()
    assert model[0].weight.grad is not None


def test_backward_frees_the_graph_and_viz_says_so():
    a, b, c, y = _small()
    y.backward()
    with pytest.raises(RuntimeError, match=r"freed by backward\(\).*retain_graph=True"):
        viz.graph(y)
    with pytest.raises(RuntimeError, match="freed by backward"):
        viz.explain(y, file=io.StringIO())
    a, b, c, y = _small()
    y.backward(retain_graph=True)
    assert "MatMul" in viz.graph(y)


def test_a_leaf_has_no_functions():
    x = npgan.tensor([1.0, 2.0])
    with npgan.no_grad():
        y = x * 2
    assert viz.functions_in_order(y) == []
    assert "is a leaf" in viz.explain(y, file=io.StringIO())
    labels, edges = _nodes_and_edges(viz.graph(y))
    assert len(labels) == 1 and edges == []


def test_bad_names_argument():
    _, _, _, y = _small()
    with pytest.raises(TypeError, match="names must be a Module or a mapping"):
        viz.graph(y, names=[1, 2])


def test_render_without_dot_writes_the_dot_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    _, _, _, y = _small()
    out = viz.render(y, tmp_path / "g.png")
    assert out == tmp_path / "g.dot"
    assert out.read_text(encoding="utf-8") == viz.graph(y)
    assert not (tmp_path / "g.png").exists()
    msg = capsys.readouterr().out
    assert "'dot' program was not found" in msg and str(out) in msg


@pytest.mark.skipif(sys.platform == "win32", reason="a shell script stands in for dot")
def test_render_with_dot_runs_it_on_the_dot_text(tmp_path, monkeypatch):
    fake = tmp_path / "dot"
    # a stand-in for Graphviz: records its arguments and copies stdin to the -o file
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args.txt"\n'
                    'while [ "$1" != "-o" ]; do shift; done\ncat > "$2"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(viz.shutil, "which", lambda name: str(fake) if name == "dot" else None)
    _, _, _, y = _small()
    out = viz.render(y, tmp_path / "g.png")
    assert out == tmp_path / "g.png"
    assert out.read_text(encoding="utf-8") == viz.graph(y)
    assert (tmp_path / "args.txt").read_text().split() == ["-Tpng", "-o", str(out)]
    fake.write_text("#!/bin/sh\necho 'syntax error' >&2\nexit 3\n")
    with pytest.raises(RuntimeError, match="exit code 3: syntax error"):
        viz.render(y, tmp_path / "h.png")


def test_backward_formula_picks_the_gradient_paragraphs():
    from npgan.conv import Conv2d
    from npgan.kde import KDEEntropy
    from npgan.ops import Add

    assert viz.backward_formula(Add) == Add.__doc__.strip().split("\n\n")[0]  # the first derivative
    assert "Double backward" in viz.backward_formula(Add, full=True)
    kde = viz.backward_formula(KDEEntropy)
    assert kde.startswith("Leave-one-out") and "(1/(nσ²)) (diag(rowsum S) x − S x)" in kde
    assert "LSE_j is a log-sum-exp" not in kde  # a forward-only paragraph is left out
    assert "LSE_j is a log-sum-exp" in viz.backward_formula(KDEEntropy, full=True)
    conv = viz.backward_formula(Conv2d)
    assert "∂L/∂W₂ = gy₂ᵀ · col" in conv and "Shapes:" not in conv


def test_every_function_class_shows_a_gradient_formula():
    """explain() prints the docstring's gradient lines: every Function in npgan must state one."""
    missing = [c.__qualname__ for c in viz.function_classes()
               if not viz._GRAD_LINE.search(viz.backward_formula(c))]
    assert not missing, f"Function classes whose docstring states no gradient (gx = ..., ∂…): {missing}"


def test_graph_on_numpy_float64_and_conv():
    x = npgan.tensor(np.ones((1, 1, 4, 4)), requires_grad=True, dtype="float64")
    w = npgan.tensor(np.ones((2, 1, 3, 3)), requires_grad=True, dtype="float64")
    y = F.conv2d(x, w, padding=1).mean()
    dot = viz.graph(y, {"x": x, "w": w})
    assert "x (1, 1, 4, 4) float64" in dot and "w (2, 1, 3, 3) float64" in dot
    assert "Conv2d\\ns=(1, 1), p=(1, 1), d=(1, 1), out=(4, 4)" in dot  # the options, in __init__'s order
