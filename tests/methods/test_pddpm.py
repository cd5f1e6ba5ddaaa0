"""pddpm: the box grid, the box-noised training input and loss, stitched restoration."""

import itertools

import pytest
import torch

from adsys.methods import build_method, method_config
from adsys.methods.ddpm import to_model_range
from adsys.methods.pddpm import PatchConfig
from adsys.train.config import resolve_config


def _pddpm(**config):
    """The smoke pddpm with P = 16, weights perturbed off the zero-initialised output conv."""
    torch.manual_seed(0)
    base = resolve_config("smoke", None, {"method": "pddpm"}).method_config
    method = build_method("pddpm", {**base, "patch": {"size": 16}, **config})
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return method


def _slices(n=3, h=32, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, h + 6, w + 6, generator=g), 7, 1, 0)
    return (x - x.amin()) / (x.amax() - x.amin())


def _coverage(patch: PatchConfig, spatial):
    plan = patch.plan(spatial)
    count = torch.zeros(spatial)
    for origin in itertools.product(*plan.grid.starts):
        count[tuple(slice(o, o + patch.size) for o in origin)] += 1
    return count


def test_reference_defaults():
    cfg = method_config("pddpm")
    assert (cfg.patch.size, cfg.patch.overlap, cfg.patch.sampling) == (48, False, "grid")
    assert cfg.loss == "box" and cfg.inference.t_values == (499,)  # the code's t_test 500
    assert (cfg.schedule, cfg.timesteps, cfg.prediction) == ("cosine", 1000, "x0")
    assert cfg.noise.kind == "simplex" and cfg.data.corruption is None  # no augmentation
    paper = resolve_config("paper", None, {"method": "pddpm"})
    assert (paper.max_steps, paper.precision, paper.lr, paper.batch_size) == (19_200, "fp32",
                                                                              1e-4, 32)
    with pytest.raises(ValueError, match="patch.size"):
        method_config("pddpm", {"patch": {"size": 0}})
    with pytest.raises(ValueError, match="patch_sizes"):
        method_config("pddpm", {"inference": {"patch_sizes": [16, -1]}})


def test_boxes_tile_the_slice_when_p_divides_it_and_the_overlap_grid_covers_it():
    tiles = PatchConfig(size=48)
    assert tiles.plan((96, 96)).grid.starts == ((0, 48), (0, 48))  # the paper's 4 boxes
    assert torch.equal(_coverage(tiles, (96, 96)), torch.ones(96, 96))  # exactly once
    spread = PatchConfig(size=48, overlap=True)
    assert spread.plan((96, 96)).grid.starts == ((0, 48), (0, 48))  # no overlap when P | W
    assert spread.plan((100, 112)).grid.starts == ((0, 26, 52), (0, 32, 64))
    assert _coverage(spread, (100, 112)).min() >= 1
    # without overlap, the last box is shifted back inside the slice, never past it
    assert tiles.plan((100, 112)).grid.starts == ((0, 48, 52), (0, 48, 64))
    assert _coverage(tiles, (100, 112)).min() >= 1


@pytest.mark.parametrize("sampling", ["grid", "random"])
def test_training_input_is_x0_outside_one_box_and_x_t_inside(sampling):
    method = _pddpm(patch={"size": 16, "sampling": sampling})
    x = _slices()
    seen = []
    hook = method.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    method.training_loss({"image": x}, torch.Generator().manual_seed(5))
    hook.remove()
    x0 = to_model_range(x)
    changed = seen[0] != x0
    grid = set(itertools.product(*PatchConfig(size=16).plan((32, 40)).grid.starts))
    for i in range(len(x)):
        rows, cols = changed[i, 0].nonzero(as_tuple=True)
        origin = (int(rows.min()), int(cols.min()))
        box = torch.zeros(32, 40, dtype=torch.bool)
        box[origin[0]:origin[0] + 16, origin[1]:origin[1] + 16] = True
        assert torch.equal(changed[i, 0], box)  # noise fills exactly one P×P box
        assert torch.equal(seen[0][i, 0][~box], x0[i, 0][~box])  # x0 bit for bit outside
        if sampling == "grid":
            assert origin in grid


