"""Dependencies point one way: tui -> flowmetal_cli -> grid_local. The headless core never imports the UI."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORE_MODULES = [
    "grid_local.runtime.execution",
    "grid_local.db.store",
    "grid_local.api.worker_api",
    "grid_local.api.client_api",
    "grid_local.worker.main",
    "grid_local.connectors.http",
    "grid_local.connectors.clock",
    "grid_local.connectors.inbox",
    "grid_local.supervisor",
]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_grid_local_never_imports_the_ui(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        # (rich is left out: httpx itself imports it for its own command line when it is installed)
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'textual', 'flowmetal_cli', 'tui'))\n"
        "print(','.join(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{module} pulls in {done.stdout.strip()}"


def test_cli_does_not_import_the_tui_until_asked() -> None:
    probe = "import sys, flowmetal_cli.main\nprint(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('tui', 'textual'))))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
