"""Schema, tar writer, spec and seeds: unit tests without Ray."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from adsys.errors import InputError
from adsys.shards.codecs import decode_array, encode_array, sample_checksum
from adsys.shards.sample import (
    axial_brain_voxels,
    decode_sample,
    encode_sample,
    to_schema_arrays,
    variant_boxes,
)
from adsys.shards.schema import (
    MANIFEST_NAME,
    SampleRecord,
    ShardFormatError,
    ShardManifest,
    ShardManifestError,
    ShardRecord,
    SplitRecord,
    parse_member_name,
    sample_key,
    subject_id_of,
)
from adsys.shards.spec import ShardSpec, load_spec
from adsys.shards.stream import ShardStream
from adsys.shards.tar import load_shard_manifest, read_shard
from adsys.shards.verify import verify_shards
from adsys.shards.writers import TarShardWriter, member_nbytes, write_tar
from tests.shards.conftest import SMOKE_SPEC


def _sample(key: str = "sub-1", k: int = 2, shape=(6, 7, 5), seed: int = 0):
    """Variant 0 changes a small box of the image, variant 1 (if any) all of it."""
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32)
    mask = (image > 0.3).astype(np.uint8)
    variants = np.stack([image] * k)
    variants[0, 1:3, 2:5, 1:4] += 0.5
    variants[1:] *= 2
    lesions = (variants != image).astype(np.uint8)
    arrays = to_schema_arrays(image, mask, variants, lesions, None, "binary")
    boxes = variant_boxes(arrays["image"], arrays["variants"], arrays["lesions"])
    meta = {
        "grid": {"shape": list(shape)},
        "num_variants": k,
        "lesion_format": "binary",
        "variant_boxes": boxes,
        "axial_brain_voxels": axial_brain_voxels(arrays["mask"]),
        "variants": [{"index": i, "seed": 7 + i} for i in range(k)],
    }
    return arrays, meta


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_array_roundtrip_is_exact(codec):
    a = np.random.default_rng(1).random((3, 4, 5)).astype(np.float16)
    b = decode_array(encode_array(a, codec), codec)
    assert b.dtype == a.dtype and np.array_equal(a, b)
    f = np.asfortranarray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert np.array_equal(decode_array(encode_array(f, codec), codec), f)


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_undecodable_payloads_raise_a_format_error(codec):
    data = encode_array(np.zeros((8, 8), np.float16), codec)
    with pytest.raises(ShardFormatError, match="not a"):
        decode_array(data[: len(data) // 2], codec)
    with pytest.raises(ShardFormatError):
        decode_array(encode_array(np.zeros((8, 8), np.float16), "none")[:-2], "none")


def test_sample_checksum_is_crc32c_over_names_sizes_and_bytes():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value
    members = [("a.image.npy", b"123456789"), ("a.meta.json", b"{}")]
    blob = b"".join(n.encode() + len(d).to_bytes(8, "little") + d for n, d in members)
    assert sample_checksum(members) == f"{google_crc32c.value(blob):08x}"
    flipped = [("a.image.npy", b"123456788"), members[1]]
    assert sample_checksum(flipped) != sample_checksum(members)


def test_object_arrays_are_refused_without_unpickling():
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ShardFormatError, match="object dtype"):
        decode_array(buf.getvalue(), "none")


@pytest.mark.parametrize(
    "name",
    [
        "../evil.image.npy",
        "/abs.image.npy",
        "a/b.image.npy",
        "sub.pickle.npy",
        "sub.image.pkl",
        "sub.meta.npy",
        ".hidden.image.npy",
        "sub",
    ],
)
def test_unexpected_member_names_are_rejected(name):
    with pytest.raises(ShardFormatError):
        parse_member_name(name)


def test_keys_escape_dots_reversibly():
    assert sample_key("sub.01_a-b") == "sub%2E01_a-b"
    assert subject_id_of(sample_key("sub.01_a-b")) == "sub.01_a-b"
    assert parse_member_name("sub%2E01.variants.npy.zst") == ("sub%2E01", "variants", "zstd")
    assert parse_member_name("sub%2E01.image.npy.lz4") == ("sub%2E01", "image", "lz4")
    assert parse_member_name("sub%2E01.meta.json") == ("sub%2E01", "meta", "none")


def test_sample_roundtrip_and_schema_checks():
    arrays, meta = _sample()
    members = encode_sample("sub-1", arrays, meta, "lz4")
    assert [n for n, _ in members] == [
        "sub-1.image.npy.lz4",
        "sub-1.mask.npy.lz4",
        "sub-1.variants.npy.lz4",
        "sub-1.lesions.npy.lz4",
        "sub-1.replay.json",
        "sub-1.meta.json",
    ]
    sample = decode_sample(members)
    assert sample.meta == meta
    for name, arr in arrays.items():
        assert np.array_equal(getattr(sample, name), arr)
    lean = decode_sample(members, fields=("image", "mask"))  # what a stream asks for
    assert "variants" not in lean.meta and lean.variant_parts is None
    assert lean.meta == {k: v for k, v in meta.items() if k != "variants"}
    with pytest.raises(ShardFormatError, match="lacks"):
        decode_sample(members[1:])
    wrong = {**arrays, "mask": arrays["mask"].astype(np.float32)}
    with pytest.raises(ShardFormatError, match="schema says"):
        decode_sample(encode_sample("sub-1", wrong, meta, "none"))


def _bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_variants_are_stored_as_boxes_and_rebuilt_bit_for_bit():
    arrays, meta = _sample(k=3)
    arrays["image"][0, 0, 0] = 0.0
    arrays["variants"][2] = arrays["image"]  # a variant equal to the image: empty box
    arrays["lesions"][2] = 0
    arrays["variants"][0][0, 0, 0] = -0.0  # equal as numbers, not as stored bits
    meta["variant_boxes"] = variant_boxes(arrays["image"], arrays["variants"], arrays["lesions"])
    assert meta["variant_boxes"][0] == [0, 0, 0, 3, 5, 4]
    assert meta["variant_boxes"][1] == [0, 0, 0, 6, 7, 5]
    assert meta["variant_boxes"][2] == [0] * 6
    members = dict(encode_sample("sub-1", arrays, meta, "none"))
    stored = decode_array(members["sub-1.variants.npy"], "none")
    assert stored.dtype == np.uint16 and stored.shape == (3 * 5 * 4 + 6 * 7 * 5,)
    assert decode_array(members["sub-1.image.npy"], "none").shape == (5, 6, 7)
    sample = decode_sample(list(members.items()))
    for name, arr in arrays.items():
        assert _bitwise_equal(np.ascontiguousarray(getattr(sample, name)), arr), name


def test_soft_lesions_outside_the_changed_voxels_are_kept():
    arrays, meta = _sample()
    soft = arrays["lesions"].astype(np.float16) * np.float16(0.5)
    soft[0, 5, 6, 4] = 0.25  # beyond where variant 0 differs from the image
    arrays = {**arrays, "lesions": soft}
    meta = {**meta, "lesion_format": "soft"}
    meta["variant_boxes"] = variant_boxes(arrays["image"], arrays["variants"], soft)
    assert meta["variant_boxes"][0] == [1, 2, 1, 6, 7, 5]
    sample = decode_sample(encode_sample("sub-1", arrays, meta, "zstd"))
    assert _bitwise_equal(sample.lesions, soft)


def test_crops_and_axial_slices_match_the_dense_arrays():
    arrays, meta = _sample(k=2, shape=(9, 8, 7), seed=3)
    sample = decode_sample(encode_sample("sub-1", arrays, meta, "zstd"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        lo = rng.integers(0, (9, 8, 7))
        hi = lo + rng.integers(1, (9, 8, 7) - lo + 1)
        region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        for k in (-1, 0, 1):
            want_v = arrays["image"] if k < 0 else arrays["variants"][k]
            want_l = np.zeros_like(arrays["mask"]) if k < 0 else arrays["lesions"][k]
            assert _bitwise_equal(sample.variant(k, region), want_v[region])
            assert _bitwise_equal(sample.lesion(k, region), want_l[region])
    zs = np.array([0, 2, 2, 3, 6])
    ks = np.array([0, 1, 0, -1, 0])
    image, mask, variant, lesion = sample.axial(zs, ks)
    for i, (z, k) in enumerate(zip(zs, ks, strict=True)):
        assert _bitwise_equal(image[i], arrays["image"][..., z].copy())
        assert _bitwise_equal(mask[i], arrays["mask"][..., z].copy())
        want = arrays["image"] if k < 0 else arrays["variants"][k]
        assert _bitwise_equal(variant[i], want[..., z].copy())
        assert lesion[i].any() == (k >= 0 and arrays["lesions"][k][..., z].any())


def test_boxes_outside_the_grid_are_refused():
    arrays, meta = _sample()
    members = encode_sample("sub-1", arrays, meta, "none")
    bad = {**meta, "variant_boxes": [[0, 0, 0, 7, 7, 5], meta["variant_boxes"][1]]}
    members[-1] = (members[-1][0], json.dumps(bad).encode())
    with pytest.raises(ShardFormatError, match="do not fit grid"):
        decode_sample(members)


def test_tar_writes_are_deterministic_and_atomic(tmp_path):
    arrays, meta = _sample()
    members = encode_sample("sub-1", arrays, meta, "zstd")
    sha_a, _ = write_tar(tmp_path / "a.tar", members)
    sha_b, _ = write_tar(tmp_path / "b.tar", members)
    assert sha_a == sha_b
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]  # no temp files
    with tarfile.open(tmp_path / "a.tar") as tf:
        for m in tf:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o644)


def test_shard_writer_closes_at_target_size(tmp_path):
    samples = [encode_sample(f"s{i}", *_sample(f"s{i}", seed=i), "none") for i in range(5)]
    size = sum(member_nbytes(len(d)) for _, d in samples[0])  # all samples are this size
    writer = TarShardWriter(tmp_path, "train", target_bytes=2 * size + 1)
    closed = []
    for i, members in enumerate(samples):
        rec = SampleRecord(
            key=f"s{i}", subject_id=f"s{i}", row=i, crc32c=sample_checksum(members), nbytes=size
        )
        closed.append(writer.add(members, rec))
    closed.append(writer.close())
    shards = [c for c in closed if c is not None]
    assert [s.count for s in shards] == [3, 2]
    assert [s.name for s in shards] == ["shards/train-000000.tar", "shards/train-000001.tar"]
    reads = [r for s in shards for r in read_shard(str(tmp_path / s.name), s)]
    assert [r.sample.key for r in reads] == [f"s{i}" for i in range(5)]


def test_reader_rejects_path_traversal_members(tmp_path):
    arrays, meta = _sample()
    members = encode_sample("sub-1", arrays, meta, "none")
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in [("../../etc/sub-1.image.npy", members[0][1]), *members[1:]]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    record = ShardRecord(
        name="evil.tar",
        split="train",
        sha256="0",
        nbytes=0,
        count=1,
        samples=[
            {
                "key": "sub-1",
                "subject_id": "sub-1",
                "row": 0,
                "crc32c": sample_checksum(members),
                "nbytes": 0,
            }
        ],
    )
    (read,) = list(read_shard(str(path), record))
    assert read.sample is None and "ends after 0 of 1" in read.problem
    assert not (tmp_path.parent / "etc").exists()



def test_spec_validation(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject_id,image,split\n")
    spec = load_spec(SMOKE_SPEC, {"manifest": manifest, "out": tmp_path / "o"})
    assert spec.preprocess.shape == (44, 52, 44) and spec.recipe("train").count == 2
    assert spec.out == (tmp_path / "o").resolve()
    base = spec.model_dump()
    with pytest.raises(ValueError, match="preprocess.shape"):
        ShardSpec.model_validate({**base, "preprocess": {"spacing": 4, "shape": None}})
    with pytest.raises(ValueError, match="unknown generator"):
        ShardSpec.model_validate({**base, "variants": {"train": {"generator": "nope"}}})
    with pytest.raises(ValueError, match="bogus"):
        ShardSpec.model_validate({**base, "variants": {"train": {"options": {"bogus": 1}}}})
    with pytest.raises(ValueError, match="extra_forbidden"):
        ShardSpec.model_validate({**base, "shard_sizemb": 3})
    assert ShardSpec.model_validate({**base, "max_failures": 0.25}).failure_budget(10) == 2
    with pytest.raises(InputError):
        load_spec(tmp_path / "missing.yaml")


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
def test_every_codec_and_long_ids_read_back_through_the_shard_reader(tmp_path, codec):
    key = "sub-" + "x" * 120  # member names over 100 characters: tar needs PAX headers
    arrays, meta = _sample(key)
    members = encode_sample(key, arrays, meta, codec)
    writer = TarShardWriter(tmp_path, "train", target_bytes=1 << 30)
    record = SampleRecord(
        key=key, subject_id=key, row=0, crc32c=sample_checksum(members), nbytes=0
    )
    writer.add(members, record)
    shard = writer.close()
    with tarfile.open(tmp_path / shard.name) as tf:
        assert tf.getmembers()[0].pax_headers["path"].startswith(key)
    (read,) = read_shard(str(tmp_path / shard.name), shard)
    assert read.sample.key == key
    for name, arr in arrays.items():
        assert np.array_equal(getattr(read.sample, name), arr)


def _one_shard_build(root, name_of=lambda name: name, zarr=None):
    """A real one-shard build folder at ``root`` (tar + manifest.json), without Ray; the
    manifest's shard name passes through ``name_of`` (to tamper with it). Returns the path
    of the manifest."""
    arrays, meta = _sample("sub-1")
    members = encode_sample("sub-1", arrays, meta, "none")
    writer = TarShardWriter(root, "train", target_bytes=1 << 30)
    writer.add(members, SampleRecord(key="sub-1", subject_id="sub-1", row=0,
                                      crc32c=sample_checksum(members), nbytes=0))
    shard = writer.close()
    manifest = ShardManifest(
        status="complete", spec_digest="0", spec={}, formats=["wds"], lesion_format="binary",
        zarr=zarr,
        splits={"train": SplitRecord(subjects=["sub-1"], num_variants=2, generator="fluid",
                                     shape=arrays["image"].shape, has_seg=False)},
        shards=[shard.model_copy(update={"name": name_of(shard.name)})],
    )
    path = root / MANIFEST_NAME
    path.write_text(manifest.to_json())
    return path


def test_an_untampered_manifest_streams_its_shard(tmp_path):
    _one_shard_build(tmp_path)
    (batch,) = ShardStream(tmp_path, split="train", mode="volumes", batch_size=1)
    assert batch["subject_id"] == ["sub-1"] and batch["image"].shape == (1, 1, 6, 7, 5)


@pytest.mark.parametrize(
    "tampered",
    [
        "../../outside/train-000000.tar",  # a path outside the build folder
        "/etc/passwd",
        "train-000000.tar",  # not in the shard folder
        "shards/val-000000.tar",  # another split's name
        "{name}\n",
        "{name}; touch PWNED #",  # shell syntax for a pipe: template
    ],
)
def test_tampered_shard_names_are_refused_before_any_read(tmp_path, tampered, monkeypatch):
    path = _one_shard_build(tmp_path, lambda name: tampered.format(name=name))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ShardManifestError) as info:
        ShardStream(tmp_path, split="train", mode="volumes", batch_size=1,
                    shard_url=f"pipe:cat {tmp_path}/{{name}}")
    assert str(path) in str(info.value) and "Fix: use the manifest.json" in str(info.value)
    assert not (tmp_path / "PWNED").exists()
    for read in (load_shard_manifest, verify_shards):
        with pytest.raises(ShardManifestError, match="refusing path"):
            read(tmp_path)


def test_a_store_path_other_than_the_builds_is_refused(tmp_path):
    _one_shard_build(tmp_path, zarr="../elsewhere.zarr")
    with pytest.raises(ShardManifestError, match="zarr store '../elsewhere.zarr'"):
        verify_shards(tmp_path)
