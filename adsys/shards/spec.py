"""Shard spec: what to build from which cohort (YAML, validated; see ``shards/README.md``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from adsys.config import StrictModel, load_yaml_config
from adsys.io.nifti import sha256_file
from adsys.preprocess.config import PreprocessConfig
from adsys.shards.schema import SCHEMA_VERSION, Codec
from adsys.synth.variants import LesionFormat, get_generator

Split = Literal["train", "val", "test"]
Format = Literal["zarr", "wds"]


class VariantRecipe(StrictModel):
    """``count`` pseudo-pathology variants per subject of a split, made by ``generator``
    (a name in :data:`adsys.synth.variants.GENERATORS`) with ``options``."""

    generator: str = "fluid"
    count: int = Field(0, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> VariantRecipe:
        get_generator(self.generator).check(self.options)
        return self


class ShardSpec(StrictModel):
    """A shard build: cohort manifest → preprocessing → variants → Zarr and/or tar shards.

    Relative paths in a spec file are resolved against the file's folder
    (:func:`load_spec`). ``max_failures``: an int is a number of subjects, a float in
    [0, 1) a fraction of the cohort; the build exits non-zero when more subjects fail.
    """

    name: str = "cohort"
    manifest: Path
    out: Path
    preprocess: PreprocessConfig
    variants: dict[Split, VariantRecipe] = Field(default_factory=dict)
    formats: list[Format] = Field(default_factory=lambda: ["zarr", "wds"])
    shard_size_mb: float = Field(256.0, gt=0)
    codec: Codec = Field(
        "lz4", description="tar member codec: lz4 (fast reads), zstd (small), none (plain .npy)"
    )
    compression_level: int = Field(3, ge=1, le=22, description="zstd level (codec zstd)")
    zarr_compression_level: int = Field(3, ge=1, le=22)
    lesion_format: LesionFormat = "binary"
    seed: int = Field(0, ge=0)
    max_failures: int | float = Field(0, ge=0)

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"formats must list 'zarr' and/or 'wds' once each, got {v}")
        return sorted(v)

    @model_validator(mode="after")
    def _check(self) -> ShardSpec:
        if self.preprocess.shape is None:
            raise ValueError(
                "preprocess.shape must be set: every sample of a shard set shares one shape"
            )
        if isinstance(self.max_failures, float) and self.max_failures >= 1:
            raise ValueError("max_failures as a float is a fraction in [0, 1)")
        return self

    def recipe(self, split: str) -> VariantRecipe:
        """The variant recipe of ``split`` (no variants when the spec names none)."""
        return self.variants.get(split, VariantRecipe(count=0))

    def failure_budget(self, n_subjects: int) -> int:
        """How many failed subjects the build tolerates."""
        if isinstance(self.max_failures, float):
            return int(self.max_failures * n_subjects)
        return self.max_failures

    def identity(self) -> dict[str, Any]:
        """Everything that determines the output bytes: the spec minus where it goes and
        how failures are judged, plus the cohort manifest's content and the schema version."""
        spec = self.model_dump(mode="json", exclude={"out", "max_failures", "manifest"})
        return {
            "spec": spec,
            "manifest_sha256": sha256_file(self.manifest),
            "schema_version": SCHEMA_VERSION,
        }

    def identity_digest(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> ShardSpec:
    """Read a spec YAML (``yaml.safe_load``); relative ``manifest``, ``out`` and
    ``preprocess.template`` are resolved against the YAML file's folder. ``overrides``
    (e.g. ``{"out": ...}``) replace top-level keys and are resolved against the cwd."""
    path = Path(path)
    spec = load_yaml_config(ShardSpec, path, overrides)
    base = path.resolve().parent
    given = set(overrides or {})

    def resolve(p: Path, key: str) -> Path:
        return p.resolve() if key in given else (base / p).resolve()

    updates: dict[str, Any] = {
        "manifest": resolve(spec.manifest, "manifest"),
        "out": resolve(spec.out, "out"),
    }
    if spec.preprocess.template is not None:
        template = resolve(spec.preprocess.template, "preprocess")
        updates["preprocess"] = spec.preprocess.model_copy(update={"template": template})
    return spec.model_copy(update=updates)
