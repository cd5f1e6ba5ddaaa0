"""Check a built shard set end to end, and summarise it (``adsys shards verify|inspect``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from adsys.io.nifti import sha256_file
from adsys.shards.sample import Sample
from adsys.shards.schema import ALL_FIELDS, SPLITS, ShardManifest
from adsys.shards.store import CohortStore
from adsys.shards.tar import load_shard_manifest, read_shard


@dataclass
class VerifyReport:
    """Problems found (empty when everything checks out) and what was checked."""

    root: Path
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    samples: int = 0
    zarr_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _array_digest(sample: Sample) -> str:
    h = hashlib.sha256()
    for name, array in sample.arrays.items():
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def verify_shards(path: str | Path) -> VerifyReport:
    """Verify a build: every shard's sha256 and size, every sample's checksum, decoding of
    every array against the schema, every Zarr row, tar and Zarr holding the same arrays,
    and every cohort subject either written or listed as failed."""
    manifest, base = load_shard_manifest(path)
    root = Path(base)
    report = VerifyReport(root=root)
    problems = report.problems
    if manifest.status != "complete":
        problems.append("the build is not complete (status 'building'): re-run the job")
    tar_digests: dict[str, str] = {}
    for shard in manifest.shards:
        file = root / shard.name
        report.shards += 1
        if not file.is_file():
            problems.append(f"{shard.name}: missing")
            continue
        if file.stat().st_size != shard.nbytes or sha256_file(file) != shard.sha256:
            problems.append(f"{shard.name}: sha256/size differ from the manifest")
        for read in read_shard(str(file), shard, fields=ALL_FIELDS):
            if read.sample is None:
                problems.append(read.problem)
                continue
            record = shard.samples[read.position]
            if read.sample.meta.get("subject_id") != record.subject_id:
                problems.append(f"{shard.name}: sample {record.key} holds another subject")
            else:
                report.samples += 1
                tar_digests[record.subject_id] = _array_digest(read.sample)
    zarr_subjects = _verify_zarr(root, manifest, tar_digests, report) if manifest.zarr else set()
    failed = {f.subject_id for f in manifest.failed}
    in_tar = {s.subject_id for sh in manifest.shards for s in sh.samples}
    for rec in manifest.splits.values():
        for sid in rec.subjects:
            if sid in failed:
                if sid in in_tar or sid in zarr_subjects:
                    problems.append(f"subject {sid}: listed as failed but present in the output")
            elif "wds" in manifest.formats and sid not in in_tar:
                problems.append(f"subject {sid}: neither in a shard nor failed")
            elif manifest.zarr and sid not in zarr_subjects:
                problems.append(f"subject {sid}: neither in the Zarr store nor failed")
    return report


def _verify_zarr(
    root: Path, manifest: ShardManifest, tar_digests: dict[str, str], report: VerifyReport
) -> set[str]:
    """Decode every complete Zarr row; compare with the tar sample when there is one."""
    try:
        store = CohortStore(root / manifest.zarr)
        subjects = store.subjects()
    except Exception as exc:  # noqa: BLE001 - any failure to open is a verification problem
        report.problems.append(f"{manifest.zarr}: cannot be opened ({exc})")
        return set()
    for sid in subjects:
        try:
            sample = store[sid]
        except Exception as exc:  # noqa: BLE001 - a corrupt chunk is a verification problem
            report.problems.append(f"{manifest.zarr}: subject {sid} undecodable ({exc})")
            continue
        report.zarr_rows += 1
        if sid in tar_digests and _array_digest(sample) != tar_digests[sid]:
            report.problems.append(f"subject {sid}: Zarr and tar arrays differ")
    return set(subjects)


def summary(path: str | Path) -> str:
    """A text table of a build: per split subjects, written, failed, variants, shards, sizes."""
    manifest, base = load_shard_manifest(path)
    root = Path(base)
    head = ("split", "subjects", "written", "failed", "variants", "shape", "shards", "tar MB")
    rows = [head]
    for split in (s for s in SPLITS if s in manifest.splits):
        rec, shards = manifest.splits[split], manifest.shards_of(split)
        n_failed = sum(f.split == split for f in manifest.failed)
        written = sum(s.count for s in shards) if shards else len(rec.subjects) - n_failed
        rows.append(
            (
                split,
                len(rec.subjects),
                written,
                n_failed,
                f"{rec.num_variants} {rec.generator or ''}".strip(),
                "x".join(map(str, rec.shape)),
                len(shards),
                f"{sum(s.nbytes for s in shards) / 2**20:.1f}",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = [
        f"{root}  status={manifest.status}  formats={','.join(manifest.formats)}  "
        f"schema=v{manifest.schema_version}  spec={manifest.spec_digest[:12]}",
        *("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows),
    ]
    if manifest.zarr:
        zarr_bytes = sum(p.stat().st_size for p in (root / manifest.zarr).rglob("*") if p.is_file())
        lines.append(f"zarr store: {manifest.zarr} ({zarr_bytes / 2**20:.1f} MB)")
    for f in manifest.failed:
        lines.append(f"FAILED {f.split}/{f.subject_id}: {f.reason}")
    return "\n".join(lines)
