"""Atomic file writes: a file appears under its name complete or not at all.

Each writer writes a temporary file ``.tmp-<pid>-<name>`` beside the target and renames it
onto the target (``os.replace``) once it is written; a write that fails leaves the target
as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block
    ends without an exception (an exception leaves ``path`` untouched)."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    yield tmp
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) so that the file is complete or absent (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that the file is complete or absent (temp file + rename)."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))
