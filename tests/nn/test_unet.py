import pytest
import torch

from adsys.nn import ResNetEncoder, ResNetEncoderConfig, UNet, UNetConfig
from adsys.nn.layers import timestep_embedding

SMALL = dict(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, num_head_channels=16)


@pytest.mark.parametrize(("dims", "shape"), [(2, (3, 1, 16, 24)), (3, (2, 1, 8, 16, 8))])
def test_forward_shapes_2d_and_3d(dims, shape):
    torch.manual_seed(0)
    net = UNet(
        UNetConfig(dims=dims, in_channels=1, out_channels=2, attention_resolutions=(2,), **SMALL)
    )
    out = net(torch.randn(shape), torch.randint(0, 1000, (shape[0],)))
    assert out.shape == (shape[0], 2, *shape[2:])


def test_zero_initialised_output_conv_gives_zeros_at_init():
    net = UNet(UNetConfig(**SMALL))
    out = net(torch.randn(2, 1, 16, 16), torch.tensor([10, 900]))
    assert torch.count_nonzero(out) == 0


def _trained_like(net: torch.nn.Module) -> torch.nn.Module:
    """Perturb every weight so zero-initialised branches are active (as after training)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def test_film_conditioning_vector_changes_the_output():
    net = _trained_like(UNet(UNetConfig(cond_dim=8, **SMALL))).eval()
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([100, 100])
    c = torch.randn(2, 8)
    a, b = net(x, t, c), net(x, t, c + 1.0)
    assert not torch.allclose(a, b, atol=1e-4)
    torch.testing.assert_close(net(x, t, c), a)  # deterministic
    # the time step changes it too
    assert not torch.allclose(a, net(x, torch.tensor([700, 700]), c), atol=1e-4)
    with pytest.raises(ValueError, match="conditioning vector"):
        net(x, t)


@pytest.mark.parametrize(("dims", "spatial"), [(2, (5, 6)), (3, (4, 5, 3))])
def test_film_resblock_forward_is_scale_shift_of_group_norm(dims, spatial):
    """``ResBlock.forward`` = skip(x) + out(GN(h)·(1+s) + b), (s, b) the halves of the
    embedding projection, recomputed here from the block's own layers."""
    from adsys.nn.unet import ResBlock

    blk = _trained_like(ResBlock(8, 4, 6, dims=dims)).eval()  # out conv no longer zero
    x, emb = torch.randn(2, 8, *spatial), torch.randn(2, 4)
    linear = blk.emb[1]
    projected = torch.nn.functional.linear(torch.nn.functional.silu(emb), linear.weight,
                                           linear.bias)
    s, b = (v.reshape(2, 6, *[1] * dims) for v in (projected[:, :6], projected[:, 6:]))
    h = blk.in_conv(torch.nn.functional.silu(blk.in_norm(x)))
    expected = blk.skip(x) + blk.out(blk.out_norm(h) * (1 + s) + b)
    torch.testing.assert_close(blk(x, emb), expected)
    # and the conditioning reaches the output (the block is not its skip path alone)
    assert not torch.allclose(blk(x, emb), blk(x, emb + 1.0), atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = _trained_like(UNet(UNetConfig(**SMALL)))
    b = UNet(UNetConfig(gradient_checkpointing=True, **SMALL))
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 50])
    for net in (a, b):
        net(x, t).square().mean().backward()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 3]), 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(1e4)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_encoder_shapes(depth):
    enc = ResNetEncoder(ResNetEncoderConfig(depth=depth, out_dim=128, width=16))
    assert enc(torch.randn(2, 1, 64, 48)).shape == (2, 128)
    enc3 = ResNetEncoder(ResNetEncoderConfig(depth=depth, out_dim=16, width=8, dims=3))
    assert enc3(torch.randn(2, 1, 32, 32, 32)).shape == (2, 16)


def test_resnet50_default_matches_timm_shape():
    enc = ResNetEncoder(ResNetEncoderConfig())
    n = sum(p.numel() for p in enc.parameters())
    # timm resnet50(in_chans=1, num_classes=512): 23.5M body + 2048×512 head
    assert 24.4e6 < n < 24.7e6


def _film_net(**kw) -> UNet:
    torch.manual_seed(0)
    return _trained_like(UNet(UNetConfig(dims=3, cond_mode="film", **SMALL, **kw))).eval()


def test_second_film_is_applied_after_the_time_film():
    """ResBlock with a FiLM vector: GN(h)·(1 + s_t) + b_t, then ·(1 + s_c) + b_c."""
    from adsys.nn.unet import ResBlock

    torch.manual_seed(0)
    block = _trained_like(ResBlock(8, 16, 8, dims=3, cond_dim=6))
    seen = {}
    block.out.register_forward_hook(lambda m, i, o: seen.setdefault("h", i[0]))
    x, emb, cond = torch.randn(2, 8, 4, 4, 4), torch.randn(2, 16), torch.randn(2, 6)
    block(x, emb, cond)
    h = block.in_conv(torch.nn.functional.silu(block.in_norm(x)))
    st, bt = block.emb(emb).chunk(2, dim=1)
    sc, bc = block.cond(cond).chunk(2, dim=1)
    v = (slice(None), slice(None), None, None, None)
    want = (block.out_norm(h) * (1 + st[v]) + bt[v]) * (1 + sc[v]) + bc[v]
    torch.testing.assert_close(seen["h"], want)


def test_film_mode_conditioning_changes_the_output_and_zero_init_is_unconditioned():
    net = _film_net(cond_dim=10)
    x, t, c = torch.randn(1, 1, 8, 8, 8), torch.tensor([300]), torch.randn(1, 10)
    assert not torch.allclose(net(x, t, c), net(x, t, c + 1.0), atol=1e-4)
    plain = UNet(UNetConfig(dims=3, **SMALL)).eval()
    # the same weights without the conditioning layers: zeroing them gives the plain UNet
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if ".cond." not in k})
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".cond." in name:
                p.zero_()
    torch.testing.assert_close(net(x, t, c), plain(x, t))
    assert net.cond_embed is None  # film mode: no concatenated embedding


def test_gradient_checkpointing_carries_the_film_vector():
    a = _film_net(cond_dim=4).train()
    b = _film_net(cond_dim=4, gradient_checkpointing=True).train()
    x, t, c = torch.randn(1, 1, 8, 8, 8), torch.tensor([3]), torch.randn(1, 4)
    a(x, t, c).sum().backward()
    b(x, t, c).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)


def test_semantic_encoder_gives_the_paper_vector_at_160_cubed_latents():
    from adsys.nn.encoders import SemanticEncoder, SemanticEncoderConfig

    cfg = SemanticEncoderConfig()
    assert cfg.out_dim == 1280  # 64 channels x 20 (the latent's first axis, unpooled)
    small = SemanticEncoderConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                                  out_channels=4, pool_depth=5)
    enc = SemanticEncoder(small)
    out = enc(torch.randn(2, 3, 5, 12, 12))
    assert out.shape == (2, 20)
    # downsampling only in the last two axes: the first axis is kept to pool_depth exactly
    pools = [m for m in enc.modules() if isinstance(m, torch.nn.AvgPool3d)]
    assert [p.kernel_size for p in pools] == [(1, 2, 2)]
