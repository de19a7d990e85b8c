"""A copy of this checkout as a fresh clone of it would be: the files git tracks, plus new files not yet added.

Tests that build or install llmtap use it, so that what a developer's tools left in the tree (``node_modules/``
from ``npm install``, build output, caches) never reaches a wheel or hides a file that was never committed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    """Paths (relative to the root) of what a commit of this checkout would hold, ignored files left out."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return sorted(path for path in set(listed.split("\0")) if path and (ROOT / path).is_file())


def copy_checkout(destination: Path) -> Path:
    """Copy :func:`tracked_files` into ``destination``, which plays the fresh clone's root."""
    for path in tracked_files():
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target)
    return destination
