"""Shared test setup: a fixed seed and float32 default before every test; hypothesis profile; the device fixture.

``device``: tests that take it run once per device — "cpu", and "gpu" (marked ``gpu``, skipped with the
reason when CuPy or a GPU is missing). With ``NPGAN_TEST_STANDIN=1`` they also run on "standin", the
CuPy-like stand-in GPU module of tests/standin.py (device arrays that refuse implicit host conversion), which
checks the GPU code paths on a machine without a GPU. The fixture's value is the device name to pass to
npgan ("cpu" or "gpu"); the device is current while the test runs and "cpu" again afterwards.
"""

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

import npgan
from npgan import conv_fast

settings.register_profile("ci", max_examples=int(os.environ.get("NPGAN_HYPOTHESIS_EXAMPLES", "40")),
                          deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.load_profile("ci")


def _gpu_skip_reason():
    try:
        npgan.backend._require_gpu()
        return None
    except npgan.DeviceError as exc:
        return f"needs CuPy and an NVIDIA GPU: {str(exc).split(';')[0]}"


GPU_SKIP_REASON = _gpu_skip_reason()
DEVICES = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu,
                                             pytest.mark.skipif(GPU_SKIP_REASON is not None,
                                                                reason=str(GPU_SKIP_REASON))])]
if os.environ.get("NPGAN_TEST_STANDIN"):
    DEVICES.append("standin")


@pytest.fixture(autouse=True)
def _fresh_state():
    npgan.set_default_dtype("float32")
    npgan.manual_seed(1234)
    threads = npgan.get_num_threads()
    yield
    npgan.set_default_dtype("float32")
    if npgan.get_num_threads() != threads:
        npgan.set_num_threads(threads)


@pytest.fixture(params=[1, 3], ids=["1thread", "3threads"])
def threads(request):
    """Large CPU ops run in one piece (1) or split over 3 threads (3) — then however small the op
    (:data:`npgan.parallel.MIN_WORK` lifted), so that small test shapes take the split code paths too."""
    from helpers import split_ops
    with split_ops(request.param):
        yield request.param


@pytest.fixture(params=DEVICES)
def device(request):
    """The current device for this test: "cpu" or "gpu" (the stand-in GPU module poses as "gpu")."""
    if request.param == "standin":
        import standin
        with standin.installed():
            yield "gpu"
        return
    npgan.set_device(request.param)
    try:
        yield request.param
    finally:
        npgan.set_device("cpu")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter):
    """All skips on one line, grouped by reason (``-rfE`` keeps failures and errors listed one by one)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = Counter(_skip_reason(r) for r in skipped)
    text = "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common())
    terminalreporter.write_line(f"{len(skipped)} skipped: {text}", yellow=True)


@pytest.fixture(params=["nchw", "channels-last"])
def layout(request, monkeypatch):
    """New image arrays NCHW, or channels-last however few their channels (conv_fast.CHANNELS_LAST_MIN lifted
    to 1): the small test shapes take both sides of the layout choice."""
    monkeypatch.setattr(conv_fast, "CHANNELS_LAST_MIN", 10**9 if request.param == "nchw" else 1)
    return request.param
