"""TUI test fixtures: an isolated home and config per test, and a real local grid that is always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tui_gridkit import LocalGrid, local_grid


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWMETAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWMETAL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.delenv("FLOWMETAL_CONTEXT", raising=False)
    return tmp_path / "home"


@pytest.fixture
def grid(home: Path) -> Iterator[LocalGrid]:
    with local_grid(home) as running:
        yield running
