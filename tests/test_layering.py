"""The house rules of the method contract, checked on the source tree.

``train/``, ``infer/``, ``shards/`` and ``ray_jobs/`` read methods' declarations and never
name a method; ``infer`` never imports ``train``; importing the method registry imports no
method (nor torch).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from adsys.methods import method_names

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("adsys/train", "adsys/infer", "adsys/shards", "ray_jobs")


def _sources(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]


# methods named by an everyday word of the stages (a Dice threshold, a deviation): a word
# grep cannot tell them from the word, so they are caught where code uses them as a name —
# compared with, or assigned as a method
VOCABULARY = {"threshold", "deviation"}


def _naming() -> re.Pattern:
    words = [re.escape(n) for n in method_names() if n not in VOCABULARY]
    quoted = "|".join(re.escape(n) for n in sorted(VOCABULARY))
    return re.compile(
        r"\b(" + "|".join(words) + r")\b"
        + rf"|[=!]=\s*[\"']({quoted})[\"']|[\"']({quoted})[\"']\s*[=!]="
        + rf"|method\w*\s*[:=]\s*[\"']({quoted})[\"']",
        re.IGNORECASE,
    )


def test_stages_never_name_a_method():
    word = _naming()
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in _sources(*STAGES)
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if word.search(line)
    ]
    assert not found, "stages name methods:\n" + "\n".join(found)


def test_the_grep_would_catch_a_method_name():
    word = _naming()
    assert word.search('if config.method == "cddpm":') and not word.search("ddpm_sample")
    assert word.search('if name == "threshold":') and word.search("method='deviation'")
    assert not word.search('row["threshold"] = threshold') and not word.search("a deviation")


def test_inference_does_not_import_training():
    imports = re.compile(r"^\s*(from|import)\s+adsys\.train\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in _sources("adsys/infer")
                 if imports.search(p.read_text(encoding="utf-8"))]
    assert not offenders


def test_the_registry_imports_no_method_until_one_is_used():
    code = (
        "import sys, adsys.methods as m\n"
        "names = m.method_names()\n"
        "loaded = sorted(k for k in sys.modules if k.startswith('adsys.methods.'))\n"
        "print(names, loaded, 'torch' in sys.modules)\n"
        "m.method_class('ddpm')\n"
        "print('adsys.methods.ddpm' in sys.modules, 'adsys.methods.cddpm' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert first == f"{method_names()} [] False"
    assert second == "True False"
