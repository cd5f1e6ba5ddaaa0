"""adsys errors survive pickling (how Ray sends a worker's exception to the driver)."""

import pickle

from adsys.errors import InputError, ManifestError


def test_errors_unpickle_with_their_message_and_attributes():
    err = InputError("/data/x.nii.gz", "not a volume", "pass a NIfTI file")
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is InputError and str(again) == str(err)
    assert (again.path, again.problem, again.fix) == (err.path, err.problem, err.fix)
    listed = ManifestError("/data/m.csv", ["row 2: missing image", "row 5: bad split"])
    back = pickle.loads(pickle.dumps(listed))
    assert str(back) == str(listed) and back.problems == listed.problems
