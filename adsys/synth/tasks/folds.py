"""The ICDM cross-validation folds over the five tasks (Baugh et al. 2024, following MTML 2023;
the code's ``get_task_split``): fold k trains on ``itertools.combinations(range(5), 3)[k]`` and
validates on the other two tasks, so there are 10 folds (one model each; the paper's ensemble
averages them), and every task is held out in 4 of them. ``--folds`` parsing is generic
(:func:`adsys.train.folds.parse_folds`).

Tasks: 0 intra-dataset Poisson blend, 1 foreign Poisson blend, 2 sink deformation, 3 source
deformation, 4 smooth intensity change.
"""

from __future__ import annotations

import itertools

__all__ = ["FOLDS", "NUM_FOLDS", "NUM_TASKS", "fold_tasks"]

NUM_TASKS = 5
FOLDS = tuple(itertools.combinations(range(NUM_TASKS), 3))
"""The training tasks of each fold, in fold order (10 folds)."""
NUM_FOLDS = len(FOLDS)


def fold_tasks(fold: int) -> tuple[list[int], list[int]]:
    """(training tasks, validation tasks) of ``fold`` in 0..9 (``ValueError`` otherwise)."""
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < len(FOLDS):
        raise ValueError(f"fold must be an integer in 0..{len(FOLDS) - 1}, got {fold!r}")
    train = list(FOLDS[fold])
    return train, [t for t in range(NUM_TASKS) if t not in train]
