"""The worker pool of ShardLoader: persistent workers, errors and deaths raised in the
consumer, early stops, spawn, and the stream under a plain torch DataLoader."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from adsys.seeding import generator
from adsys.shards.loader import make_loader
from adsys.shards.schema import MANIFEST_NAME, ShardManifest
from adsys.shards.stream import CorruptShardError, ShardStream
from adsys.synth.corruption import make_corruption

pytestmark = pytest.mark.ray  # uses the session's Ray-built shards


def _slices(batches) -> list[tuple[str, int, int]]:
    return [
        (s, int(z), int(k))
        for b in batches
        for s, z, k in zip(b["subject_id"], b["slice_index"], b["variant_index"], strict=True)
    ]


def _resampled(source, **kw) -> ShardStream:
    kw = {"batch_size": 8, **kw}
    return ShardStream(source, split="train", resampled=True, steps_per_epoch=6, **kw)


def test_persistent_workers_serve_every_epoch_and_stop_on_close(built):
    loader = make_loader(_resampled(built.out), num_workers=2)
    draws = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        draws.append(_slices(loader))
        if epoch == 0 and len(draws) == 1:
            pids = [p.pid for p in loader._workers.procs]
    assert [p.pid for p in loader._workers.procs] == pids  # the same processes throughout
    assert draws[0] == draws[2] != draws[1]  # an epoch's draws depend on its number only
    fresh = make_loader(_resampled(built.out), num_workers=2, persistent_workers=False)
    fresh.set_epoch(1)
    assert _slices(fresh) == draws[1] and fresh._workers is None  # same batches, no workers
    procs = loader._workers.procs
    loader.close()
    assert not any(p.is_alive() for p in procs)


def test_an_epoch_stopped_early_stops_its_workers_and_the_next_starts_afresh(built):
    loader = make_loader(_resampled(built.out), num_workers=2)
    whole = _slices(loader)
    it = iter(loader)
    first = next(it)
    procs = loader._workers.procs
    it.close()  # the consumer leaves mid-epoch: workers may be blocked mid-batch
    assert not any(p.is_alive() for p in procs)
    assert _slices([first]) == whole[:8]
    assert _slices(loader) == whole
    loader.close()


def test_a_worker_error_is_raised_in_the_consumer_with_its_type(copy_build):
    manifest = ShardManifest.from_json((copy_build / MANIFEST_NAME).read_bytes())
    shard = copy_build / manifest.shards_of("train")[0].name
    data = bytearray(shard.read_bytes())
    data[512 + 40] ^= 0xFF  # inside the first member's payload
    shard.write_bytes(bytes(data))
    stream = ShardStream(copy_build, split="train", mode="volumes", batch_size=1)
    with pytest.raises(CorruptShardError, match="checksum mismatch") as info:
        list(make_loader(stream, num_workers=2))
    assert any("raised in shard loader worker" in note for note in info.value.__notes__)


def test_a_killed_worker_is_reported_not_waited_for(built):
    loader = make_loader(_resampled(built.out), num_workers=2, prefetch_factor=1)
    it = iter(loader)
    next(it)
    os.kill(loader._workers.procs[1].pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match=r"worker 1 .* exit code -9"):
        list(it)
    assert _slices(loader)  # the next epoch starts new workers
    loader.close()


def test_spawned_workers_give_the_same_batches(built):
    stream = _resampled(built.out)
    forked = _slices(make_loader(stream, num_workers=2, persistent_workers=False))
    spawned = make_loader(stream, num_workers=2, multiprocessing_context="spawn")
    assert _slices(spawned) == forked
    spawned.close()


def test_the_stream_also_works_under_a_plain_dataloader(built):
    stream = ShardStream(built.out, split="train", mode="slices", batch_size=8)
    ours = Counter(s[:2] for s in _slices(stream))  # in-process: every slice once
    plain = DataLoader(stream, batch_size=None, num_workers=2)
    batches = list(plain)  # split by DataLoader worker (variant draws differ per worker)
    assert all(b["image"].dtype == torch.float32 for b in batches)
    assert Counter(s[:2] for s in _slices(batches)) == ours


def test_pipe_urls_read_like_local_files(built):
    """Shards behind a ``pipe:`` URL (a non-seekable stream): with more consumers than
    shards, each skips the samples of the others without seeking."""
    total = Counter(s.subject_id for sh in built.manifest.shards_of("train") for s in sh.samples)
    seen: Counter = Counter()
    for rank in range(4):
        stream = ShardStream(
            built.out,
            split="train",
            mode="volumes",
            batch_size=1,
            rank=rank,
            world_size=4,
            shard_url=f"pipe:cat {built.out}/{{name}}",
        )
        seen.update(sid for b in stream for sid in b["subject_id"])
    assert seen == total


@pytest.mark.parametrize("mode", ["slices", "volumes"])
def test_online_corruption_runs_in_the_workers_and_regenerates_from_its_record(built, mode):
    """Batches corrupted in two worker processes: each carries the keys that regenerate its
    corruption and the items' parameters that replay it, exactly; only the asked-for fields
    are stacked, and they are the same items as a stream of every field gives."""
    aug = make_corruption("intensity_augmentation")
    kw = dict(mode=mode, batch_size=4 if mode == "slices" else 1)
    stream = _resampled(built.out, fields=("image", "mask"), corruption=aug, **kw)
    loader = make_loader(stream, num_workers=2)
    loader.set_epoch(3)
    batches = list(loader)
    assert {b["corruption"]["keys"][2] for b in batches} == {0, 1}  # made by both workers
    changed = 0
    for b in batches:
        assert set(b) >= {"image", "mask", "corrupted", "anomaly_mask", "corruption"}
        assert "variant" not in b and "lesion" not in b
        seed, rank, worker, epoch, index = b["corruption"]["keys"]
        assert (seed, rank, epoch) == (0, 0, 3)
        again = aug(b["image"], b["mask"], generator("corruption", *b["corruption"]["keys"]))
        assert torch.equal(again.corrupted, b["corrupted"])
        replayed = aug.replay(b["image"], b["mask"], b["corruption"]["params"])
        assert torch.equal(replayed.corrupted, b["corrupted"])
        changed += int((b["corrupted"] != b["image"]).any())
    assert changed > 0
    everything = _resampled(built.out, **kw)
    everything.set_epoch(3)
    full = list(make_loader(everything, num_workers=2))
    assert [b["subject_id"] for b in full] == [b["subject_id"] for b in batches]
    assert all(torch.equal(f["image"], b["image"]) for f, b in zip(full, batches, strict=True))
    loader.close()
