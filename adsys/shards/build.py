"""Build shards from a spec with Ray: one task per subject, results written in cohort order.

Each Ray task preprocesses one subject, draws its variants, encodes the sample, writes its
Zarr row (when ``zarr`` is a format) and stages the sample as ``.work/<split>/<key>.tar``
(when ``wds`` is). The driver consumes finished subjects *in cohort-manifest order* and
appends them to size-bounded tar shards, so shard boundaries and bytes never depend on
which task finished first. ``manifest.json`` is rewritten (atomically) whenever a shard is
committed; staged samples of committed shards are deleted. When every subject is done the
driver reads the train split once more (image and mask) for the cohort statistics
(:func:`cohort_statistics`: the tissue centroids online corruptions use) and marks the
manifest complete.

Resume: a re-run with the same spec keeps every committed shard whose sha256 still matches
(the longest valid prefix per split), reuses staged samples and complete Zarr rows, and
recomputes the rest; the output is byte-identical to an uninterrupted run. A spec whose
identity (:meth:`ShardSpec.identity`) differs is refused unless ``overwrite=True``.

``out`` must be a folder every Ray node can reach (local disk for one machine; a shared
file system on a cluster), because tasks write Zarr rows and staged samples there.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from adsys.errors import InputError
from adsys.io.atomic import write_json_atomic
from adsys.io.manifest import SubjectEntry, load_manifest
from adsys.io.nifti import sha256_file
from adsys.preprocess.pipeline import preprocess_subject
from adsys.seeding import derive_seed
from adsys.shards import store as zarr_store
from adsys.shards.codecs import sample_checksum
from adsys.shards.sample import (
    Sample,
    axial_brain_voxels,
    encode_sample,
    sample_meta,
    to_schema_arrays,
    variant_boxes,
)
from adsys.shards.schema import (
    MANIFEST_NAME,
    SHARD_DIR,
    SPLITS,
    WORK_DIR,
    ZARR_NAME,
    FailureRecord,
    SampleRecord,
    ShardFormatError,
    ShardManifest,
    ShardRecord,
    SplitRecord,
    sample_key,
)
from adsys.shards.spec import ShardSpec
from adsys.shards.store import CohortStore
from adsys.shards.tar import read_shard
from adsys.shards.writers import TarShardWriter, read_tar, write_tar
from adsys.synth.tissue import tissue_centroids
from adsys.synth.variants import make_variants

log = logging.getLogger(__name__)

TISSUE_CLUSTERS = 5  # K tissue classes of the cold-diffusion anomaly generator
TISSUE_SAMPLES_PER_SUBJECT = 20_000  # brain voxels per train subject for the centroids


class SpecMismatchError(InputError):
    """The output folder holds shards built from another spec (or cohort manifest)."""


@dataclass
class BuildResult:
    """What a build did. ``within_budget`` is False when more subjects failed than the
    spec's ``max_failures`` allows (the job then exits non-zero)."""

    out: Path
    manifest: ShardManifest
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    budget: int = 0

    @property
    def within_budget(self) -> bool:
        return len(self.failed) <= self.budget


@dataclass(frozen=True)
class _Job:
    """One subject to build: its split, row in the split, and key."""

    entry: SubjectEntry
    split: str
    row: int

    @property
    def key(self) -> str:
        return sample_key(self.entry.subject_id)


def _staged_path(out: Path, job: _Job) -> Path:
    return out / WORK_DIR / job.split / f"{job.key}.tar"


