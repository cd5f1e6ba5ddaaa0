"""The benchmark spec, the paired test and the command's errors (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon

from adsys.benchmark.leaderboard import paired_wilcoxon
from adsys.benchmark.spec import BenchmarkSpec, load_benchmark_spec
from adsys.cli import main

BASE = {"name": "t", "shards": "s", "manifest": "m.csv", "protocols": ["behrendt"]}


def _spec(**kw) -> BenchmarkSpec:
    return BenchmarkSpec.model_validate({**BASE, **kw})


def test_the_paired_test_is_scipys_wilcoxon():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, 9), rng.uniform(0, 1, 9)
    assert paired_wilcoxon(list(a), list(b)) == pytest.approx(wilcoxon(a, b).pvalue, rel=1e-12)
    b[:3] = a[:3]  # zero differences are dropped, as scipy's default zero_method does
    assert paired_wilcoxon(list(a), list(b)) == pytest.approx(wilcoxon(a, b).pvalue, rel=1e-12)
    assert paired_wilcoxon([0.1, 0.2], [0.1, 0.2]) == 1.0
    assert paired_wilcoxon([0.1], [0.3]) is None


def test_the_spec_refuses_what_cannot_run():
    with pytest.raises(ValueError, match="unknown method 'nope'; known: aekl, cddpm"):
        _spec(methods=[{"method": "nope"}])
    with pytest.raises(ValueError, match="not unique"):
        _spec(methods=[{"method": "ddpm"}, {"method": "ddpm"}])
    with pytest.raises(ValueError, match="pretrained autoencoder_path names 'ae'"):
        _spec(methods=[{"method": "conddiff", "pretrained": {"autoencoder_path": "ae"}}])
    with pytest.raises(ValueError, match="exactly one of method"):
        _spec(methods=[{"method": "ddpm", "maps": "x"}])
    with pytest.raises(ValueError, match="needs a name"):
        _spec(methods=[{"model": "runs/x/export"}])
    with pytest.raises(ValueError, match="unknown protocol"):
        _spec(protocols=["nope"], methods=[{"method": "ddpm"}])
    spec = _spec(splits=["val", "test"], methods=[{"method": "ddpm", "seeds": [1, 2]}])
    assert spec.scored_splits == ("test",)
    assert spec.methods[0].runs == [("ddpm-seed1", 1), ("ddpm-seed2", 2)]


def test_paths_resolve_against_the_spec_file(tmp_path):
    (tmp_path / "b.yaml").write_text(
        "name: x\nshards: ../shards/out/x\nmanifest: m.csv\nprotocols: [upd]\n"
        "methods: [{method: threshold}, {name: mine, model: runs/mine/export}]\n")
    spec = load_benchmark_spec(tmp_path / "b.yaml")
    assert spec.shards == (tmp_path.parent / "shards" / "out" / "x").resolve()
    assert spec.out == tmp_path / "runs" / "benchmark-x"
    assert spec.methods[1].model == tmp_path / "runs" / "mine" / "export"


def test_the_command_names_a_bad_entry_before_starting_anything(tmp_path, capsys):
    (tmp_path / "b.yaml").write_text(
        "name: x\nshards: s\nmanifest: m.csv\n"
        "methods: [{method: ddpm, config: {max_stepz: 3}}]\n")
    assert main(["benchmark", str(tmp_path / "b.yaml")]) == 2
    err = capsys.readouterr().err
    assert "benchmark entry 'ddpm'" in err and "max_stepz" in err
