"""The KL autoencoder: shapes through the 8× encoder, padding, the KL term, and the ``aekl``
method (critic frozen for the generator's term, latent std, a small overfit)."""

import pytest
import torch

from adsys.methods import build_method
from adsys.nn.autoencoder import (
    AutoencoderConfig,
    build_autoencoder,
    crop_from,
    kl_divergence,
    pad_to_multiple,
)
from tests.helpers import overfit_losses

TINY = {"channels": [8, 8, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4}


def test_encode_decode_shapes_with_padding_to_the_factor():
    cfg = AutoencoderConfig(**TINY)
    assert cfg.factor == 8 and AutoencoderConfig().factor == 8
    ae = build_autoencoder(cfg)
    x = torch.rand(2, 1, 20, 26, 17)
    padded, region = pad_to_multiple(x, cfg.factor)
    assert padded.shape == (2, 1, 24, 32, 24)
    assert torch.equal(crop_from(padded, region), x)  # the original, evenly padded
    assert padded[:, :, :2].abs().sum() == 0 and padded[:, :, -2:].abs().sum() == 0
    mu, sigma = ae.encode(padded)
    assert mu.shape == sigma.shape == (2, 3, 3, 4, 3) and (sigma > 0).all()
    assert ae.decode(mu).shape == padded.shape


def test_kl_term_is_the_closed_form_gaussian_kl():
    mu, sigma = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 0.5]])
    want = sum(
        torch.distributions.kl_divergence(torch.distributions.Normal(m, s),
                                          torch.distributions.Normal(0.0, 1.0))
        for m, s in zip(mu[0], sigma[0], strict=True)
    )
    torch.testing.assert_close(kl_divergence(mu, sigma), want)


def test_groups_must_divide_the_channels():
    with pytest.raises(ValueError, match="norm_num_groups"):
        AutoencoderConfig(channels=(6, 8), norm_num_groups=4)


def _aekl(**kw):
    torch.manual_seed(0)
    critic = {"channels": 4, "num_layers": 2}  # 16³ volumes: 2 strided layers fit
    return build_method("aekl", {"autoencoder": TINY, "discriminator": critic, **kw})


def test_critic_is_frozen_for_the_generator_term_and_trained_on_its_own():
    method = _aekl(adversarial_weight=1.0).train()
    x = torch.rand(1, 1, 16, 16, 16)
    method.training_loss({"image": x}, torch.Generator().manual_seed(0)).backward()
    critic = [p.grad for p in method.discriminator.parameters()]
    assert all(g is not None for g in critic)
    # the critic's gradient is exactly that of its own loss (the generator term adds none)
    rec = method.autoencoder.decode(
        method.autoencoder.encode(x)[0]
        + method.autoencoder.encode(x)[1] * torch.randn((1, 3, 2, 2, 2),
                                                         generator=torch.Generator().manual_seed(0))
    ).detach()
    method.zero_grad()
    fake, real = method._critic(rec), method._critic(x)
    (0.5 * ((fake**2).mean() + ((real - 1) ** 2).mean())).backward()
    for got, want in zip(critic, method.discriminator.parameters(), strict=True):
        torch.testing.assert_close(got, want.grad, rtol=1e-4, atol=1e-6)


def test_adversarial_terms_start_after_the_warm_up():
    method = _aekl(adversarial_start=1).train()
    x = {"image": torch.rand(1, 1, 16, 16, 16)}
    method.training_loss(x, torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is None for p in method.discriminator.parameters())
    method.training_loss(x, torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is not None for p in method.discriminator.parameters())


def test_latent_std_tracks_the_training_latents():
    method = _aekl(latent_std_momentum=0.5).train()
    x = {"image": torch.rand(1, 1, 16, 16, 16)}
    method.training_loss(x, torch.Generator().manual_seed(0))
    first = float(method.latent_std)
    assert first != 1.0 and int(method.steps_seen) == 1  # the first step sets it outright
    method.eval().training_loss(x, torch.Generator().manual_seed(0))  # validation: no update
    assert float(method.latent_std) == first


def test_aekl_overfits_one_volume():
    method = _aekl(adversarial_start=10_000)
    x = torch.zeros(1, 1, 16, 16, 16)
    x[:, :, 4:12, 4:12, 4:12] = 0.8
    first, last = overfit_losses(method.train(), {"image": x}, steps=40, lr=3e-3)
    assert last < 0.5 * first


def _medicalnet_file(tmp_path):
    """A MedicalNet-format checkpoint (``state_dict`` with ``module.`` prefixes and a
    segmentation head) of a randomly initialised ResNet-10."""
    from adsys.nn.perceptual import MedicalNetResNet10

    torch.manual_seed(0)
    net = MedicalNetResNet10()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, tmp_path / "resnet_10.pth")
    return tmp_path / "resnet_10.pth", net.eval()


def test_perceptual_distance_equals_monais_medicalnet_similarity(tmp_path):
    from monai.losses.perceptual import MedicalNetPerceptualSimilarity

    from adsys.nn.perceptual import load_medicalnet, perceptual_distance

    path, net = _medicalnet_file(tmp_path)
    loaded = load_medicalnet(path)
    assert not any(p.requires_grad for p in loaded.parameters())
    oracle = MedicalNetPerceptualSimilarity.__new__(MedicalNetPerceptualSimilarity)
    torch.nn.Module.__init__(oracle)  # MONAI's forward, with our network instead of torch.hub
    oracle.model, oracle.channel_wise = net, False
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 1, 16, 16, 16, generator=g), torch.rand(1, 1, 16, 16, 16, generator=g)
    got = perceptual_distance(loaded, x, y)
    torch.testing.assert_close(got, oracle(x, y).mean(), rtol=1e-5, atol=1e-6)
    assert float(perceptual_distance(loaded, x, x)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(Exception, match="no such perceptual-network weights"):
        load_medicalnet(tmp_path / "missing.pth")


def test_perceptual_term_is_added_after_load_pretrained_and_not_exported(tmp_path):
    path, _ = _medicalnet_file(tmp_path)
    method = _aekl(adversarial_start=10, perceptual={"weights": str(path), "weight": 1.0})
    batch = {"image": torch.rand(1, 1, 16, 16, 16)}
    with pytest.raises(RuntimeError, match="load_pretrained"):
        method.training_loss(batch, torch.Generator().manual_seed(0))
    method.load_pretrained()
    with_term = method.eval().training_loss(batch, torch.Generator().manual_seed(0))
    plain = _aekl(adversarial_start=10).eval().training_loss(batch,
                                                            torch.Generator().manual_seed(0))
    assert float(with_term.detach()) > float(plain.detach())
    assert not any(k.startswith("_perceptual") for k in method.state_dict())
