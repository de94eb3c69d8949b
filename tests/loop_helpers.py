"""Second models without training, for the compare / promote tests: a copy of an artifact with
another threshold (and version), resealed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.artifacts import reseal


def with_threshold(src: Path, dest: Path, threshold: float, tag: str) -> Path:
    """``src`` copied to ``dest`` with ``threshold`` (severity steps kept at or above it) and
    version ``<src version>-<tag>``."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("report", "evaluation", "shadow"))
    meta = json.loads((dest / "meta.json").read_text())
    meta["threshold"] = threshold
    meta["severity"] = [threshold, *(max(threshold, s) for s in meta["severity"][1:])]
    meta["version"] = f"{meta['version']}-{tag}"
    (dest / "meta.json").write_text(json.dumps(meta))
    return reseal(dest)
