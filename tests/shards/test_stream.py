"""The streaming reader over real shards: modes, rank/worker splitting, resampling, and
corrupt shards detected against the manifest (never silently shortened)."""

from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from adsys.shards.loader import make_loader
from adsys.shards.schema import MANIFEST_NAME, ShardManifest
from adsys.shards.store import CohortStore
from adsys.shards.stream import FIELDS, CorruptShardError, ShardStream
from adsys.shards.verify import verify_shards

pytestmark = pytest.mark.ray  # uses the session's Ray-built shards


def _subjects(loader) -> list[str]:
    return [sid for batch in loader for sid in batch["subject_id"]]


def _slices(batches) -> list[tuple[str, int]]:
    return [
        (s, int(z)) for b in batches for s, z in zip(b["subject_id"], b["slice_index"], strict=True)
    ]


def test_modes_yield_store_content(built):
    store = CohortStore(built.out)
    slices = ShardStream(
        built.out, split="train", mode="slices", batch_size=16, min_brain_fraction=0.2
    )
    batch = next(iter(slices))
    assert batch["image"].shape == (16, 1, 44, 52) and batch["image"].dtype.is_floating_point
    for i in (0, 15):
        sid, z, k = batch["subject_id"][i], batch["slice_index"][i], batch["variant_index"][i]
        image = store.read(sid, "image")[..., z]
        assert np.array_equal(batch["image"][i, 0].numpy(), image.astype(np.float32))
        assert store.read(sid, "mask")[..., z].mean() >= 0.2
        variant, lesion = store.variant(sid, int(k))
        assert np.array_equal(batch["variant"][i, 0].numpy(), variant[..., z].astype(np.float32))
        assert np.array_equal(batch["lesion"][i, 0].numpy(), lesion[..., z].astype(np.float32))
    n_slices = sum(len(b["subject_id"]) for b in slices)
    expected = sum(
        int((store.read(s, "mask").mean(axis=(0, 1)) >= 0.2).sum()) for s in store.subjects("train")
    )
    assert n_slices == expected

    patches = ShardStream(
        built.out,
        split="test",
        mode="patches",
        batch_size=4,
        patch_size=(16, 16, 8),
        patches_per_volume=3,
    )
    batches = list(patches)
    assert [len(b["subject_id"]) for b in batches] == [4, 2]
    b = batches[0]
    assert b["image"].shape == (4, 1, 16, 16, 8) and b["origin"].shape == (4, 3)
    x, y, z = b["origin"][0].tolist()
    vol = store.read(b["subject_id"][0], "image")[x : x + 16, y : y + 16, z : z + 8]
    assert np.array_equal(b["image"][0, 0].numpy(), vol.astype(np.float32))

    volumes = list(ShardStream(built.out, split="val", mode="volumes", batch_size=2))
    assert len(volumes) == 1 and volumes[0]["image"].shape == (1, 1, 44, 52, 44)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_worker_batches_through_the_ring_match_the_store(built, dtype):
    """Two workers, three ring slots each (prefetch 1): batches dropped as they are used
    all come through the ring without a copy; batches kept alive are never overwritten
    (once a worker's slots are all held, it sends batches the ordinary way)."""
    store = CohortStore(built.out)

    def check(b: dict) -> None:
        assert all(b[f].shape == (8, 1, 44, 52) and b[f].dtype == dtype for f in FIELDS)
        labels = zip(b["subject_id"], b["slice_index"], b["variant_index"], strict=True)
        for i, (sid, z, k) in enumerate(labels):
            volumes = (
                store.read(sid, "image"),
                store.read(sid, "mask"),
                *store.variant(sid, int(k)),
            )
            for field, volume in zip(FIELDS, volumes, strict=True):
                assert np.array_equal(b[field][i, 0].numpy(), volume[..., z].astype(np.float32))

    stream = ShardStream(
        built.out, split="train", batch_size=8, resampled=True, steps_per_epoch=12, dtype=dtype
    )
    loader = make_loader(stream, num_workers=2, prefetch_factor=1)
    steps = 0
    for batch in loader:
        check(batch)
        steps += 1
    assert steps == 12 and loader.copied == 0
    held = list(loader)  # keeps every batch alive: the workers run out of slots
    assert len(held) == 12 and loader.copied > 0
    for b in held:
        check(b)