def build_subject(spec: ShardSpec, job: _Job) -> dict[str, Any]:
    """Preprocess one subject, make its variants, write its Zarr row and staged sample.

    Never raises for a bad subject: returns ``{"ok": False, "reason": ...}`` instead.
    """
    sid = job.entry.subject_id
    try:
        pre = preprocess_subject(job.entry, spec.preprocess)
        recipe = spec.recipe(job.split)
        # Variants are drawn from the image as stored (float16): outside its lesion a variant
        # equals the stored image exactly, and replay starts from the stored image.
        image = pre.image.astype(np.float16).astype(np.float32)
        variants, lesions, records = make_variants(
            image,
            pre.mask,
            generator=recipe.generator,
            count=recipe.count,
            options=recipe.options,
            seed=spec.seed,
            subject_id=sid,
            wm=pre.wm,
            lesion_format=spec.lesion_format,
        )
        arrays = to_schema_arrays(image, pre.mask, variants, lesions, pre.seg, spec.lesion_format)
        boxes = variant_boxes(arrays["image"], arrays["variants"], arrays["lesions"])
        meta = sample_meta(
            subject_id=sid,
            split=job.split,
            row=job.row,
            record=pre.record,
            variants=records,
            boxes=boxes,
            brain=axial_brain_voxels(arrays["mask"]),
            lesion_format=spec.lesion_format,
            has_seg=pre.seg is not None,
        )
        if "zarr" in spec.formats:
            zarr_store.write_row(spec.out / ZARR_NAME, job.split, job.row, arrays, meta)
        if "wds" in spec.formats:
            members = encode_sample(job.key, arrays, meta, spec.codec, spec.compression_level)
            write_tar(_staged_path(spec.out, job), members)
    except Exception as exc:  # noqa: BLE001 - any per-subject failure is recorded, not fatal
        log.warning("subject %s failed: %s: %s", sid, type(exc).__name__, exc)
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {"ok": True}


def _jobs(spec: ShardSpec) -> tuple[list[_Job], dict[str, SplitRecord]]:
    manifest = load_manifest(spec.manifest)
    jobs, splits = [], {}
    for split in SPLITS:
        entries = manifest.split(split)
        if not entries:
            continue
        recipe = spec.recipe(split)
        splits[split] = SplitRecord(
            subjects=[e.subject_id for e in entries],
            num_variants=recipe.count,
            generator=recipe.generator if recipe.count else None,
            shape=spec.preprocess.shape,
            has_seg=any(e.seg is not None for e in entries),
        )
        jobs += [_Job(e, split, row) for row, e in enumerate(entries)]
    return jobs, splits


def _prepare_out(spec: ShardSpec, overwrite: bool) -> ShardManifest | None:
    """Check (or clear) an existing output; return its manifest when it can be resumed."""
    out = spec.out
    path = out / MANIFEST_NAME
    ours = [out / MANIFEST_NAME, out / SHARD_DIR, out / ZARR_NAME, out / WORK_DIR]
    if overwrite:
        for p in ours:
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        return None
    if not path.is_file():
        leftovers = [p.name for p in ours[1:] if p.exists()]
        if leftovers:
            raise SpecMismatchError(
                out, f"holds {leftovers} but no {MANIFEST_NAME}", "re-run with --overwrite"
            )
        return None
    old = ShardManifest.from_json(path.read_bytes(), str(path))
    if old.spec_digest != spec.identity_digest():
        was, now = old.spec.get("spec", {}), spec.identity()
        changed = sorted(k for k in {*was, *now["spec"]} if was.get(k) != now["spec"].get(k))
        if old.spec.get("manifest_sha256") != now["manifest_sha256"]:
            changed.append("cohort manifest content")
        raise SpecMismatchError(
            out,
            f"was built from a different spec (changed: {', '.join(changed) or 'schema'})",
            "use another `out`, or re-run with --overwrite to start over",
        )
    return old


def valid_prefix(out: Path, shards: list[ShardRecord]) -> list[ShardRecord]:
    """The committed shards of one split that still match their sha256, up to the first
    missing or changed one (later shards are rebuilt, since boundaries follow order)."""
    kept = []
    for shard in shards:
        path = out / shard.name
        if not path.is_file() or path.stat().st_size != shard.nbytes:
            break
        if sha256_file(path) != shard.sha256:
            break
        kept.append(shard)
    return kept


def clean_partials(out: Path, kept: set[str]) -> None:
    """Remove temporary files and shards not in ``kept`` (left by an interrupted run)."""
    shard_dir = out / SHARD_DIR
    if shard_dir.is_dir():
        for p in shard_dir.iterdir():
            if f"{SHARD_DIR}/{p.name}" not in kept:
                p.unlink()
    for base in (out / WORK_DIR, out / ZARR_NAME):
        if base.is_dir():
            for p in base.rglob("*"):
                if p.name.startswith(".tmp-") or p.suffix == ".partial":
                    p.unlink()


