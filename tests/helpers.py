"""Helpers shared by the test suites (fixtures stay in the conftest files)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_file(root: Path, path: str, source: str) -> Path:
    """Write ``root/path`` (folders made as needed); ``source`` is dedented, so tests can indent scripts."""
    full = root / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return full
