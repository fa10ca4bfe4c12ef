"""Shared test fixtures: flow projects written as real files under tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from grid_local.runtime.execution import Outcome
from grid_local.runtime.limits import Limits
from grid_local.runtime.memory import MemoryGrid
from grid_local.runtime.sources import PROJECT_FILE, DirectorySource
from tests.helpers import write_file

FIXTURES = Path(__file__).parent / "fixtures"


class FlowProject:
    """A project folder (with flowmetal.toml) and a MemoryGrid over it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / PROJECT_FILE).write_text('[project]\nname = "test"\n', encoding="utf-8")

    def write(self, path: str, source: str) -> Path:
        """Write a project file; ``source`` is dedented, so scripts can be indented in the test."""
        return write_file(self.root, path, source)

    def copy_fixture(self, name: str) -> None:
        """Copy ``tests/fixtures/flows/<name>`` (a file or a folder) into the project root."""
        source = FIXTURES / "flows" / name
        if source.is_dir():
            shutil.copytree(source, self.root, dirs_exist_ok=True)
        else:
            shutil.copy(source, self.root / source.name)

    def grid(self, **kwargs: Any) -> MemoryGrid:
        return MemoryGrid(DirectorySource(self.root), **kwargs)

    def run(
        self, module: str = "main.flow", function: str | None = None, args: dict[str, Any] | None = None,
        limits: Limits | None = None, **kwargs: Any,
    ) -> tuple[MemoryGrid, str, Outcome]:
        """Start and evaluate a flow (a root flow when ``function`` is None) on a fresh MemoryGrid."""
        grid = self.grid(limits=limits or Limits(), **kwargs)
        flow_id, outcome = grid.run({"module": module, "function": function}, args)
        return grid, flow_id, outcome


@pytest.fixture
def flow_project(tmp_path: Path) -> FlowProject:
    return FlowProject(tmp_path / "project")
