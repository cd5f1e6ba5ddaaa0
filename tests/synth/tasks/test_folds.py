"""The 10 folds of three training and two validation tasks."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from adsys.synth.tasks.folds import FOLDS, fold_tasks, parse_folds


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


def test_parse_folds():
    assert parse_folds("all") == list(range(10))
    assert parse_folds(" ALL ") == list(range(10))
    assert parse_folds("0,3,7") == [0, 3, 7]
    assert parse_folds("9, 1") == [9, 1]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "'' is not a fold"),
        ("0,,2", "'' is not a fold"),
        ("10", "'10' is not a fold"),
        ("-1", "'-1' is not a fold"),
        ("one", "'one' is not a fold"),
        ("1,1", "listed twice"),
    ],
)
def test_parse_folds_names_the_bad_entry(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_folds(spec)
