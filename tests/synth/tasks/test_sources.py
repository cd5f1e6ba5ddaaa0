"""Foreign blending sources: scikit-image's packaged images without network, a user folder of
images and volumes, and clear errors."""

from __future__ import annotations

import pickle
import socket

import nibabel as nib
import numpy as np
import pytest
from skimage import io

from adsys.errors import InputError
from adsys.synth.corruption import make_corruption
from adsys.synth.tasks.sources import PACKAGED, ForeignSources


def test_packaged_images_load_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a foreign source touched the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    sources = ForeignSources()
    assert sources.names == list(PACKAGED)  # all shipped with scikit-image
    for name in ("camera.png", "astronaut.png", "retina.jpg"):
        image = sources.load(name, (48, 40))
        assert image.shape == (48, 40) and image.min() == 0 and image.max() == 1
    volume = sources.load("brick.png", (6, 24, 20))  # 2D → 3D: extruded along axis 0
    assert volume.shape == (6, 24, 20)
    assert all(np.array_equal(volume[0], plane) for plane in volume)


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    io.imsave(tmp_path / "b_grey.png", (rng.random((50, 60)) * 255).astype(np.uint8))
    io.imsave(tmp_path / "a_rgba.png", (rng.random((30, 30, 4)) * 255).astype(np.uint8))
    volume = np.zeros((20, 22, 9), dtype=np.float32)
    volume[..., 4] = rng.random((20, 22))  # only the middle slice is non-zero
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "c_vol.nii.gz")
    (tmp_path / "notes.txt").write_text("not a source")
    return tmp_path


def test_a_user_folder_of_images_and_volumes(tmp_path):
    sources = ForeignSources(str(_folder(tmp_path)))
    assert sources.names == ["a_rgba.png", "b_grey.png", "c_vol.nii.gz"]
    for name in sources.names:
        image = sources.load(name, (32, 28))
        assert image.shape == (32, 28) and image.min() == 0 and image.max() == 1
    volume = sources.load("c_vol.nii.gz", (10, 11, 9))
    assert volume.shape == (10, 11, 9) and volume.max() == 1


def test_pickling_drops_the_cache(tmp_path):
    sources = ForeignSources(str(_folder(tmp_path)))
    sources.load("b_grey.png", (16, 16))
    clone = pickle.loads(pickle.dumps(sources))
    assert clone._cache == {} and clone.names == sources.names
    assert np.array_equal(clone.load("b_grey.png", (16, 16)), sources.load("b_grey.png", (16, 16)))


def test_missing_empty_or_broken_folders_are_named(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        make_corruption("icdm_tasks", {"foreign_source": str(tmp_path / "nowhere")})
    with pytest.raises(InputError, match="no foreign blending source"):
        make_corruption("icdm_tasks", {"foreign_source": str(tmp_path)})
    make_corruption("icdm_tasks", {"tasks": [0, 2], "foreign_source": str(tmp_path)})  # unused
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="broken.png: cannot read this foreign source"):
        ForeignSources(str(tmp_path)).load("broken.png", (8, 8))
