import numpy as np
import pytest

from adsys.errors import ManifestError
from adsys.io import SubjectEntry, load_manifest, save_volume, write_manifest
from tests.helpers import brain_volume


@pytest.fixture
def files(tmp_path):
    image, mask = brain_volume()
    out = {}
    for i in range(3):
        out[f"img{i}"] = save_volume(tmp_path / f"img{i}.nii.gz", image, np.eye(4))
        out[f"m{i}"] = save_volume(tmp_path / f"m{i}.nii.gz", mask, np.eye(4), np.uint8)
    return out


def test_valid_manifest_resolves_relative_paths_and_keeps_metadata(tmp_path, files):
    (tmp_path / "cohort.csv").write_text(
        "subject_id,image,mask,split,age\n"
        "s1,img0.nii.gz,m0.nii.gz,train,41\n"
        "s2,img1.nii.gz,,val,\n"
        f"s3,{files['img2']},m2.nii.gz,test,70\n"
    )
    m = load_manifest(tmp_path / "cohort.csv")
    assert [s.subject_id for s in m.subjects] == ["s1", "s2", "s3"]
    assert m.subjects[0].image == tmp_path / "img0.nii.gz"
    assert m.subjects[1].mask is None
    assert m.subjects[0].meta == {"age": "41"}
    assert [s.subject_id for s in m.split("test")] == ["s3"]


def test_broken_manifest_lists_every_problem_at_once(tmp_path, files):
    (tmp_path / "bad.csv").write_text(
        "subject_id,image,mask,seg,split\n"
        "s1,img0.nii.gz,missing_mask.nii.gz,,train\n"  # missing mask file
        "s1,img1.nii.gz,,,val\n"  # duplicate id
        "s3,nope.nii.gz,,,test\n"  # missing image
        "s4,img2.nii.gz,,,training\n"  # bad split
        ",img2.nii.gz,,,train\n"  # empty id
        "../evil,img2.nii.gz,,,train\n"  # unsafe id (names output files)
        "s7,,,,train\n"  # empty image
        "s8,img2.nii.gz,,gone_seg.nii.gz,test\n"  # missing seg
    )
    with pytest.raises(ManifestError) as err:
        load_manifest(tmp_path / "bad.csv")
    problems = err.value.problems
    assert len(problems) == 8, problems
    text = str(err.value)
    for expected in [
        "line 2 (subject 's1'): mask file not found",
        "line 3 (subject 's1'): duplicate subject_id, first seen on line 2",
        "line 4 (subject 's3'): image file not found",
        "split 'training' is not one of",
        "line 6: empty subject_id",
        "line 7 (subject '../evil'): subject_id may use only",
        "line 8 (subject 's7'): empty image path",
        "line 9 (subject 's8'): seg file not found",
    ]:
        assert expected in text
    assert "bad.csv" in text


def test_missing_columns_and_empty_manifest(tmp_path):
    (tmp_path / "cols.csv").write_text("id,path\na,b\n")
    with pytest.raises(ManifestError, match=r"missing required column\(s\) \['subject_id'"):
        load_manifest(tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text("subject_id,image,split\n")
    with pytest.raises(ManifestError, match="no subject rows"):
        load_manifest(tmp_path / "empty.csv")
    with pytest.raises(ManifestError, match="not found"):
        load_manifest(tmp_path / "absent.csv")


def test_write_then_load_round_trip(tmp_path, files):
    entries = [
        SubjectEntry("a", files["img0"], "train", mask=files["m0"], meta={"site": "x"}),
        SubjectEntry("b", files["img1"], "test", seg=files["m1"], meta={"site": "y"}),
    ]
    path = write_manifest(tmp_path / "sub" / "manifest.csv", entries)
    assert "../img0.nii.gz" in path.read_text()  # relative to the manifest's folder
    loaded = load_manifest(path)
    assert [(s.subject_id, s.split, s.meta) for s in loaded.subjects] == [
        ("a", "train", {"site": "x"}),
        ("b", "test", {"site": "y"}),
    ]
    assert loaded.subjects[1].seg.resolve() == files["m1"].resolve()
