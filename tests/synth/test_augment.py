"""Online corruptions: cDDPM's intensity augmentation as a seeded, replayable corruption."""

from __future__ import annotations

import json

import pytest
import torch

from adsys.synth.corruption import CORRUPTIONS, make_corruption


def _batch(n=6, size=24, dims=2):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, *(size,) * dims, generator=g)
    return x, (x > 0.2).float()


@pytest.mark.parametrize("dims", [2, 3])
def test_intensity_augmentation_is_seeded_and_replays_from_its_records(dims):
    aug = make_corruption("intensity_augmentation")
    x, m = _batch(dims=dims, size=24 if dims == 2 else 12)
    a = aug(x, m, torch.Generator().manual_seed(5))
    b = aug(x, m, torch.Generator().manual_seed(5))
    assert torch.equal(a.corrupted, b.corrupted) and a.params == b.params
    assert a.corrupted.shape == x.shape and a.corrupted.dtype == x.dtype
    assert 0 <= a.corrupted.min() and a.corrupted.max() <= 1
    changed = (a.corrupted != x).flatten(1).any(1)
    assert changed.any()  # with p(any) ≈ 0.78 per item, 6 items are not all left alone
    records = json.loads(json.dumps(a.params))  # JSON-ready
    replayed = aug.replay(x, m, records)
    assert torch.equal(replayed.corrupted, a.corrupted)
    assert not a.anomaly_mask.any()  # appearance changes, no anomaly
    for item, rec in zip(changed, records, strict=True):  # an item left alone records nothing
        assert bool(item) == bool(rec["transforms"])


def test_probabilities_zero_give_the_input_back_and_bad_options_are_named():
    none = make_corruption("intensity_augmentation",
                           {"gamma": 0, "bias_field": 0, "blur": 0, "ghosting": 0})
    x, m = _batch()
    assert torch.equal(none(x, m, torch.Generator().manual_seed(1)).corrupted, x)
    with pytest.raises(ValueError, match="corruption 'intensity_augmentation': options.gama: unk"):
        make_corruption("intensity_augmentation", {"gama": 0.5})
    with pytest.raises(ValueError, match="unknown corruption 'nope'; known: .*intensity_aug"):
        make_corruption("nope")
    assert "intensity_augmentation" in CORRUPTIONS.names()
