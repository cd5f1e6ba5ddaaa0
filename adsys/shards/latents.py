"""A latent shard set: a shard set's volumes encoded once by an exported autoencoder.

A latent diffusion method encodes its (healthy, variant) pairs with a frozen autoencoder;
done on the fly that costs an encoder pass per volume per step. :func:`encode_shard_set`
writes the latents once instead, as a shard set of the **same schema** (tar shards +
``manifest.json`` with every checksum; :func:`~adsys.shards.verify.verify_shards` checks it)
that the same stream reads:

* a sample's ``image`` is the healthy volume's latent, ``variants`` its K variants'
  latents — posterior means, unscaled, float16 — each (C, x', y', z') latent **folded** into
  one (x', y', C·z') volume (channel c is z-slices c·z' … (c+1)·z' − 1; :func:`fold` /
  :func:`unfold`), so the schema's 3D arrays, variant boxes and checksums apply unchanged;
* ``mask`` and ``lesions`` are the brain mask and lesions max-pooled to the latent grid
  (any voxel of a cell) and repeated per channel;
* ``meta.json`` keeps the source sample's record, with ``grid.shape`` the folded shape and
  ``latent`` = {channels, shape, pad_multiple, region}; the manifest's spec records the
  source build (``spec_digest``), the encoder's weights (sha256) and ``pad_multiple``.

Volumes are padded (zero, evenly) to ``pad_multiple`` before encoding, which must be the
latent method's own (its config's ``pad_multiple``), so the latents equal those it would
compute on the fly. The job resumes: committed shards that still match their sha256 are
kept and their subjects not encoded again; a finished set with the same identity is left
as it is; another identity is refused unless ``overwrite``.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from adsys.errors import InputError
from adsys.io.atomic import write_json_atomic
from adsys.io.nifti import sha256_file
from adsys.shards.build import SpecMismatchError, clean_partials, valid_prefix
from adsys.shards.codecs import sample_checksum
from adsys.shards.sample import (
    axial_brain_voxels,
    encode_sample,
    sample_meta,
    to_schema_arrays,
    variant_boxes,
)
from adsys.shards.schema import (
    ALL_FIELDS,
    MANIFEST_NAME,
    SampleRecord,
    ShardManifest,
    SplitRecord,
    sample_key,
)
from adsys.shards.tar import load_shard_manifest, read_shard
from adsys.shards.writers import TarShardWriter

__all__ = ["LatentResult", "encode_shard_set", "fold", "unfold"]

log = logging.getLogger(__name__)


def fold(latent: torch.Tensor) -> torch.Tensor:
    """(..., C, x, y, z) → (..., x, y, C·z): channels stacked along the last axis."""
    *lead, c, x, y, z = latent.shape
    return latent.movedim(-4, -2).reshape(*lead, x, y, c * z)


def unfold(volume: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of :func:`fold`: (..., x, y, C·z) → (..., C, x, y, z)."""
    *lead, x, y, cz = volume.shape
    if cz % channels:
        raise ValueError(f"a folded latent's last axis ({cz}) is not a multiple of its "
                         f"{channels} channels: not a latent shard set of this autoencoder?")
    return volume.reshape(*lead, x, y, channels, cz // channels).movedim(-2, -4)


@dataclass
class LatentResult:
    """What one run did: subjects encoded now and reused from committed shards."""

    out: Path
    encoded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def _pool(volume: np.ndarray, factor: int, pad_multiple: int, channels: int) -> np.ndarray:
    """A (x, y, z) mask max-pooled to the latent grid and repeated per channel (folded)."""
    from adsys.nn.autoencoder import pad_to_multiple

    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    pooled = F.max_pool3d(pad_to_multiple(t, pad_multiple)[0], factor)[0]  # (1, x', y', z')
    return fold(pooled.expand(channels, *pooled.shape[1:])).numpy().astype(np.uint8)


def encode_shard_set(
    source: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    pad_multiple: int,
    splits: tuple[str, ...] = ("train", "val"),
    batch_size: int = 4,
    device: str = "cpu",
    shard_size_mb: float = 64,
    overwrite: bool = False,
    progress: bool = True,
) -> LatentResult:
    """Encode ``splits`` of the shard set ``source`` with the exported autoencoder ``model``
    into the latent shard set ``out`` (module doc); returns what was encoded and reused."""
    from adsys.methods.export import WEIGHTS, load_exported

    method, record = load_exported(model, device=device)
    if not hasattr(method, "encode") or not hasattr(method, "latent_std"):
        raise InputError(model, f"a {record['method']!r} model has no encoder",
                         "pass the export of an autoencoder (a model with encode)")
    factor = method.config.autoencoder.factor
    if pad_multiple % factor:
        raise InputError(None, f"pad_multiple {pad_multiple} is not a multiple of the "
                         f"encoder's factor {factor}", "use the latent method's pad_multiple")
    src, base = load_shard_manifest(source)
    missing = [s for s in splits if s not in src.splits]
    if src.status != "complete" or missing:
        raise InputError(source, f"not a complete shard set with splits {list(splits)}",
                         "finish the shard build first")
    out = Path(out).resolve()
    identity = {"latents_of": src.spec_digest, "pad_multiple": pad_multiple,
                "encoder_sha256": sha256_file(Path(model) / WEIGHTS),
                "latent_std": float(method.latent_std), "splits": list(splits)}
    old = _previous(out, identity, overwrite)
    result = LatentResult(out=out)
    channels = method.config.autoencoder.latent_channels
    sizes = None
    manifest = ShardManifest(
        spec_digest=src.spec_digest, spec={**src.spec, "latent": identity},
        formats=["wds"], lesion_format="binary", splits={},
    )
    kept = {s: valid_prefix(out, old.shards_of(s)) if old else [] for s in splits}
    manifest.shards = [sh for s in splits for sh in kept[s]]
    clean_partials(out, {sh.name for sh in manifest.shards})
    done = {(sh.split, s.row) for sh in manifest.shards for s in sh.samples}
    bar = tqdm(total=sum(len(src.splits[s].subjects) for s in splits), unit="subject",
               desc="latents", disable=not progress)
    for split in splits:
        writer = TarShardWriter(out, split, int(shard_size_mb * 2**20), len(kept[split]))
        for shard in src.shards_of(split):
            rows = [s.row for s in shard.samples]
            reused = [s.subject_id for s in shard.samples if (split, s.row) in done]
            result.reused += reused
            bar.update(len(reused))
            todo = [(split, r) not in done for r in rows]
            for read in read_shard(f"{base}/{shard.name}", shard, fields=ALL_FIELDS,
                                   wanted=lambda p, todo=todo: p >= len(todo) or todo[p]):
                if read.sample is None:
                    raise InputError(source, read.problem, "repair or rebuild the source shards")
                sample = read.sample
                row = sample.meta["row"]
                members, meta = _latent_sample(method, sample, pad_multiple, batch_size,
                                               channels, factor)
                sizes = meta["grid"]["shape"]
                rec = SampleRecord(key=sample.key, subject_id=sample.subject_id, row=row,
                                   crc32c=sample_checksum(members),
                                   nbytes=sum(len(d) for _, d in members))
                _commit(out, manifest, writer.add(members, rec))
                result.encoded.append(sample.subject_id)
                bar.update(1)
        _commit(out, manifest, writer.close())
    bar.close()
    if sizes is None:  # everything reused: read one sample's folded shape
        read = next(read_shard(str(out / manifest.shards[0].name), manifest.shards[0]))
        sizes = read.sample.meta["grid"]["shape"]
    manifest.splits = {
        s: SplitRecord(subjects=src.splits[s].subjects, num_variants=src.splits[s].num_variants,
                       generator=src.splits[s].generator, shape=tuple(sizes), has_seg=False)
        for s in splits
    }
    manifest.status = "complete"
    write_json_atomic(out / MANIFEST_NAME, manifest.model_dump(mode="json"))
    return result


def _previous(out: Path, identity: dict[str, Any], overwrite: bool) -> ShardManifest | None:
    """The manifest of an earlier run into ``out`` with the same identity (to resume), or
    ``None``; refuse another identity unless ``overwrite`` (which deletes ``out``)."""
    file = out / MANIFEST_NAME
    if not file.is_file():
        return None
    old = ShardManifest.from_json(file.read_text(encoding="utf-8"), str(file))
    if old.spec.get("latent") == identity:
        return old
    if not overwrite:
        raise SpecMismatchError(out, "holds latents of other shards, another encoder or "
                                "another pad_multiple", "pass --overwrite or another --out")
    shutil.rmtree(out)
    return None


def _commit(out: Path, manifest: ShardManifest, shard) -> None:
    if shard is not None:
        manifest.shards.append(shard)
        write_json_atomic(out / MANIFEST_NAME, manifest.model_dump(mode="json"))
        log.info("committed %s (%d samples)", shard.name, shard.count)


@torch.no_grad()
def _latent_sample(method, sample, pad_multiple: int, batch_size: int, channels: int,
                   factor: int) -> tuple[list[tuple[str, bytes]], dict[str, Any]]:
    """The tar members and meta of one subject's latent sample."""
    device = next(method.parameters()).device
    volumes = np.concatenate([sample.image[None], sample.variants]).astype(np.float32)
    latents, region = [], None
    for start in range(0, len(volumes), batch_size):
        batch = torch.from_numpy(volumes[start:start + batch_size])[:, None].to(device)
        z, region = method.encode(batch, pad_multiple)
        latents.append(z.float().cpu())
    folded = fold(torch.cat(latents)).numpy()  # (1 + K, x', y', C·z')
    mask = _pool(sample.mask, factor, pad_multiple, channels)
    lesions = np.stack([_pool(les, factor, pad_multiple, channels) for les in sample.lesions])
    arrays = to_schema_arrays(folded[0], mask, folded[1:], lesions, None, "binary")
    latent_shape = list(latents[0].shape[2:])
    src = sample.meta
    record = {**src["preprocess"], "grid": {"shape": list(folded.shape[1:]),
                                           "latent_of": src["grid"]}}
    meta = sample_meta(
        subject_id=sample.subject_id, split=src["split"], row=src["row"], record=record,
        variants=src["variants"],
        boxes=variant_boxes(arrays["image"], arrays["variants"], arrays["lesions"]),
        brain=axial_brain_voxels(mask), lesion_format="binary", has_seg=False,
    )
    meta["latent"] = {"channels": channels, "shape": latent_shape,
                      "pad_multiple": pad_multiple,
                      "region": [[r.start, r.stop] for r in region]}
    return encode_sample(sample_key(sample.subject_id), arrays, meta, "lz4"), meta
