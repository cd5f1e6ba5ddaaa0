"""Shared test setup.

``TRITON_INTERPRET=1`` must be set before any ``@triton.jit`` decorator runs so that Triton
kernels execute on CPU (the interpreter) and can be compared with their torch twins.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
