"""The shard build on a real local Ray: contents, checksums, failures, resume, replay."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adsys.cli import main as adsys_main
from adsys.io import load_manifest, sha256_file
from adsys.preprocess import preprocess_subject
from adsys.shards.build import SpecMismatchError, build_shards
from adsys.shards.schema import ALL_FIELDS, MANIFEST_NAME, ShardManifest
from adsys.shards.store import CohortStore
from adsys.shards.tar import read_shard
from adsys.shards.verify import verify_shards
from adsys.synth.variants import replay_variant
from tests.shards.conftest import CORRUPT, REPO, SMOKE_SPEC

pytestmark = pytest.mark.ray


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``, by relative path."""
    return {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _good_subjects(spec) -> list[str]:
    return [
        s.subject_id for s in load_manifest(spec.manifest).subjects if s.subject_id not in CORRUPT
    ]


def test_corrupt_subjects_are_listed_and_everything_else_is_written(built, smoke_spec):
    assert set(built.failed) == set(CORRUPT)
    assert "VolumeReadError" in built.failed["bad-gzip"]
    assert "NonFiniteError" in built.failed["bad-nan"]
    assert built.within_budget  # the smoke spec tolerates 2 failures
    manifest = ShardManifest.from_json((built.out / MANIFEST_NAME).read_bytes())
    assert manifest.status == "complete"
    assert {(f.subject_id, f.split) for f in manifest.failed} == {(s, "train") for s in CORRUPT}
    in_tar = [s.subject_id for sh in manifest.shards for s in sh.samples]
    assert in_tar == _good_subjects(smoke_spec)  # cohort order, each once
    store = CohortStore(built.out)
    assert store.subjects() == _good_subjects(smoke_spec)
    assert set(store.failed("train")) == set(CORRUPT)
    assert not (built.out / ".work").exists()
    assert len(manifest.shards_of("train")) == 2  # the smoke spec's 0.1 MB shards


def test_zarr_and_tar_decode_to_the_same_arrays(built):
    manifest = built.manifest
    store = CohortStore(built.out / "cohort.zarr")
    seen = 0
    for shard in manifest.shards:
        for read in read_shard(str(built.out / shard.name), shard, fields=ALL_FIELDS):
            tar, zarr_sample = read.sample, store[read.sample.subject_id]
            assert tar.meta == zarr_sample.meta
            assert tar.arrays.keys() == zarr_sample.arrays.keys()
            for name, arr in tar.arrays.items():
                other = zarr_sample.arrays[name]
                assert arr.dtype == other.dtype and np.array_equal(arr, other), name
            k = tar.meta["num_variants"]
            assert tar.variants.shape == (k, 44, 52, 44) and tar.lesions.dtype == np.uint8
            assert tar.lesions.reshape(k, -1).any(axis=1).all()  # every variant has a lesion
            assert (tar.seg is not None) == (tar.meta["split"] == "test")
            seen += 1
    assert seen == len(store) == 7


def test_manifest_checksums_verify(built, capsys):
    for shard in built.manifest.shards:
        path = built.out / shard.name
        assert sha256_file(path) == shard.sha256 and path.stat().st_size == shard.nbytes
    report = verify_shards(built.out)
    assert report.ok, report.problems
    assert (report.shards, report.samples, report.zarr_rows) == (4, 7, 7)
    assert adsys_main(["shards", "verify", str(built.out)]) == 0
    assert adsys_main(["shards", "inspect", str(built.out / MANIFEST_NAME)]) == 0
    out = capsys.readouterr().out
    assert "verified 4 shard(s), 7 tar sample(s), 7 Zarr row(s): OK" in out
    assert "train  6         4        2       2 fluid   44x52x44  2" in out
    assert "FAILED train/bad-nan: NonFiniteError" in out


def test_rerun_is_idempotent_and_budget_sets_exit_status(built, smoke_spec, copy_build):
    before = _tree(copy_build)
    spec = smoke_spec.model_copy(update={"out": copy_build, "max_failures": 1})
    result = build_shards(spec, progress=False)
    assert result.computed == [] and len(result.reused) == 7  # the 2 failures were retried
    assert not result.within_budget and set(result.failed) == set(CORRUPT)
    assert _tree(copy_build) == before
    argv = [
        "shards",
        "build",
        str(SMOKE_SPEC),
        "--manifest",
        str(smoke_spec.manifest),
        "--out",
        str(copy_build),
        "--no-progress",
    ]
    assert adsys_main(argv) == 0  # smoke.yaml allows 2 failures


def test_changed_spec_is_refused_unless_starting_over(smoke_spec, copy_build, ray_session):
    spec = smoke_spec.model_copy(update={"out": copy_build, "seed": 1, "formats": ["zarr"]})
    with pytest.raises(SpecMismatchError, match="changed: formats, seed"):
        build_shards(spec, progress=False)
    result = build_shards(spec, overwrite=True, progress=False)
    assert len(result.computed) == 7 and not (copy_build / "shards").exists()
    manifest = ShardManifest.from_json((copy_build / MANIFEST_NAME).read_bytes())
    assert manifest.shards == [] and manifest.formats == ["zarr"]
    assert CohortStore(copy_build).subjects() == _good_subjects(smoke_spec)


@pytest.mark.slow
def test_sigkill_and_resume_give_byte_identical_output(built, smoke_spec, ray_session, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [
        sys.executable,
        str(REPO / "ray_jobs" / "build_shards.py"),
        str(SMOKE_SPEC),
        "--manifest",
        str(smoke_spec.manifest),
        "--out",
        str(out),
        "--max-in-flight",
        "1",
        "--no-progress",
    ]
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    manifest = out / MANIFEST_NAME
    deadline = time.monotonic() + 180
    while not (manifest.is_file() and json.loads(manifest.read_bytes())["shards"]):
        assert job.poll() is None, f"job ended before the kill:\n{job.stdout.read().decode()}"
        assert time.monotonic() < deadline, "no shard committed within 180 s"
        time.sleep(0.01)
    os.kill(job.pid, signal.SIGKILL)  # mid-way: one shard committed, others pending
    job.wait()
    job.stdout.close()
    killed = json.loads(manifest.read_bytes())
    assert killed["status"] == "building" and len(killed["shards"]) < len(built.manifest.shards)

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 failed" in resumed.stdout
    assert _tree(out) == _tree(built.out)  # shards, manifest and Zarr store, byte for byte


def test_replay_parameters_regenerate_every_variant(built, smoke_spec):
    store = CohortStore(built.out)
    entries = {e.subject_id: e for e in load_manifest(smoke_spec.manifest).subjects}
    for sid in (store.subjects("train")[0], store.subjects("test")[0]):
        sample = store[sid]
        pre = preprocess_subject(entries[sid], smoke_spec.preprocess)  # for its WM map
        assert np.array_equal(pre.image.astype(np.float16), sample.image)
        for record in sample.meta["variants"]:
            variant = replay_variant(record, sample.image.astype(np.float32), sample.mask, pre.wm)
            k = record["index"]
            assert np.array_equal(variant.image.astype(np.float16), sample.variants[k])
            assert np.array_equal(variant.lesion, sample.lesions[k])
            assert record["params"]["generator"] == "fluid" and record["uses_wm"]


def test_cohort_store_random_access(built):
    store = CohortStore(built.out)
    assert store.splits == ["train", "val", "test"]
    assert len(store) == 7 and "bad-nan" not in store
    sid = store.subjects("val")[0]
    meta = store.meta(sid)
    assert meta["split"] == "val" and meta["num_variants"] == 2
    assert meta["preprocess"]["config"]["spacing"] == 4.0
    assert len(meta["source_sha256"]) == 64 and meta["source_grid"]["shape"]
    variant, lesion = store.variant(sid, 1)
    assert np.array_equal(variant, store.read(sid, "variants")[1])
    assert lesion.shape == (44, 52, 44) and lesion.dtype == np.uint8
    with pytest.raises(KeyError):
        store["bad-gzip"]
    digest = hashlib.sha256(store.read(sid, "image").tobytes()).hexdigest()
    assert digest == hashlib.sha256(store[sid].image.tobytes()).hexdigest()


def test_tissue_centroids_are_stored_at_build_time_from_the_train_split(built, copy_build):
    from adsys.shards.build import TISSUE_SAMPLES_PER_SUBJECT, cohort_statistics
    from adsys.shards.schema import ShardFormatError
    from adsys.synth.tissue import tissue_centroids

    stored = built.manifest.statistics["tissue_centroids"]
    on_disk = json.loads((built.out / MANIFEST_NAME).read_text())["statistics"]
    assert on_disk["tissue_centroids"] == stored and len(stored) == 5
    assert stored == sorted(stored) and 0 < stored[0] and stored[-1] <= 1
    # the same from the Zarr store as from the tar shards (format independent)
    zarr_only = built.manifest.model_copy(update={"formats": ["zarr"]})
    assert cohort_statistics(built.out, zarr_only, seed=0) == {"tissue_centroids": stored}
    # the sampled voxels stand for all brain voxels of the train subjects
    store = CohortStore(built.out)
    train = [s for s in store.subjects("train") if s not in store.failed("train")]
    brains = [store[s].image[store[s].mask > 0].astype(np.float32) for s in train]
    assert max(len(b) for b in brains) > TISSUE_SAMPLES_PER_SUBJECT  # the cap was used
    np.testing.assert_allclose(stored, tissue_centroids(np.concatenate(brains), k=5), atol=0.01)
    old = json.loads((copy_build / MANIFEST_NAME).read_text())
    old["schema_version"] = 3
    del old["statistics"]
    with pytest.raises(ShardFormatError, match="schema version 3.*rebuild the shards"):
        ShardManifest.from_json(json.dumps(old))
