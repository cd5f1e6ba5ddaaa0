"""Cohort manifest: a CSV listing each subject's files and split.

Columns: ``subject_id``, ``image``, ``split`` (train / val / test) are required; ``mask``,
``seg`` (ground-truth lesion mask), ``wm`` (white-matter probability map, used by the fluid
generator's ``paper`` intensity mode) and ``affine`` (a text file holding a 4×4
subject→template world matrix, RAS mm) are optional; any other column is kept as free
metadata. Relative paths are resolved against the manifest's folder. :func:`load_manifest`
checks every row and raises one :class:`~adsys.errors.ManifestError` listing all problems.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from adsys.errors import ManifestError

REQUIRED = ("subject_id", "image", "split")
PATH_COLUMNS = ("image", "mask", "seg", "wm", "affine")
SPLITS = ("train", "val", "test")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SubjectEntry:
    """One row of a manifest, paths resolved to absolute."""

    subject_id: str
    image: Path
    split: str
    mask: Path | None = None
    seg: Path | None = None
    wm: Path | None = None
    affine: Path | None = None
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    path: Path
    subjects: list[SubjectEntry]

    def split(self, name: str) -> list[SubjectEntry]:
        """The subjects of one split, in manifest order."""
        return [s for s in self.subjects if s.split == name]

    def __len__(self) -> int:
        return len(self.subjects)


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a cohort manifest; raise one ManifestError listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, ["manifest file not found"])
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    problems: list[str] = []
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ManifestError(
            path, [f"missing required column(s) {missing}; found columns {columns}"]
        )
    if not rows:
        raise ManifestError(path, ["the manifest has no subject rows"])
    base = path.parent
    seen: dict[str, int] = {}
    subjects = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        sid = row["subject_id"]
        where = f"line {line} (subject {sid!r})"
        if not sid:
            problems.append(f"line {line}: empty subject_id")
        elif not _SAFE_ID.match(sid):
            problems.append(
                f"{where}: subject_id may use only letters, digits, '.', '_' and '-' "
                "(it names output files), and must start with a letter or digit"
            )
        elif sid in seen:
            problems.append(f"{where}: duplicate subject_id, first seen on line {seen[sid]}")
        else:
            seen[sid] = line
        if row["split"] not in SPLITS:
            problems.append(f"{where}: split {row['split']!r} is not one of {list(SPLITS)}")
        paths: dict[str, Path | None] = {}
        for col in PATH_COLUMNS:
            value = row.get(col, "")
            if not value:
                if col == "image":
                    problems.append(f"{where}: empty image path")
                paths[col] = None
                continue
            p = Path(value) if os.path.isabs(value) else base / value
            if not p.is_file():
                problems.append(f"{where}: {col} file not found: {p}")
            paths[col] = p
        meta = {k: v for k, v in row.items() if k not in REQUIRED and k not in PATH_COLUMNS}
        subjects.append(
            SubjectEntry(
                subject_id=sid,
                image=paths["image"] or base,
                split=row["split"],
                mask=paths["mask"],
                seg=paths["seg"],
                wm=paths["wm"],
                affine=paths["affine"],
                meta=meta,
            )
        )
    if problems:
        raise ManifestError(path, problems)
    return Manifest(path=path, subjects=subjects)


def write_manifest(path: str | Path, subjects: list[SubjectEntry]) -> Path:
    """Write ``subjects`` as a manifest CSV with paths relative to its folder when possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta_cols = sorted({k for s in subjects for k in s.meta})
    cols = ["subject_id", "image", "mask", "seg", "wm", "affine", "split", *meta_cols]

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        try:
            return Path(os.path.relpath(p, path.parent)).as_posix()
        except ValueError:  # another drive on Windows
            return str(p)

    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for s in subjects:
            w.writerow(
                [
                    s.subject_id,
                    rel(s.image),
                    rel(s.mask),
                    rel(s.seg),
                    rel(s.wm),
                    rel(s.affine),
                    s.split,
                ]
                + [s.meta.get(k, "") for k in meta_cols]
            )
    os.replace(tmp, path)
    return path