def test_split_mode_two_ranks_two_workers_is_an_exact_partition(built):
    total = [s.subject_id for sh in built.manifest.shards_of("train") for s in sh.samples]
    seen = []
    for rank in range(2):
        stream = ShardStream(
            built.out, split="train", mode="volumes", batch_size=1, rank=rank, world_size=2
        )
        seen.append(_subjects(make_loader(stream, num_workers=2)))
    assert not set(seen[0]) & set(seen[1])
    assert Counter(seen[0] + seen[1]) == Counter(total)  # each sample exactly once
    # with at least as many shards as consumers, whole shards are dealt out
    stream = ShardStream(built.out, split="train", mode="volumes", batch_size=1)
    assert Counter(_subjects(make_loader(stream, num_workers=2))) == Counter(total)


def test_resampled_mode_gives_every_rank_exactly_its_steps(built):
    draws = {}
    for rank in range(2):
        stream = ShardStream(
            built.out,
            split="train",
            mode="slices",
            batch_size=8,
            rank=rank,
            world_size=2,
            resampled=True,
            steps_per_epoch=5,
            seed=3,
        )
        loader = make_loader(stream, num_workers=2)
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == len(loader) == 5
            assert all(len(b["subject_id"]) == 8 for b in batches)
            draws[rank, epoch] = _slices(batches)
        loader.set_epoch(0)
        assert _slices(loader) == draws[rank, 0]
    assert draws[0, 0] != draws[0, 1] and draws[0, 0] != draws[1, 0]
    odd = ShardStream(built.out, split="train", batch_size=4, resampled=True, steps_per_epoch=3)
    assert len(list(make_loader(odd, num_workers=2))) == 3  # 2 + 1 across the workers


def _member_offsets(path: Path) -> list[tuple[str, int]]:
    with tarfile.open(path) as tf:
        return [(m.name, m.offset) for m in tf]


def _damage(root: Path) -> tuple[ShardManifest, int]:
    """Truncate train shard 0 inside its second sample; overwrite the tar header of the
    second sample in train shard 1. Returns (manifest, samples lost = 2)."""
    manifest = ShardManifest.from_json((root / MANIFEST_NAME).read_bytes())
    shards = manifest.shards_of("train")
    first, second = (root / s.name for s in shards)

    def second_sample(path: Path, shard) -> list[int]:
        """Offsets of the members of the shard's second sample."""
        key = shard.samples[1].key
        return [offset for name, offset in _member_offsets(path) if name.startswith(key + ".")]

    with open(first, "r+b") as f:
        f.truncate(second_sample(first, shards[0])[2] + 100)  # inside its 3rd member
    with open(second, "r+b") as f:
        f.seek(second_sample(second, shards[1])[0])  # its first member's header
        f.write(np.random.default_rng(0).bytes(512))
    return manifest, 2


def test_webdataset_alone_loses_damaged_samples_silently(copy_build):
    manifest, _ = _damage(copy_build)
    shard = manifest.shards_of("train")[1]
    keys = [s["__key__"] for s in wds.WebDataset(str(copy_build / shard.name), shardshuffle=False)]
    assert len(keys) == 1 < shard.count  # no error: why we check against the manifest


def test_damaged_shards_are_reported_and_never_silently_shortened(copy_build):
    manifest, lost = _damage(copy_build)
    report = verify_shards(copy_build)
    assert not report.ok
    text = "\n".join(report.problems)
    truncated, overwritten = manifest.shards_of("train")
    for shard in (truncated, overwritten):
        assert f"{shard.name}: sha256/size differ" in text
    # the truncated shard ends inside its 2nd sample, which then lacks members
    assert f"{truncated.name}: sample {truncated.samples[1].key} (#1) checksum mismatch" in text
    # tar reads the overwritten header as the end of the archive
    assert f"{overwritten.name}: shard ends after 1 of 2 samples" in text
    total = sum(s.count for s in manifest.shards_of("train"))

    strict = ShardStream(copy_build, split="train", mode="volumes", batch_size=1)
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        list(strict)
    second = ShardStream(copy_build, split="train", mode="volumes", rank=1, world_size=2)
    with pytest.raises(CorruptShardError, match="ends after 1 of 2"):
        list(second)  # 2 shards over 2 ranks: rank 1 reads the overwritten one

    for world in (1, 2):  # whole shards per consumer, and every-other-sample
        delivered, skipped = 0, 0
        for rank in range(world):
            stream = ShardStream(
                copy_build,
                split="train",
                mode="volumes",
                batch_size=1,
                rank=rank,
                world_size=world,
                on_corrupt="skip",
            )
            loader = make_loader(stream, num_workers=2)
            delivered += len(_subjects(loader))
            skipped += loader.skipped
        assert (delivered, skipped) == (total - lost, lost)

    resampled = ShardStream(  # 6 x 32 slices: more samples than one per damaged shard
        copy_build,
        split="train",
        batch_size=32,
        resampled=True,
        steps_per_epoch=6,
        on_corrupt="skip",
    )
    loader = make_loader(resampled, num_workers=0)
    assert len(list(loader)) == 6 and loader.skipped > 0


