"""Shared test setup: a fixed seed and float32 default before every test; hypothesis profile."""

import os

import pytest
from hypothesis import HealthCheck, settings

import npgan

settings.register_profile("ci", max_examples=int(os.environ.get("NPGAN_HYPOTHESIS_EXAMPLES", "40")),
                          deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _fresh_state():
    npgan.set_default_dtype("float32")
    npgan.manual_seed(1234)
    yield
    npgan.set_default_dtype("float32")
