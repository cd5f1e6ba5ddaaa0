import numpy as np
import pytest

from adsys.demo import write_demo_cohort
from adsys.io import load_label, load_manifest, load_volume


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    kw = dict(n_train=1, n_val=0, n_test=2, progress=False)
    return {
        "a": write_demo_cohort(root / "a", seed=7, **kw),
        "b": write_demo_cohort(root / "b", seed=7, **kw),
        "c": write_demo_cohort(root / "c", seed=8, **kw),
    }


def _arrays(manifest_path):
    m = load_manifest(manifest_path)
    out = []
    for s in m.subjects:
        vol = load_volume(s.image)
        out.append((vol.data, vol.affine))
    return m, out


def test_same_seed_gives_identical_cohort_other_seed_differs(cohorts):
    ma, a = _arrays(cohorts["a"])
    _, b = _arrays(cohorts["b"])
    _, c = _arrays(cohorts["c"])
    for (da, aa), (db, ab) in zip(a, b, strict=True):
        np.testing.assert_array_equal(da, db)
        np.testing.assert_array_equal(aa, ab)
    for (da, _), (dc, _) in zip(a, c, strict=True):
        assert not np.array_equal(da, dc)
    files = sorted(p.relative_to(cohorts["a"].parent) for p in cohorts["a"].parent.rglob("*.gz"))
    for rel in files:  # byte-identical files, not just equal arrays
        assert (cohorts["a"].parent / rel).read_bytes() == (cohorts["b"].parent / rel).read_bytes()


def test_subjects_are_distinct_real_anatomy_with_lesions_only_in_test(cohorts):
    m, arrays = _arrays(cohorts["a"])
    assert [s.split for s in m.subjects] == ["train", "test", "test"]
    assert not np.array_equal(arrays[1][0], arrays[2][0][::-1, ::-1])  # distinct subjects
    assert m.subjects[0].seg is None
    for s in m.subjects:
        vol = load_volume(s.image)
        brain = load_label(s.mask, vol) > 0
        assert 0.15 < brain.mean() < 0.3  # a brain-sized mask on the 2 mm MNI grid
        assert np.all(vol.data[~brain] == 0)  # skull-stripped convention
        assert vol.data[brain].mean() > 100  # scanner-like units, not [0, 1]
        if s.split == "test":
            seg = load_label(s.seg, vol, role="seg") > 0
            assert 0 < seg.sum() and np.all(brain[seg])
            assert int(s.meta["n_lesions"]) >= 1
            assert s.meta["contrast"] in ("hyper", "hypo", "mixed")
        else:
            assert s.meta["contrast"] == "none"
    assert m.subjects[2].meta["orientation"] == "LPS"  # every third subject is stored LPS