def test_corrupt_payload_fails_its_checksum(copy_build):
    manifest = ShardManifest.from_json((copy_build / MANIFEST_NAME).read_bytes())
    shard = manifest.shards_of("test")[0]
    path = copy_build / shard.name
    name, offset = _member_offsets(path)[0]
    with open(path, "r+b") as f:
        f.seek(offset + 512 + 40)  # inside the first image's payload
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    stream = ShardStream(copy_build, split="test", mode="volumes", batch_size=1, on_corrupt="skip")
    loader = make_loader(stream, num_workers=0)
    assert len(_subjects(loader)) == shard.count - 1 and loader.skipped == 1
    with pytest.raises(CorruptShardError, match="checksum mismatch"):
        list(ShardStream(copy_build, split="test", mode="volumes"))
    assert any("checksum mismatch" in p for p in verify_shards(copy_build).problems)


def test_2d_patches_are_box_cropped_slices_deterministic_and_zero_padded(built):
    store = CohortStore(built.out)

    def stream(size, seed=0):
        return ShardStream(built.out, split="train", mode="patches", batch_size=6,
                           patch_size=size, patches_per_volume=3, fields=("image", "mask"),
                           seed=seed, resampled=True, steps_per_epoch=2)

    a, b = list(stream((32, 32))), list(stream((32, 32)))
    assert all(torch.equal(p["image"], q["image"]) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0]["image"], next(iter(stream((32, 32), seed=1)))["image"])
    big = next(iter(stream((48, 60))))  # larger than the 44×52 slices: zero-padded
    for batch, (px, py) in ((a[0], (32, 32)), (big, (48, 60))):
        assert batch["image"].shape == (6, 1, px, py) and batch["origin"].shape == (6, 3)
        for i in range(6):
            x, y, z = batch["origin"][i].tolist()
            sid = batch["subject_id"][i]
            image = store.read(sid, "image")[..., z].astype(np.float32)
            mask = store.read(sid, "mask")[..., z]
            assert mask.any()  # a slice with brain
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = np.zeros_like(image)
            box[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = 1
            want = np.zeros((px, py), np.float32)
            for u in range(px):  # the patch, read voxel by voxel from the boxed slice
                for v in range(py):
                    if 0 <= x + u < image.shape[0] and 0 <= y + v < image.shape[1]:
                        want[u, v] = (image * box)[x + u, y + v]
            assert np.array_equal(batch["image"][i, 0].numpy(), want)
            assert batch["mask"][i, 0].sum() > 0
    assert (big["mask"].flatten(1).sum(1) == big["mask"].new_tensor(
        [store.read(s, "mask")[..., int(o[2])].sum() for s, o in
         zip(big["subject_id"], big["origin"], strict=True)])).all()  # whole box inside


def test_cohort_options_come_from_the_manifest_statistics(built, copy_build):
    from adsys.errors import InputError
    from adsys.synth.corruption import make_corruption

    stats = built.manifest.statistics["tissue_centroids"]
    dag = make_corruption("dag", {"window": 30})  # centroids unset: the shards' are used
    chain = make_corruption("chain", {"stages": [{"name": "spatial_augmentation"},
                                                 {"name": "dag", "options": {"window": 30}}]})
    for corruption in (dag, chain):
        stream = ShardStream(built.out, split="train", mode="patches", patch_size=(32, 32),
                             batch_size=4, fields=("image", "mask"), corruption=corruption,
                             resampled=True, steps_per_epoch=1)
        bound = stream.corruption if corruption is dag else stream.corruption.stages[1]
        assert bound.options.centroids == stats and not stream.corruption.cohort_keys()
        batches = list(make_loader(stream, num_workers=2))  # the workers use the same
        assert len(batches) == 1 and len(batches[0]["corruption"]["params"]) == 4
    assert "target" in stream.batch_fields and "target" in batches[0]
    manifest = ShardManifest.from_json((copy_build / MANIFEST_NAME).read_text())
    manifest.statistics = {}
    (copy_build / MANIFEST_NAME).write_text(manifest.to_json())
    with pytest.raises(InputError, match=rf"{copy_build}.*tissue_centroids.*rebuild the shards"):
        ShardStream(copy_build, split="train", corruption=dag)
