"""Backend discipline (only npgan/backend.py touches numpy/cupy) and the backend's own behaviour."""

from __future__ import annotations

import ast
import pathlib
import re

import numpy as np
import pytest

import npgan
from npgan import backend

PKG = pathlib.Path(npgan.__file__).resolve().parent
ARRAY_LIBS = ("numpy", "cupy")


def _array_imports(source: str, filename: str) -> list[str]:
    """Every statement in ``source`` that imports numpy or cupy (or a submodule), as 'line N: text'."""
    found = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call):  # importlib.import_module("numpy"), __import__("cupy")
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if fname in ("import_module", "__import__") and node.args \
                    and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
        if any(n.split(".")[0] in ARRAY_LIBS for n in names):
            found.append(f"line {node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_only_backend_imports_numpy_or_cupy():
    files = sorted(PKG.rglob("*.py"))
    assert len(files) >= 9 and PKG / "backend.py" in files
    offenders = []
    for path in files:
        if path == PKG / "backend.py":
            continue
        for hit in _array_imports(path.read_text(encoding="utf-8"), str(path)):
            offenders.append(f"{path.relative_to(PKG.parent)} {hit}")
    assert not offenders, "only npgan/backend.py may import numpy/cupy; use `from . import backend`:\n" + \
        "\n".join(offenders)


@pytest.mark.parametrize("src,bad", [
    ("import numpy as np", True),
    ("import numpy.linalg", True),
    ("from numpy import zeros", True),
    ("from numpy.lib.stride_tricks import as_strided", True),
    ("def f():\n    import cupy\n", True),
    ("try:\n    import cupy as cp\nexcept ImportError:\n    cp = None\n", True),
    ("import importlib\nnp = importlib.import_module('numpy')", True),
    ("np = __import__('numpy')", True),
    ("from . import backend\nnp = backend.np", False),
    ("import numbers\nimport math", False),
    ("from .numpy_compat import x", False),
    ("s = 'import numpy'", False),
])
def test_the_import_detector_itself(src, bad):
    assert bool(_array_imports(src, "<test>")) is bad


def test_backend_does_import_numpy():
    assert _array_imports((PKG / "backend.py").read_text(encoding="utf-8"), "backend.py")
    assert backend.np is np and backend.get_array_module(np.ones(2)) is np
    assert re.search(r"^import numpy", (PKG / "backend.py").read_text(encoding="utf-8"), re.M)


def test_importing_npgan_does_not_pull_in_matplotlib_or_torch():
    import subprocess
    import sys
    code = ("import sys, npgan, npgan.functional, npgan.nn, npgan.optim; "
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_manual_seed_drives_the_generator():
    npgan.manual_seed(11)
    a = backend.rng().standard_normal(5)
    npgan.manual_seed(11)
    b = backend.rng().standard_normal(5)
    np.testing.assert_array_equal(a, b)
    state = backend.get_rng_state()
    c = backend.rng().random(3)
    backend.set_rng_state(state)
    np.testing.assert_array_equal(backend.rng().random(3), c)


def test_default_dtype_round_trip():
    for name in ("float64", "float32", np.float64, np.dtype("float32")):
        npgan.set_default_dtype(name)
        assert npgan.get_default_dtype() == np.dtype(name)


def test_cpu_device_and_host_conversion():
    assert npgan.get_device() == "cpu" and backend.current_xp() is np
    npgan.set_device("cpu")
    a = np.arange(3.0)
    assert backend.to_numpy(a) is a and backend.is_array(a) and not backend.is_array([1.0])
    assert npgan.Tensor(a).device == "cpu"


_MALLOC_PROBE = """
import resource, sys
from npgan import backend
took = backend.tune_malloc(sys.argv[1] == "on")
np = backend.np
def work():
    for _ in range(8):
        a = np.ones(2**18, np.float32)  # 1 MB: above glibc's default mmap threshold, below a huge page
        del a
work()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    work()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def test_tune_malloc_reuses_freed_arrays_without_page_faults():
    """80 allocations of 1 MB (256 pages each): with glibc's defaults each one faults its pages in afresh;
    tuned, the freed block is reused."""
    import subprocess
    import sys

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _MALLOC_PROBE, mode], capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    took, tuned = faults("on")
    if took != "True":
        pytest.skip("not glibc: tune_malloc does nothing here")
    _, default = faults("off")
    assert default > 80 * 256 // 2, f"the probe should fault with glibc's defaults, got {default} faults"
    assert tuned < 200, f"tuned malloc still faulted {tuned} times for 80 reused 1 MB arrays"


def test_malloc_is_left_alone_at_import_unless_opted_in():
    """import npgan does not touch glibc's allocator; NPGAN_TUNE_MALLOC=1 turns the tuning on at import."""
    import os
    import subprocess
    import sys
    code = "from npgan import backend; print(backend.malloc_tuned())"
    env = dict(os.environ)
    outs = {}
    for value in (None, "0", "1", "on"):
        if value is None:
            env.pop("NPGAN_TUNE_MALLOC", None)
        else:
            env["NPGAN_TUNE_MALLOC"] = value
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        outs[value] = r.stdout.strip()
    assert outs[None] == "None" and outs["0"] == "None"
    assert outs["1"] in ("True", "False") and outs["on"] == outs["1"]  # False: not glibc
