"""Shared test setup.

``TRITON_INTERPRET=1`` must be set before any ``@triton.jit`` decorator runs so that Triton
kernels execute on CPU (the interpreter) and can be compared with their torch twins.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep Ray on 127.0.0.1

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ray_session():
    """One in-process local Ray for the whole test session (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
