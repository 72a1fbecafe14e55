"""npgan.checks: each check returns the value or raises one line naming the argument, the rule and the value."""

from __future__ import annotations

import argparse
import math
import re

import numpy as np
import pytest

from npgan.checks import cli_type, integer, one_of, real


@pytest.mark.parametrize("v, lo, hi, want", [(3, 1, None, 3), (np.int64(0), 0, None, 0), (-5, None, None, -5),
                                             (7, 0, 7, 7)])
def test_integer_accepts(v, lo, hi, want):
    got = integer("n", v, lo, hi)
    assert got == want and type(got) is int


@pytest.mark.parametrize("v, lo, hi, rule", [
    (0, 1, None, "a positive integer"), (-1, 0, None, "a non-negative integer"), (2, 3, None, "an integer >= 3"),
    (8, 0, 7, r"an integer in \[0, 7\]"), (True, 1, None, "a positive integer"), (2.0, 1, None, "a positive integer"),
    ("3", None, None, "an integer"), (None, 1, None, "a positive integer")])
def test_integer_refuses_in_one_line(v, lo, hi, rule):
    with pytest.raises(ValueError, match=f"^batch_size must be {rule}, got {v!r}$".replace("(", r"\(")
                       .replace(")", r"\)")):
        integer("batch_size", v, lo, hi)


@pytest.mark.parametrize("v, kw, want", [(1, {}, 1.0), (np.float32(0.5), dict(low=0, high=1), 0.5),
                                         (np.array(2.0), dict(low=0, low_open=True), 2.0),
                                         (0.0, dict(low=0, high=1, high_open=True), 0.0)])
def test_real_accepts(v, kw, want):
    got = real("x", v, **kw)
    assert got == want and type(got) is float


@pytest.mark.parametrize("v, kw, rule", [
    (0.0, dict(low=0, low_open=True), "a positive number"), (-1e-9, dict(low=0), "a number >= 0"),
    (1.0, dict(low=0, high=1, high_open=True), r"a number in \[0, 1\)"), (2, dict(high=1), "a number <= 1"),
    (math.inf, {}, "a finite number"), (math.nan, dict(low=0), "a number >= 0"), (True, {}, "a finite number"),
    ("0.5", {}, "a finite number"), (None, dict(low=0, low_open=True), "a positive number"),
    (np.zeros(2), {}, "a finite number")])
def test_real_refuses_in_one_line(v, kw, rule):
    with pytest.raises(ValueError) as ei:
        real("Adam: eps", v, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("Adam: eps must be ") and msg.endswith(f"got {v!r}")
    assert re.search(rule, msg), msg


def test_one_of():
    assert one_of("loss", "hinge", ("minimax", "hinge")) == "hinge"
    for bad in ("bogus", None, ["hinge"]):
        with pytest.raises(ValueError, match=f"^unknown loss {bad!r}".replace("[", r"\[").replace("]", r"\]")
                           + "; choose one of minimax, hinge$"):
            one_of("loss", bad, ("minimax", "hinge"))


def test_cli_type_parses_then_checks():
    steps = cli_type(integer, "--steps", 1)
    assert steps("12") == 12 and type(steps("12")) is int
    lr = cli_type(real, "--lr", 0, low_open=True)
    assert lr("2e-4") == 2e-4 and lr("3") == 3.0
    for conv, s, msg in ((steps, "0", "--steps must be a positive integer, got 0"),
                         (steps, "1.5", "--steps must be a positive integer, got 1.5"),
                         (steps, "ten", "--steps must be a positive integer, got 'ten'"),
                         (lr, "inf", "--lr must be a positive number, got inf")):
        with pytest.raises(argparse.ArgumentTypeError) as ei:
            conv(s)
        assert str(ei.value) == msg


def test_bandwidth_check_names_the_rules():
    from npgan.kde import BANDWIDTH_RULES, check_bandwidth
    assert all(check_bandwidth("bw", r) == r for r in BANDWIDTH_RULES)
    assert check_bandwidth("bw", 1) == 1.0
    for bad in (0, "wide", True, math.nan):
        with pytest.raises(ValueError) as ei:
            check_bandwidth("bw", bad)
        assert str(ei.value) == f"bw must be a positive number or one of {', '.join(BANDWIDTH_RULES)}, got {bad!r}"


def test_one_source_for_the_names():
    """The CLI's choices are the package's lists (not copies that can drift)."""
    from npgan import data
    from npgan.gan import config as gan
    from npgan.run import config, presets
    from npgan.run.cli import build_parser
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: tuple(a.choices) for a in train._actions if a.choices is not None}
    assert choices["preset"] == tuple(presets.PRESETS) and choices["data"] == config.DATASETS
    assert choices["loss"] == gan.LOSS_KINDS and choices["order"] == gan.ORDERS
    assert choices["optimizer"] == config.OPTIMIZER_CHOICES and choices["on_nan"] == gan.ON_NAN_ACTIONS
    assert config.OPTIMIZER_CHOICES == (*config.OPTIMIZERS, config.EXTRA_ADAM)  # the config's names and Extra-Adam
    assert config.MIXTURE_DATASETS == tuple(data.MIXTURES) == config.DATASETS[:2]
