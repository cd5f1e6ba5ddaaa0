"""The installed package: namespace layout, console script, pinned dependency ranges."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_ship_inside_adsys_not_top_level(tmp_path):
    code = (
        "import importlib.util, adsys.kernels, sys\n"
        "assert importlib.util.find_spec('kernels') is None, 'top-level kernels installed'\n"
        "print(adsys.kernels.__name__)"
    )
    # run from an empty folder so the repo root is not on sys.path
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "adsys.kernels"


def test_every_runtime_dependency_is_a_bounded_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[\[<>=;]", d)[0].strip().lower() for d in deps}
    for required in ["torch", "webdataset", "ray", "deepspeed", "nibabel", "zarr", "numcodecs",
                     "scipy", "triton", "nilearn", "torchio", "scikit-image", "scikit-learn",
                     "pydantic", "pyyaml", "tqdm", "matplotlib"]:
        assert required in names, required
    for d in deps:
        assert ">=" in d and "<" in d, f"unbounded dependency {d}"
    assert any(d.startswith("ray[train,default]") for d in deps)