@pytest.mark.parametrize("loss", ["box", "image"])
def test_the_loss_ignores_errors_outside_the_box(loss):
    method = _pddpm(loss=loss)
    x = _slices()
    inside = []

    def box_of_input(module, args):
        inside.append(args[0] != to_model_range(x))

    def perturb_outside(module, args, out):
        return out + 100.0 * (~inside[-1])

    pre = method.unet.register_forward_pre_hook(box_of_input)
    clean = method.training_loss({"image": x}, torch.Generator().manual_seed(2))
    post = method.unet.register_forward_hook(perturb_outside)
    perturbed = method.training_loss({"image": x}, torch.Generator().manual_seed(2))
    pre.remove()
    post.remove()
    assert torch.equal(clean, perturbed)


def test_image_loss_is_the_box_loss_times_the_box_area_fraction():
    x = _slices()
    box = _pddpm(loss="box").training_loss({"image": x}, torch.Generator().manual_seed(3))
    image = _pddpm(loss="image").training_loss({"image": x}, torch.Generator().manual_seed(3))
    torch.testing.assert_close(image, box * (16 * 16) / (32 * 40))


def test_restoration_noises_one_box_of_each_slice_and_batches_them_all():
    """Every forward pass sees x0 outside its box; all boxes of all slices go as one batch
    per t (never box by box); the output stitches the boxes' predictions."""
    method = _pddpm(inference={"t_values": [249, 499]}).eval()
    x = _slices(n=4)
    batches = []

    def check(module, args):
        x_in = args[0]
        batches.append(len(x_in))
        changed = x_in != to_model_range(x).repeat_interleave(6, dim=0)
        assert torch.equal(changed.flatten(1).sum(1), torch.full((24,), 16 * 16))

    hook = method.unet.register_forward_pre_hook(check)
    rec = method.restore(x, torch.Generator().manual_seed(0))
    hook.remove()
    assert batches == [4 * 6, 4 * 6]  # 2 t values × (4 slices × 2×3 boxes) in one pass each
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    capped = _pddpm(inference={"t_values": [249, 499], "box_batch_size": 5}).eval()
    batches.clear()
    hook = capped.unet.register_forward_pre_hook(lambda m, a: batches.append(len(a[0])))
    again = capped.restore(x, torch.Generator().manual_seed(0))
    hook.remove()
    assert max(batches) <= 5 and sum(batches) == 2 * 24  # capped passes, every box once
    torch.testing.assert_close(again, rec, atol=1e-5, rtol=0)  # the same noise, result


def test_only_each_pass_box_reaches_the_reconstruction():
    """What a pass predicts outside its noised box never reaches the stitched output: the
    reconstruction outside each box is the other boxes' business (and the input there)."""
    method = _pddpm().eval()
    x = _slices(n=2)
    clean = method.restore(x, torch.Generator().manual_seed(4))
    boxes = []
    pre = method.unet.register_forward_pre_hook(
        lambda m, args: boxes.append(args[0] != to_model_range(x).repeat_interleave(6, 0)))
    post = method.unet.register_forward_hook(lambda m, args, out: out + 100.0 * ~boxes[-1])
    perturbed = method.restore(x, torch.Generator().manual_seed(4))
    pre.remove()
    post.remove()
    assert torch.equal(perturbed, clean)


def test_an_identity_model_stitches_back_the_input():
    """A network that returns its input, noised to t = 0 (x_t = x0 up to √ᾱ_0 ≈ 1) inside
    each box, reproduces the slice: stitching loses nothing, tiled or overlapping."""
    x = _slices(n=2, h=40, w=44)
    for overlap in (False, True):
        method = _pddpm(patch={"size": 16, "overlap": overlap}, inference={"t_values": [0]})
        method.unet.forward = lambda x_t, t, cond=None: x_t
        rec = method.restore(x, torch.Generator().manual_seed(0))
        torch.testing.assert_close(rec, x, atol=0.05, rtol=0)


def test_patch_size_ensemble_is_the_mean_of_single_size_restorations():
    method = _pddpm(inference={"patch_sizes": [16, 24]}).eval()
    x = _slices(n=2)
    both = method.restore(x, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # the same draws, in the same order
    singles = []
    for size in (16, 24):
        method.config.inference.patch_sizes = (size,)
        singles.append(method.restore(x, g))
    torch.testing.assert_close(both, (singles[0] + singles[1]) / 2, atol=1e-6, rtol=0)
    assert not torch.allclose(singles[0], singles[1])


def test_a_box_larger_than_the_training_slice_is_refused_with_the_fix():
    method = _pddpm(patch={"size": 48})
    with pytest.raises(ValueError, match="patch.size 48 does not fit the 32×40"):
        method.training_loss({"image": _slices()}, torch.Generator().manual_seed(0))
