"""Invalidate jupyter-book's execution cache when the package changes: ``python -m rea.book.cache``.

``execute_notebooks: cache`` re-executes a chapter only when its code cells change, not when ``rea/`` does. This
script hashes every ``rea/**/*.py`` (plus ``pyproject.toml`` and ``requirements.lock``), compares the hash with the
one stored next to the cache (``_build/.rea-package.sha256``) and wipes ``_build/.jupyter_cache`` when they differ.
``make book`` runs it before ``jupyter-book build``.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from rea.book.chapters import ROOT

CACHE = ROOT / "_build" / ".jupyter_cache"
STAMP = ROOT / "_build" / ".rea-package.sha256"


def package_hash(root: Path = ROOT) -> str:
    """sha256 over the relative paths and contents of rea/**/*.py, pyproject.toml and requirements.lock."""
    h = hashlib.sha256()
    files = sorted((root / "rea").rglob("*.py")) + [root / "pyproject.toml", root / "requirements.lock"]
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def sync(root: Path = ROOT, cache: Path = CACHE, stamp: Path = STAMP) -> bool:
    """Wipe ``cache`` if the package hash differs from ``stamp``; record the new hash. True if wiped."""
    new = package_hash(root)
    old = stamp.read_text().strip() if stamp.exists() else None
    wiped = False
    if old != new:
        if cache.exists():
            shutil.rmtree(cache)
            wiped = True
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(new + "\n")
    return wiped


def main() -> int:
    wiped = sync()
    print(f"rea.book.cache: {'rea/ changed: execution cache wiped' if wiped else 'execution cache kept'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