class _Scheduler:
    """Submits subject tasks to Ray in cohort order, at most ``window`` at a time."""

    def __init__(self, spec: ShardSpec, jobs: list[_Job], window: int) -> None:
        import ray

        self._ray = ray
        self._remote = ray.remote(num_cpus=1)(build_subject)
        self._spec_ref = ray.put(spec)
        self._pending = iter(jobs)
        self._window = window
        self._running: dict[Any, _Job] = {}
        self._fill()

    def _fill(self) -> None:
        while len(self._running) < self._window:
            job = next(self._pending, None)
            if job is None:
                return
            self._running[self._remote.remote(self._spec_ref, job)] = job

    def results(self) -> Iterator[tuple[_Job, dict[str, Any]]]:
        """Yield ``(job, result)`` as tasks finish (any order)."""
        while self._running:
            (ref,), _ = self._ray.wait(list(self._running), num_returns=1)
            job = self._running.pop(ref)
            try:
                result = self._ray.get(ref)
            except self._ray.exceptions.RayError as exc:  # worker crash, OOM kill, ...
                result = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
            self._fill()
            yield job, result


def build_shards(
    spec: ShardSpec,
    *,
    overwrite: bool = False,
    progress: bool = True,
    max_in_flight: int | None = None,
) -> BuildResult:
    """Build (or resume building) the shards described by ``spec``; see the module doc.

    Needs a Ray connection (``ray.init`` is called with no address when none exists).
    ``max_in_flight`` bounds queued tasks (default: 2 × the cluster's CPUs), which also
    bounds the staged samples waiting for their turn on disk.
    """
    import ray

    if not ray.is_initialized():
        ray.init()
    spec = spec.model_copy(update={"out": spec.out.resolve(), "manifest": spec.manifest.resolve()})
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    old = _prepare_out(spec, overwrite)
    jobs, splits = _jobs(spec)
    manifest = ShardManifest(
        spec_digest=spec.identity_digest(),
        spec=spec.identity(),
        formats=list(spec.formats),
        lesion_format=spec.lesion_format,
        zarr=ZARR_NAME if "zarr" in spec.formats else None,
        splits=splits,
    )
    kept = {s: valid_prefix(out, old.shards_of(s)) if old else [] for s in splits}
    manifest.shards = [sh for s in splits for sh in kept[s]]
    clean_partials(out, {sh.name for sh in manifest.shards})
    write_json_atomic(out / MANIFEST_NAME, manifest.model_dump(mode="json"))
    if "zarr" in spec.formats:
        zarr_store.create_store(
            out / ZARR_NAME,
            splits,
            spec_digest=manifest.spec_digest,
            lesion_format=spec.lesion_format,
            level=spec.zarr_compression_level,
        )
    in_kept = {(sh.split, s.row) for sh in manifest.shards for s in sh.samples}
    zarr_done = _complete_zarr_rows(out, splits) if "zarr" in spec.formats else set()

    def already_built(job: _Job) -> bool:
        where = (job.split, job.row)
        staged = where in in_kept or _staged_path(out, job).is_file()
        return ("wds" not in spec.formats or staged) and (
            "zarr" not in spec.formats or where in zarr_done
        )

    result = BuildResult(out=out, manifest=manifest, budget=spec.failure_budget(len(jobs)))
    outcome: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for job in jobs:
        if already_built(job):
            outcome[(job.split, job.row)] = {"ok": True}
            result.reused.append(job.entry.subject_id)
        else:
            todo.append(job)
    writers = {
        s: TarShardWriter(out, s, int(spec.shard_size_mb * 2**20), first_index=len(kept[s]))
        for s in splits
    }
    order = iter(jobs)
    head = next(order, None)

    def commit(shard: ShardRecord | None) -> None:
        if shard is None:
            return
        manifest.shards.append(shard)
        write_json_atomic(out / MANIFEST_NAME, manifest.model_dump(mode="json"))
        for s in shard.samples:
            (out / WORK_DIR / shard.split / f"{s.key}.tar").unlink(missing_ok=True)
        log.info("committed %s (%d samples)", shard.name, shard.count)

    def drain() -> None:
        """Write every finished subject at the head of the cohort order."""
        nonlocal head
        while head is not None and (head.split, head.row) in outcome:
            job, res = head, outcome.pop((head.split, head.row))
            if not res["ok"]:
                result.failed[job.entry.subject_id] = res["reason"]
                manifest.failed.append(
                    FailureRecord(
                        subject_id=job.entry.subject_id, split=job.split, reason=res["reason"]
                    )
                )
            elif "wds" in spec.formats and (job.split, job.row) not in in_kept:
                members = read_tar(_staged_path(out, job))
                record = SampleRecord(
                    key=job.key,
                    subject_id=job.entry.subject_id,
                    row=job.row,
                    crc32c=sample_checksum(members),
                    nbytes=sum(len(d) for _, d in members),
                )
                commit(writers[job.split].add(members, record))
            head = next(order, None)
            if head is None or head.split != job.split:
                commit(writers[job.split].close())

    bar = tqdm(
        total=len(jobs),
        initial=len(result.reused),
        desc=f"shards {spec.name}",
        unit="subject",
        disable=not progress,
    )
    drain()
    if todo:
        window = max_in_flight or 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
        n_failed = 0
        for job, res in _Scheduler(spec, todo, window).results():
            outcome[(job.split, job.row)] = res
            if res["ok"]:
                result.computed.append(job.entry.subject_id)
            else:
                n_failed += 1
            bar.update(1)
            bar.set_postfix(failed=n_failed, reused=len(result.reused))
            drain()
    bar.close()
    if "zarr" in spec.formats:
        failed: dict[str, dict[str, str]] = {}
        for f in manifest.failed:
            failed.setdefault(f.split, {})[f.subject_id] = f.reason
        zarr_store.finish_store(out / ZARR_NAME, failed)
    manifest.statistics = cohort_statistics(out, manifest, spec.seed)
    manifest.status = "complete"
    write_json_atomic(out / MANIFEST_NAME, manifest.model_dump(mode="json"))
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    return result


