"""``conddiff`` / ``cldm``: pairs, conditioning paths, the frozen autoencoder, the learned-
variance loss and chain on latents."""

from __future__ import annotations

import pytest
import torch

from adsys.diffusion import q_sample
from adsys.diffusion.learned import hybrid_loss
from adsys.errors import InputError
from adsys.methods import build_method, method_config
from adsys.methods.export import export_model
from adsys.train.config import resolve_config
from tests.train.conftest import smoke_cohort, smoke_shards  # noqa: F401 - session fixtures


def _smoke(name: str = "conddiff", **overrides):
    torch.manual_seed(0)
    cfg = resolve_config("smoke", None, {"method": name}).method_config
    method = build_method(name, {**cfg, **overrides})
    with torch.no_grad():  # off the zero-initialised output conv
        for p in method.unet.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return method


def _volumes(n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, 20, 24, 20, generator=g),
            "variant": torch.rand(n, 1, 20, 24, 20, generator=g)}


def test_pairs_are_the_variant_or_with_probability_0_2_the_healthy_volume():
    method = _smoke()
    batch = _volumes(n=8)
    flags = []
    for seed in range(250):
        healthy, cond, identity = method.pairs(batch, torch.Generator().manual_seed(seed))
        assert torch.equal(healthy, batch["image"])
        for i, same in enumerate(identity.tolist()):
            assert torch.equal(cond[i], (batch["image"] if same else batch["variant"])[i])
        flags += identity.tolist()
    assert abs(sum(flags) / len(flags) - 0.2) < 0.03  # 2000 draws: σ ≈ 0.009


def test_cldm_and_conddiff_share_everything_but_the_conditioning_path():
    a, b = _smoke("conddiff").state_dict(), _smoke("cldm").state_dict()
    only_a = {k for k in a if k not in b}
    assert only_a and all(k.startswith("semantic.") or ".cond." in k for k in only_a)
    assert set(b) <= set(a)
    differ = {k for k in b if a[k].shape != b[k].shape}
    assert differ == {"unet.input_blocks.0.0.weight"}  # cldm's first conv: 2C inputs
    first = "unet.input_blocks.0.0.weight"
    assert b[first].shape[1] == 2 * a[first].shape[1]
    ca, cb = method_config("conddiff"), method_config("cldm")
    assert ca.unet_config().cond_dim == 1280 and cb.unet_config().cond_dim is None
    assert ca.model_dump(exclude={"method", "conditioning"}) == cb.model_dump(
        exclude={"method", "conditioning"})


@pytest.mark.parametrize("name", ["conddiff", "cldm"])
def test_training_loss_is_the_hybrid_loss_on_the_scaled_latents(name):
    method = _smoke(name, latent_scale=0.5).train()
    batch = _volumes()
    seen = {}
    method.unet.register_forward_hook(lambda m, i, o: seen.update(x=i[0], t=i[1], out=o))
    loss = method.training_loss(batch, torch.Generator().manual_seed(3))
    # replay the draws: identity flags, then t, then the noise
    g = torch.Generator().manual_seed(3)
    healthy, cond, _ = method.pairs(batch, g)
    z0 = method.latents(healthy)[0]
    zc = method.latents(cond)[0]
    assert method.config.pad_multiple == 16  # smoke: 8x autoencoder x 2x latent UNet
    assert z0.shape[2:] == (4, 4, 4)  # 20x24x20 padded evenly to 32³
    mu = method.autoencoder.encode(torch.nn.functional.pad(healthy, (6, 6, 4, 4, 6, 6)))[0]
    torch.testing.assert_close(z0, 0.5 * mu)  # posterior mean × latent scale, padded evenly
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    assert torch.equal(seen["t"], t)
    z_t = q_sample(method.schedule, z0, t, noise)
    want_input = torch.cat([z_t, zc], 1) if name == "cldm" else z_t
    torch.testing.assert_close(seen["x"], want_input)
    torch.testing.assert_close(loss, hybrid_loss(method.schedule, seen["out"], z0, z_t, t,
                                                 noise).mean())


def test_restore_runs_every_step_from_t_start_on_the_inputs_own_latent():
    method = _smoke().eval()
    x = _volumes(n=1)["image"]
    calls, conds = [], []
    method.unet.register_forward_hook(lambda m, i, o: calls.append(int(i[1][0])))
    method.semantic.register_forward_hook(lambda m, i, o: conds.append(i[0]))
    rec = method.restore(x, torch.Generator().manual_seed(0))
    t0 = method.config.inference.t_values[0]
    assert calls == list(range(t0, -1, -1))
    assert len(conds) == 1 and torch.equal(conds[0], method.latents(x)[0])
    assert rec.shape == x.shape and rec.min() == 0 and rec.max() == 1  # min–max normalised
    again = method.restore(x, torch.Generator().manual_seed(0))
    assert torch.equal(rec, again)


def test_one_start_step_and_volume_pairs_are_required():
    with pytest.raises(Exception, match="single start step"):
        method_config("conddiff", {"inference": {"t_values": [249, 499]}})
    with pytest.raises(Exception, match="volume pairs"):
        method_config("conddiff", {"data": {"fields": ["image"]}})


def _aekl_export(tmp_path, preset: str = "smoke"):
    torch.manual_seed(1)
    aekl = build_method("aekl", resolve_config(preset, None, {"method": "aekl"}).method_config)
    aekl.latent_std.fill_(4.0)
    return export_model(tmp_path / "aekl", "aekl", aekl.config, aekl.state_dict()), aekl


def test_load_pretrained_takes_the_aekl_weights_and_its_latent_scale(tmp_path):
    folder, aekl = _aekl_export(tmp_path)
    method = _smoke(autoencoder_path=str(folder))
    method.load_pretrained()
    for k, v in aekl.autoencoder.state_dict().items():
        assert torch.equal(method.autoencoder.state_dict()[k], v)
    assert float(method.latent_scale) == 0.25  # 1 / the autoencoder's latent std
    assert not any(p.requires_grad for p in method.autoencoder.parameters())
    fixed = _smoke(autoencoder_path=str(folder), latent_scale=0.18215)
    fixed.load_pretrained()
    assert float(fixed.latent_scale) == pytest.approx(0.18215)
    other = _smoke(autoencoder_path=str(folder),
                   autoencoder={"channels": [8, 8, 8, 8], "norm_num_groups": 8})
    with pytest.raises(InputError, match="same preset"):
        other.load_pretrained()


@pytest.mark.ray
def test_stream_pairs_are_a_subject_and_its_own_fluid_variant(smoke_shards):  # noqa: F811
    from adsys.shards.stream import ShardStream
    from adsys.shards.tar import load_shard_manifest, read_shard

    spec = method_config("conddiff").data
    stream = ShardStream(smoke_shards, split="train", mode=spec.mode, batch_size=2, seed=0,
                         fields=spec.fields, resampled=False, shuffle=False)
    manifest, _ = load_shard_manifest(smoke_shards)
    samples = {}
    for index, shard in enumerate(stream.shards):
        for read in read_shard(stream.urls[index], shard):
            samples[read.sample.subject_id] = read.sample
    seen = 0
    for batch in stream:
        for i, subject in enumerate(batch["subject_id"]):
            sample, k = samples[subject], int(batch["variant_index"][i])
            assert k >= 0
            assert torch.equal(batch["image"][i, 0], torch.as_tensor(sample.image.copy()))
            assert torch.equal(batch["variant"][i, 0], torch.as_tensor(sample.variant(k)))
            assert not torch.equal(batch["variant"][i], batch["image"][i])
            seen += 1
    assert seen == len(manifest.splits["train"].subjects) == 3
