"""ddpm, cddpm (pddpm: test_pddpm.py): the reference behaviour of each (the contract tests
cover the rest)."""

import pytest
import torch

from adsys.methods import build_method, method_config
from adsys.methods.cddpm import CDDPMConfig
from adsys.train.config import resolve_config
from tests.helpers import overfit_losses


def _tiny(name: str) -> dict:
    return resolve_config("smoke", None, {"method": name}).method_config


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth blobs in [0, 1], like brain slices
    x = torch.nn.functional.avg_pool2d(torch.rand(4, 1, 40, 40, generator=g), 9, 1, 0)
    return (x - x.amin()) / (x.amax() - x.amin())


@pytest.mark.parametrize("name", ["ddpm", "cddpm", "pddpm"])
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    method = build_method(name, _tiny(name))
    first, last = overfit_losses(method, {"image": _batch()}, 120)
    assert last < 0.5 * first, (first, last)


def test_reference_defaults():
    ddpm = method_config("ddpm")
    assert (ddpm.schedule, ddpm.timesteps, ddpm.prediction) == ("cosine", 1000, "x0")
    assert ddpm.noise.kind == "simplex" and not ddpm.noise.per_sample
    # the code's 1-based t = 500 (test_timesteps) and 250/500/750 (step_ensemble), 0-based
    assert ddpm.inference.t_values == (499,)
    assert ddpm.inference.map.kind == "l1" and ddpm.inference.protocol == "behrendt"
    assert ddpm.data.mode == "slices" and ddpm.data.corruption is None
    cfg = CDDPMConfig()
    assert cfg.inference.t_values == (249, 499, 749)
    assert cfg.encoder.depth == 50 and cfg.unet_config().cond_dim == 512
    assert cfg.data.corruption.name == "intensity_augmentation" and cfg.data.val_corruption is None
    assert CDDPMConfig(encoder={"out_dim": 128}).unet_config().cond_dim == 128  # paper's d
    with pytest.raises(ValueError, match="cond_dim"):
        CDDPMConfig(unet={"cond_dim": 64})
    with pytest.raises(ValueError, match="unet.dims"):
        method_config("ddpm", {"unet": {"dims": 3}})
    with pytest.raises(ValueError, match="t_values"):
        method_config("ddpm", {"inference": {"t_values": [1000]}})
    with pytest.raises(ValueError, match="unknown method"):
        build_method("nope")


def test_paper_presets_are_the_public_codes_settings():
    for name, precision in (("ddpm", "fp32"), ("cddpm", "fp16")):
        cfg = resolve_config("paper", None, {"method": name})
        assert (cfg.batch_size, cfg.lr, cfg.max_steps, cfg.seed) == (32, 1e-4, 14_400, 3141)
        assert cfg.precision == precision and cfg.ema_decay == 0.0
        assert cfg.val_every == 12 and cfg.export == "best_val"  # every epoch, best val kept
        assert cfg.method_spec() == method_config(name)  # the published model = the defaults


def test_a_partial_method_config_keeps_the_methods_other_defaults():
    cfg = method_config("cddpm", {"data": {"min_brain_fraction": 0.1},
                                  "inference": {"protocol": "upd"}})
    assert cfg.data.min_brain_fraction == 0.1 and cfg.data.fields == ("image", "mask")
    assert cfg.data.corruption.name == "intensity_augmentation"
    assert cfg.inference.t_values == (249, 499, 749) and cfg.inference.protocol == "upd"
    assert method_config("cddpm", {"data": {"corruption": None}}).data.corruption is None


def test_cddpm_trains_on_the_loaders_corrupted_images_not_its_own_augmentation():
    method = build_method("cddpm", _tiny("cddpm")).train()
    x, augmented = _batch(1), _batch(2)

    def loss(batch):
        return method.training_loss(batch, torch.Generator().manual_seed(9))

    plain = loss({"image": x})
    assert torch.equal(plain, loss({"image": x}))  # no augmentation drawn in forward
    # the loader's corruption output is what it trains on
    assert torch.equal(loss({"image": x, "corrupted": augmented}), loss({"image": augmented}))