def _train_samples(out: Path, manifest: ShardManifest) -> Iterator[Sample]:
    """The built train subjects (image and mask), in cohort order: from the tar shards,
    else from the Zarr store."""
    if "wds" in manifest.formats:
        for shard in manifest.shards_of("train"):
            for read in read_shard(str(out / shard.name), shard, fields=("image", "mask")):
                if read.sample is None:
                    raise ShardFormatError(f"{read.problem}; rebuild with --overwrite")
                yield read.sample
        return
    store = CohortStore(out)
    failed = store.failed("train")
    for sid in store.subjects("train"):
        if sid not in failed:
            yield store[sid]


def cohort_statistics(out: Path, manifest: ShardManifest, seed: int) -> dict[str, Any]:
    """The cohort statistics stored in ``manifest.json`` (:class:`ShardManifest`):
    ``tissue_centroids``, K = 5 k-means centres (intensity units of the stored images) of
    up to :data:`TISSUE_SAMPLES_PER_SUBJECT` brain voxels per train subject, drawn without
    replacement from a generator seeded by (build seed, subject id), so the centres depend
    neither on the format read nor on the build's order of work. Empty without train data.
    """
    values = []
    for sample in _train_samples(out, manifest):
        brain = sample.image[sample.mask > 0].astype(np.float32)
        if len(brain) > TISSUE_SAMPLES_PER_SUBJECT:
            rng = np.random.default_rng(derive_seed("tissue", seed, sample.subject_id))
            brain = brain[np.sort(rng.choice(len(brain), TISSUE_SAMPLES_PER_SUBJECT,
                                             replace=False))]
        values.append(brain)
    if not values or not sum(len(v) for v in values):
        return {}
    return {"tissue_centroids": tissue_centroids(np.concatenate(values), k=TISSUE_CLUSTERS)}


def _complete_zarr_rows(out: Path, splits: dict[str, SplitRecord]) -> set[tuple[str, int]]:
    import zarr

    root = zarr.open_group(str(out / ZARR_NAME), mode="r", zarr_format=3)
    done = set()
    for split in splits:
        meta = root[split][zarr_store.META][:]
        done |= {(split, int(row)) for row in np.flatnonzero(meta != "")}
    return done
