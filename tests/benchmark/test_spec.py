"""The benchmark spec, the paired test and the command's errors (no Ray)."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
from scipy.stats import wilcoxon

from adsys.benchmark.leaderboard import paired_wilcoxon
from adsys.benchmark.spec import BenchmarkSpec, Preset, load_benchmark_spec
from adsys.cli import main
from adsys.methods import PRESET_NAMES

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
    with pytest.raises(ValueError, match="'smoke', 'demo' or 'paper'"):
        _spec(preset="nope", methods=[{"method": "ddpm"}])
    assert get_args(Preset) == PRESET_NAMES  # the spec's presets are the methods'
    spec = _spec(splits=["val", "test"], methods=[{"method": "ddpm", "seeds": [1, 2]}])
    assert spec.scored_splits == ("test",)
    assert spec.methods[0].runs == [("ddpm-seed1", 1), ("ddpm-seed2", 2)]


def test_paths_resolve_against_the_spec_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "b.yaml").write_text(
        "name: x\nshards: ../shards/out/x\nmanifest: m.csv\nprotocols: [upd]\n"
        "methods: [{method: threshold}, {name: mine, model: runs/mine/export}]\n")
    spec = load_benchmark_spec(tmp_path / "b.yaml")
    assert spec.shards == (tmp_path.parent / "shards" / "out" / "x").resolve()
    assert spec.out == tmp_path.parent / "runs" / "benchmark-x"  # default: under the cwd
    assert spec.methods[1].model == tmp_path / "runs" / "mine" / "export"


def test_the_command_names_a_bad_entry_before_starting_anything(tmp_path, capsys):
    (tmp_path / "b.yaml").write_text(
        "name: x\nshards: s\nmanifest: m.csv\n"
        "methods: [{method: ddpm, config: {max_stepz: 3}}]\n")
    assert main(["benchmark", str(tmp_path / "b.yaml")]) == 2
    err = capsys.readouterr().err
    assert "benchmark entry 'ddpm'" in err and "max_stepz" in err


def test_entries_that_need_another_train_after_it_on_its_outputs(tmp_path):
    from adsys.benchmark.runner import plan_runs

    spec = _spec(out=str(tmp_path), methods=[
        {"method": "aekl"},
        {"method": "conddiff", "pretrained": {"autoencoder_path": "aekl"},
         "latents": {"source": "aekl", "pad_multiple": 32},
         "config": {"method_config": {"latents_from_shards": True}}},
        {"method": "icdm", "folds": "0,9", "seeds": [5]}])
    aekl, conddiff, icdm = plan_runs(spec)
    assert conddiff.entry.needs == {"aekl"} and not aekl.entry.needs
    assert conddiff.config.shards == tmp_path / "latents" / "aekl-pad32"
    assert conddiff.config.method_config["autoencoder_path"] == str(
        tmp_path / "runs" / "aekl" / "export")
    assert icdm.name == "icdm-seed5" and icdm.folds == [0, 9] and icdm.config.seed == 5
    assert icdm.model == tmp_path / "runs" / "icdm-seed5"  # the folds' ensemble folder
    assert not conddiff.trained and conddiff.trainable
