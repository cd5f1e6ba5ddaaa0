"""Latent shard sets: fold/unfold, the encoded latents equal the autoencoder's on the fly,
the set verifies like any shard set, the stream reads it, a re-run does no work, another
encoder is refused, and ``conddiff`` trains on it with the same loss as on the fly."""

import pytest
import torch

from adsys.methods import build_method
from adsys.methods.export import export_model
from adsys.shards.latents import encode_shard_set, fold, unfold
from adsys.train.config import resolve_config
from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures


def test_fold_stacks_channels_along_z_and_unfold_inverts_it():
    latent = torch.arange(2 * 3 * 2 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 2, 4)
    folded = fold(latent)
    assert folded.shape == (2, 2, 2, 12)
    assert torch.equal(folded[1, :, :, 4:8], latent[1, 1])  # channel 1 = z-slices 4..7
    assert torch.equal(unfold(folded, 3), latent)
    with pytest.raises(ValueError, match="not a multiple"):
        unfold(folded, 5)


def _aekl(folder):
    torch.manual_seed(0)
    cfg = resolve_config("smoke", None, {"method": "aekl"}).method_config
    method = build_method("aekl", cfg)
    method.latent_std.fill_(2.0)
    export_model(folder, "aekl", method.config, method.state_dict())
    return method.eval()


@pytest.mark.ray
def test_latent_set_holds_the_encoders_latents_verifies_streams_and_resumes(
    smoke_shards, tmp_path  # noqa: F811
):
    from adsys.shards.stream import ShardStream
    from adsys.shards.tar import load_shard_manifest, read_shard
    from adsys.shards.verify import verify_shards

    aekl = _aekl(tmp_path / "aekl")
    out = tmp_path / "latents"
    result = encode_shard_set(smoke_shards, tmp_path / "aekl", out, pad_multiple=16,
                              progress=False)
    assert len(result.encoded) == 4 and not result.reused  # 3 train + 1 val subjects
    report = verify_shards(out)
    assert report.ok, report.problems
    manifest, base = load_shard_manifest(out)
    assert manifest.splits["train"].shape == (6, 8, 18)  # 44x52x44 -> 48x64x48 -> 3x6x8x6
    src, src_base = load_shard_manifest(smoke_shards)
    source = {r.sample.subject_id: r.sample for sh in src.shards_of("train")
              for r in read_shard(f"{src_base}/{sh.name}", sh)}
    shard = manifest.shards_of("train")[0]
    sample = next(read_shard(f"{base}/{shard.name}", shard)).sample
    volumes = torch.from_numpy(source[sample.subject_id].variants[:1]).float()[:, None]
    want = aekl.encode(volumes, 16)[0][0]
    got = unfold(torch.from_numpy(sample.variant(0)).float(), 3)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # float16 storage
    assert sample.meta["latent"]["shape"] == [6, 8, 6]
    # the training stream reads it like any shard set: (healthy, variant) folded latents
    batch = next(iter(ShardStream(out, split="train", mode="volumes", batch_size=2, seed=0,
                                  fields=("image", "variant"), resampled=False,
                                  shuffle=False)))
    assert batch["image"].shape == (2, 1, 6, 8, 18) and batch["variant_index"].min() >= 0
    # a re-run does no work; another pad multiple (another latent grid) is refused
    again = encode_shard_set(smoke_shards, tmp_path / "aekl", out, pad_multiple=16,
                             progress=False)
    assert not again.encoded and len(again.reused) == 4
    with pytest.raises(Exception, match="pad_multiple"):
        encode_shard_set(smoke_shards, tmp_path / "aekl", out, pad_multiple=32, progress=False)
    # conddiff on the latent set: the same loss as encoding the same volumes on the fly
    g = torch.Generator
    cfg = resolve_config("smoke", None, {"method": "conddiff"}).method_config
    torch.manual_seed(0)
    live = build_method("conddiff", {**cfg, "autoencoder_path": str(tmp_path / "aekl")})
    live.load_pretrained()
    stored = build_method("conddiff", {**cfg, "autoencoder_path": str(tmp_path / "aekl"),
                                       "latents_from_shards": True})
    stored.load_state_dict(live.state_dict())
    vols = {"image": torch.from_numpy(source[sample.subject_id].image.copy())[None, None].float(),
            "variant": volumes[:1]}
    latents = {"image": torch.from_numpy(sample.image).float()[None, None],
               "variant": torch.from_numpy(sample.variant(0)).float()[None, None]}
    torch.testing.assert_close(stored.training_loss(latents, g().manual_seed(4)),
                               live.training_loss(vols, g().manual_seed(4)),
                               rtol=1e-2, atol=1e-3)
