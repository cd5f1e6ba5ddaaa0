"""The benchmark spec: one cohort, the methods to compare, the protocols to report.

A YAML file (``yaml.safe_load``; relative paths resolved against its folder)::

    name: demo
    shards: ../shards/out/demo            # the shard set every method trains on
    manifest: ../demo/data/manifest.csv   # its cohort manifest: ground truth + metadata
    out: ../runs/benchmark-demo           # default: ./runs/benchmark-<name>
    preset: demo                          # every method's preset unless its entry names one
    protocols: [behrendt, upd]            # the first is the inference runs' own (default:
                                          # the first trained method's own protocol)
    splits: [val, test]                   # val: the Dice threshold; the others are scored
    threshold: val-fpr=0.05               # adsys.metrics.cohort.choose_cohort_threshold
    group_by: contrast                    # optional manifest metadata column
    compare_to: ddpm                      # the second paired comparison (when present)
    train: {num_workers: 1}               # training keys for every method
    infer: {num_workers: 2}               # InferConfig keys for every inference run
    methods:
      - method: cddpm
        seeds: [0, 1]                     # one run per seed (the training seed)
        config: {max_steps: 400}          # training keys (method_config: the method's own)
      - method: icdm
        folds: "0,9"                      # a method with folds trains them; infers the ensemble
      - method: conddiff
        pretrained: {autoencoder_path: aekl}   # that method_config key ← entry aekl's export
        latents: {source: aekl, pad_multiple: 32}   # train on latents written once with it
        config: {method_config: {latents_from_shards: true}}
      - {method: deviation, name: deviation-z, config: {method_config: {form: z}}}
      - {name: mine, model: ../runs/mine/export}   # a model trained elsewhere
      - {name: old, maps: ../runs/old/infer}       # an inference output, used as it is

Every entry is a row of the leaderboard, named ``name`` (default: the method's name).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator, model_validator

from adsys.config import StrictModel, load_yaml_config

__all__ = ["BenchmarkSpec", "LatentsSpec", "MethodEntry", "load_benchmark_spec"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
Preset = Literal["smoke", "demo", "paper"]  # adsys.methods.PRESET_NAMES


class LatentsSpec(StrictModel):
    """Train on a latent shard set written once with entry ``source``'s exported autoencoder
    (:func:`adsys.shards.latents.encode_shard_set`, padded to ``pad_multiple``: the latent
    method's own)."""

    source: str
    pad_multiple: int


class MethodEntry(StrictModel):
    """One row of the benchmark: a method, how to train it, and how to infer with it."""

    method: str | None = None
    name: str | None = None
    model: Path | None = None
    maps: Path | None = None
    preset: Preset | None = None
    config: dict[str, Any] = {}
    seeds: list[int] | None = None
    folds: str | None = None
    inference: dict[str, Any] = {}
    pretrained: dict[str, str] = {}
    latents: LatentsSpec | None = None

    @property
    def needs(self) -> set[str]:
        """The entries that must be trained before this one starts."""
        return set(self.pretrained.values()) | ({self.latents.source} if self.latents else set())

    @field_validator("method")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        from adsys.methods import method_names

        if v is not None and v not in method_names():
            raise ValueError(f"unknown method {v!r}; known: {', '.join(method_names())}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> MethodEntry:
        given = [k for k in ("method", "model", "maps") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an entry names exactly one of method (trained here), model (an "
                             f"export folder) or maps (an inference output), got {given}")
        if self.method is None and self.name is None:
            raise ValueError(f"the entry with {given[0]} {getattr(self, given[0])} needs a name")
        return self

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {v}")
        return v

    @property
    def label(self) -> str:
        """The row's name (and its runs' folder prefix)."""
        return self.name or self.method

    @property
    def runs(self) -> list[tuple[str, int | None]]:
        """(run name, training seed or ``None`` for the preset's) of each of its runs."""
        if self.seeds is None:
            return [(self.label, None)]
        return [(f"{self.label}-seed{s}", s) for s in self.seeds]


class BenchmarkSpec(StrictModel):
    """See the module doc; :func:`load_benchmark_spec` reads one."""

    name: str
    shards: Path
    manifest: Path
    out: Path | None = None
    preset: Preset = "demo"
    protocols: list[str] = []
    splits: list[str] = ["val", "test"]
    threshold: str = "val"
    group_by: str | None = None
    compare_to: str = "ddpm"
    train: dict[str, Any] = {}
    infer: dict[str, Any] = {}
    methods: list[MethodEntry]

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, v: list[str]) -> list[str]:
        from adsys.metrics.protocols import get_protocol

        if len(set(v)) != len(v):
            raise ValueError(f"protocols must list each protocol once: {v}")
        for p in v:
            get_protocol(p)  # unknown names list the known ones
        return v

    @model_validator(mode="after")
    def _entries(self) -> BenchmarkSpec:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '.', '_', '-'")
        labels = [m.label for m in self.methods]
        if not labels:
            raise ValueError("methods: list at least one method")
        for label in labels:
            if not _NAME.match(label) or labels.count(label) > 1:
                raise ValueError(f"method entry name {label!r} is not unique or not a plain "
                                 "name: give each entry its own `name`")
        for m in self.methods:
            uses = [(f"pretrained {k}", v) for k, v in m.pretrained.items()]
            uses += [("latents", m.latents.source)] if m.latents else []
            for key, source in uses:
                other = next((e for e in self.methods if e.label == source), None)
                if other is None or other is m or other.seeds is not None or other.method is None:
                    raise ValueError(f"{m.label}: {key} names {source!r}, which is not "
                                     "another single-seed entry trained by this benchmark")
        return self

    @property
    def scored_splits(self) -> tuple[str, ...]:
        """The splits whose subjects are scored: ``val`` only sets the threshold when there
        are others (as the inference job does)."""
        scored = tuple(s for s in self.splits if s != "val")
        return scored or tuple(self.splits)


def load_benchmark_spec(path: str | Path) -> BenchmarkSpec:
    """Read a spec YAML; relative ``shards``, ``manifest``, ``out`` and entries' ``model`` /
    ``maps`` are resolved against the file's folder (``out`` defaults to
    ``runs/benchmark-<name>`` of the current directory, like training runs)."""
    path = Path(path)
    spec = load_yaml_config(BenchmarkSpec, path)
    base = path.resolve().parent
    out = spec.out if spec.out is not None else Path.cwd() / "runs" / f"benchmark-{spec.name}"
    methods = [m.model_copy(update={k: (base / getattr(m, k)).resolve()
                                    for k in ("model", "maps") if getattr(m, k) is not None})
               for m in spec.methods]
    return spec.model_copy(update={
        "shards": (base / spec.shards).resolve(), "manifest": (base / spec.manifest).resolve(),
        "out": (base / out).resolve(), "methods": methods})  # fmt: skip
