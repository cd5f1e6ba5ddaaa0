"""The 10 folds of three training and two validation tasks."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from adsys.synth.tasks.folds import FOLDS, fold_tasks


def test_ten_folds_of_three_training_and_two_validation_tasks():
    assert len(FOLDS) == 10
    held_out = Counter()
    for fold in range(10):
        train, val = fold_tasks(fold)
        assert tuple(train) == list(itertools.combinations(range(5), 3))[fold]
        assert len(train) == 3 and len(val) == 2
        assert sorted(train + val) == [0, 1, 2, 3, 4]
        held_out.update(val)
    assert held_out == {t: 4 for t in range(5)}
    assert fold_tasks(0) == ([0, 1, 2], [3, 4]) and fold_tasks(9) == ([2, 3, 4], [0, 1])


@pytest.mark.parametrize("bad", [-1, 10, 2.0, True])
def test_fold_numbers_are_checked(bad):
    with pytest.raises(ValueError, match=r"fold must be an integer in 0\.\.9"):
        fold_tasks(bad)
